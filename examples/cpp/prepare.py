"""Turn image files into the inputs of ``mmh_classify`` (the C++ example), from the sidecar of ``mmh export``.

    python examples/cpp/prepare.py student.pt.json IMAGE [IMAGE ...] --out DIR

writes ``DIR/spec.txt`` (input names and shapes, normalisation, class names) and ``DIR/<input name>.raw`` (float32,
C-order) for each image, given in the order of the sidecar's inputs. Images are read as mmh reads them: 8-bit
colour -> 3 channels / 255, 8-bit grey -> 1 channel / 255, 16-bit -> 1 channel / ``--depth-scale`` (65535, as
``paired_folder``); ``.npy`` arrays as they are. Only numpy and Pillow are needed (no torch, no mmh). Images of
another size than the network's are resized as the dataset's ``resolution=`` resizes them (after reading, in float):
bilinear with antialiasing (Pillow's float resize, which torch's ``antialias=True`` matches), nearest for an input
named ``depth`` (torch's ``nearest`` index rule), ``flow`` values scaled as displacements. Normalisation is left to
the C++ program.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def resize(a: np.ndarray, hw: tuple[int, int], name: str) -> np.ndarray:
    """``(C, H, W)`` float32 -> ``(C, h, w)`` as ``mmh.data.transforms.PairedResize`` does."""
    h, w = hw
    if a.shape[1:] == (h, w):
        return a
    H, W = a.shape[1:]
    if name == "depth":  # torch's "nearest": source index floor(dst * in / out)
        rows = np.minimum((np.arange(h) * (H / h)).astype(np.int64), H - 1)
        cols = np.minimum((np.arange(w) * (W / w)).astype(np.int64), W - 1)
        return np.ascontiguousarray(a[:, rows][:, :, cols])
    from PIL import Image

    out = np.stack(
        [
            np.asarray(Image.fromarray(c, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)
            for c in a.astype(np.float32)
        ]
    )
    if name == "flow" and out.shape[0] == 2:  # displacements in pixels: scaled with the image
        out[0] *= w / W
        out[1] *= h / H
    return out


def read_image(path: Path, channels: int, hw: tuple[int, int], depth_scale: float, name: str = "") -> np.ndarray:
    """One file as the dataset reads it (before normalisation), resized to ``hw`` as ``resolution=`` does."""
    if not path.is_file():
        raise SystemExit(f"prepare.py: no such file: {path}")
    if path.suffix.lower() == ".npy":
        a = np.load(path, allow_pickle=False).astype(np.float32)
        a = a[None] if a.ndim == 2 else a
    else:
        from PIL import Image

        try:
            img = Image.open(path)
            img.load()
        except OSError as exc:
            raise SystemExit(f"prepare.py: unreadable image file {path}: {exc}") from exc
        if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            a = np.asarray(img).astype(np.float64) / depth_scale
        elif img.mode == "F":
            a = np.asarray(img, dtype=np.float64)
        elif channels == 1:  # 8-bit: grey or colour, whichever the network takes (the dataset keeps the file's)
            a = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
        else:
            a = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
        a = (a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)).astype(np.float32)
    if a.ndim != 3 or a.shape[0] != channels:
        raise SystemExit(
            f"prepare.py: {path} has {a.shape[0] if a.ndim == 3 else a.shape} channels, the network wants {channels}"
        )
    return np.ascontiguousarray(resize(a, hw, name), dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sidecar", type=Path, help="the .json written next to the exported model")
    p.add_argument("images", nargs="+", type=Path, help="one file per input, in the sidecar's input order")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--depth-scale", type=float, default=65535.0)
    ns = p.parse_args(argv)
    side = json.loads(ns.sidecar.read_text())
    inputs = side["inputs"]
    if len(ns.images) != len(inputs):
        names = ", ".join(i["name"] for i in inputs)
        raise SystemExit(f"prepare.py: the network takes {len(inputs)} inputs ({names}), got {len(ns.images)} files")
    ns.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for spec, image in zip(inputs, ns.images):
        shape = [int(d) for d in spec["shape"][1:]]
        if len(shape) != 3:
            raise SystemExit(
                f"prepare.py: input {spec['name']!r} is not an image (shape {shape}); write its .raw yourself"
            )
        a = read_image(image, shape[0], (shape[1], shape[2]), ns.depth_scale, spec["name"])
        a.tofile(ns.out / f"{spec['name']}.raw")
        lines.append(f"input {spec['name']} " + " ".join(map(str, shape)))
        norm = spec.get("normalization")
        if norm:
            lines.append("mean " + " ".join(repr(float(v)) for v in norm["mean"]))
            lines.append("std " + " ".join(repr(float(v)) for v in norm["std"]))
    classes = side.get("class_names") or []
    if classes:
        lines.append("classes " + " ".join(c.replace(" ", "_") for c in classes))
    (ns.out / "spec.txt").write_text("\n".join(lines) + "\n")
    print(f"wrote {ns.out / 'spec.txt'} and " + ", ".join(f"{i['name']}.raw" for i in inputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
