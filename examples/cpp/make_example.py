"""The ctest fixture of the C++ example: a tiny paired folder, a student trained on it (mmh train, the
``configs/templates/paired_folder/baseline.yaml`` template, a few steps), exported to TorchScript (mmh export), one
test image prepared for ``mmh_classify`` (prepare.py), and the run's own logits for it (``expected.raw``).

    python examples/cpp/make_example.py OUT_DIR

Exit status 0 when everything was written; an error names what failed (e.g. mmh not importable).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def write_tree(root: Path, size: int = 16) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 3)):
        for label, cls in enumerate(("far", "near")):
            for i in range(n):
                d = root / split / cls / f"s{i:02d}"
                d.mkdir(parents=True, exist_ok=True)
                rgb = rng.integers(0, 160, (size, size, 3)).astype(np.uint8)
                rgb[..., 0] += np.uint8(90 * label)
                depth = (rng.integers(0, 3000, (size, size)) + 9000 * label + 2000).astype(np.uint16)
                Image.fromarray(rgb).save(d / "rgb.png")
                Image.fromarray(depth).save(d / "depth.png")


def main(out: Path) -> int:
    try:
        import torch

        from mmh.cli import main as mmh
        from mmh.data import build_dataset
        from mmh.train.checkpoint import load_model
    except ImportError as exc:
        print(f"make_example.py: cannot import mmh/torch with {sys.executable}: {exc}", file=sys.stderr)
        return 1
    sys.path.insert(0, str(HERE))
    import prepare

    shutil.rmtree(out, ignore_errors=True)
    data, run = out / "data", out / "run"
    write_tree(data)
    rc = mmh(
        [
            "train",
            str(REPO / "configs/templates/paired_folder/baseline.yaml"),
            f"dataset.kwargs.root={data}",
            "dataset.kwargs.resolution=16",
            "train.epochs=null",
            "train.steps=20",
            "train.batch_size=8",
            "train.progress=false",
            "threads=1",
            "model.kwargs={width: 8, shared_width: 16}",
            "output.cache=''",
            "--run-dir",
            str(run),
        ]
    )
    if rc != 0:
        return rc
    model_file = out / "student.pt"
    rc = mmh(["export", str(run), "--format", "torchscript", "--out", str(model_file)])
    if rc != 0:
        return rc
    image = data / "test" / "near" / "s01" / "rgb.png"
    rc = prepare.main([f"{model_file}.json", str(image), "--out", str(out)])
    if rc != 0:
        return rc
    # the run's network on the same sample, as the dataset reads and normalises it
    ds = build_dataset("paired_folder", split="test", root=str(data), resolution=16, stats=str(run / "dataset.json"))
    item = ds[[s.name for s in ds.samples].index("test/near/s01")]
    with torch.no_grad():
        logits = load_model(run / "stages" / "student" / "model.pt").eval()({"rgb": item["rgb"][None]})[0]
    logits.numpy().astype(np.float32).tofile(out / "expected.raw")
    print(json.dumps({"model": str(model_file), "expected": logits.tolist()}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python examples/cpp/make_example.py OUT_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
