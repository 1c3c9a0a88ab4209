"""The paper-recipe harness: every shipped recipe under ``configs/papers/**`` trains 2 steps in its own process.

* :func:`discover` finds the recipes (every ``*.yaml`` under ``configs/papers`` whose path has no ``_`` part: the
  ``_base`` / ``_ch*`` files are bases), so a recipe added later is covered without touching the tests;
* :func:`plan` gives each one a job: the fixture tree of its dataset (:data:`_trees.TREES`; a dataset without one is
  an error naming the recipe), small-input overrides derived from the recipe itself (:func:`small_overrides`: crops
  of 32, frames resized by the same factor, at most 8 frames; one eval clip for all but one multi-clip recipe per
  dataset), the dataset's shared stage cache, and the order the stage reuse and the chapter-4 fine-tuning need
  (:data:`LEADERS`, :data:`AFTER`, :data:`INIT_FROM`);
* :func:`run_all` runs the jobs through one fork server: a helper process (not the test process) imports torch and
  mmh once and then forks one child per recipe (``mmh.cli.main(argv)``, its output in a log file, ``os._exit``), so
  each recipe still starts from a clean, freshly imported state; the helper never runs a torch op, so the children's
  OpenMP is safe. :data:`PARALLEL` children run at a time, one thread each. After each run the small records
  (``results.json``, ``dataset.json``, the stages' ``metrics.csv``) and the :data:`PROBES` tensors of its
  ``model.pt`` files are read back and the large files removed (a dataset's stage cache once its last job ended).

The runs pass ``train.checkpoint_every=-1``: the resume checkpoints (optimizer state included, about 1 GB for the
three R(2+1)D-18 of chapter 5) are not written; every stage's ``model.pt`` still is.
"""

from __future__ import annotations

import csv
import json
import math
import os
import select
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _p in (ROOT / "python", Path(__file__).resolve().parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import _trees  # noqa: E402

from mmh.config import config_dir, get_path, load_config, read_yaml  # noqa: E402

#: Children at a time (one thread each): the CI machine has 2 cores.
PARALLEL = max(1, int(os.environ.get("MMH_RECIPE_JOBS", min(2, os.cpu_count() or 1))))
#: Every recipe's 2-step settings (the recipe's own values otherwise).
COMMON = [
    "train.steps=2",
    "train.batch_size=2",
    "eval.batch_size=4",
    "train.progress=false",
    "train.checkpoint_every=-1",
    "threads=1",
    "device=cpu",
]
#: The input size the recipes are shrunk to: crops of CROP (I3D, ResNet-50 and R(2+1)D-18 all accept 32x32), clips
#: of at most FRAMES frames (I3D needs 8).
CROP, FRAMES = 32, 8
#: Per dataset, the recipe file names that run first, in this order of preference (one per model name): the other
#: recipes of the dataset with that model reuse its cached stages (the teacher, chapter 3's step 1, the streams).
LEADERS = ("teacher", "multistream", "admd")
#: Recipes that run after others of their dataset (file names), so they reuse those recipes' cached stages.
AFTER = {"rad_dad": ("rad", "dad")}
#: Chapter 4: the recipes of dataset D fine-tune from the streams of another dataset's recipe, D -> (that dataset,
#: its recipe file name, the stage folder whose model.pt is passed as ``stages.streams.init_from``).
INIT_FROM = {"nwucla": ("ntu60", "admd", "streams")}
#: Multi-clip evaluation (chapter 5's ten clips) is kept on one recipe per dataset, preferably this one.
FULL_CLIPS = "dmcl"
#: Tensors kept from every run's ``model.pt`` files (state-dict keys ending so), for the tests that compare a run's
#: weights with a planted file or another run's.
PROBES = ("Mixed_5c.b3b.conv3d.weight", "layer3.2.conv2.weight", "layer4.0.conv1.weight", "stem.conv1.weight")


@dataclass
class Recipe:
    name: str  # papers/<paper>/<dataset>/<file>
    paper: str
    dataset: str
    file: str
    cfg: dict[str, Any]

    @property
    def method(self) -> str:
        return self.cfg["method"]

    @property
    def model(self) -> str:
        return self.cfg["model"]["name"]


def discover() -> list[Recipe]:
    """Every shipped recipe: ``configs/papers/**/*.yaml`` without a ``_``-prefixed part, with its loaded config."""
    base = config_dir() / "papers"
    out = []
    for path in sorted(base.rglob("*.yaml")):
        rel = path.relative_to(base)
        if any(part.startswith("_") for part in rel.parts):
            continue
        cfg = load_config(path)
        name = "papers/" + rel.with_suffix("").as_posix()
        out.append(Recipe(name, rel.parts[0], cfg["dataset"]["name"], path.stem, cfg))
    return out


def is_chapter4(recipe: Recipe) -> bool:
    """Fine-tunes from another dataset's streams: an ``admd*`` method, or a recipe with ``stages.streams.init_from``."""
    return (
        recipe.method.startswith("admd")
        or get_path(recipe.cfg, "stages.streams.init_from", None) is not None
        or ("init_from" in (get_path(recipe.cfg, "stages.streams", None) or {}))
    )


def small_overrides(cfg: dict[str, Any]) -> list[str]:
    """Overrides that shrink the recipe's inputs and keep its transforms: each crop ``size`` becomes :data:`CROP`
    and ``dataset.kwargs.resolution`` (and a split's own ``resolution``) shrinks by the same factor (rounded up; a
    zooming rotation still leaves room for the crop), or becomes CROP without crops; ``num_frames`` at most
    :data:`FRAMES`. A recipe without ``dataset.kwargs.resolution`` keeps its size."""
    out = []
    kw = cfg["dataset"]["kwargs"]
    transforms = cfg["dataset"].get("transforms") or {}
    sizes = [t["size"] for specs in transforms.values() for t in specs or () if isinstance(t, dict) and "size" in t]
    biggest = max((max(s) if isinstance(s, list) else s for s in sizes), default=None)

    def small(res: Any) -> int:
        res = max(res) if isinstance(res, list) else res
        return CROP if biggest is None else max(CROP, math.ceil(res * CROP / biggest))

    if kw.get("resolution") is not None:
        out.append(f"dataset.kwargs.resolution={small(kw['resolution'])}")
        for split, skw in sorted((cfg["dataset"].get("split_kwargs") or {}).items()):
            if isinstance(skw, dict) and skw.get("resolution") is not None:  # a split's own size (larger, to crop)
                out.append(f"dataset.split_kwargs.{split}.resolution={small(skw['resolution'])}")
        if sizes:
            shrunk = {
                where: [{**t, "size": CROP} if isinstance(t, dict) and "size" in t else t for t in specs or ()]
                for where, specs in transforms.items()
            }
            out.append("dataset.transforms=" + json.dumps(shrunk))
    if int(kw.get("num_frames") or 0) > FRAMES:
        out.append(f"dataset.kwargs.num_frames={FRAMES}")
    return out


@dataclass
class Job:
    id: str  # the recipe's name, or name#variant
    recipe: Recipe
    data: Path
    cache: Path
    run_dir: Path
    overrides: list[str]
    after: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        argv = ["train", self.recipe.name, f"dataset.kwargs.root={self.data}", *COMMON]
        argv += [f"output.root={self.run_dir.parent}", f"output.cache={self.cache}", "--run-dir", str(self.run_dir)]
        return [*argv, *self.overrides, "--debug"]


@dataclass
class Run:
    """What a finished job left: exit code, log tail, the records and the probe tensors; timings (seconds since the
    batch started)."""

    job: Job
    rc: int
    log: str
    start: float
    end: float
    results: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    config: dict[str, Any] | None = None  # the run folder's config.yaml
    metrics: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ok(self) -> None:
        """AssertionError with the log tail unless the run exited 0 with a finished results.json."""
        assert self.rc == 0 and self.results is not None, f"{self.job.id}: exit {self.rc}\n{self.log}"
        assert self.results["status"] == "done", (self.job.id, self.results["status"])

    def last_row(self, stage: str) -> dict[str, str]:
        return self.metrics[stage][-1]


def plan(root: Path, recipes: list[Recipe] | None = None) -> list[Job]:
    """One job per recipe (plus the extra variants of :data:`VARIANTS`), in running order; KeyError naming the
    recipe when its dataset has no fixture tree."""
    recipes = discover() if recipes is None else recipes
    missing = [r.name for r in recipes if r.dataset not in _trees.TREES]
    if missing:
        raise KeyError(f"no fixture tree in tests/framework/_trees.py TREES for the recipes {missing}")
    by_dataset: dict[str, list[Recipe]] = {}
    for r in recipes:
        by_dataset.setdefault(r.dataset, []).append(r)
    # the datasets whose runs others fine-tune from come first
    order = sorted(by_dataset, key=lambda d: (d not in {src for src, _, _ in INIT_FROM.values()}, d))
    jobs: list[Job] = []
    for dataset in order:
        group = by_dataset[dataset]
        data, cache = root / "data" / dataset, root / "cache" / dataset
        ids = {r.file: r.name for r in group}
        leaders = {}
        for r in sorted(group, key=lambda r: LEADERS.index(r.file) if r.file in LEADERS else len(LEADERS)):
            if r.file in LEADERS:
                leaders.setdefault(r.model, r.name)
        multi = [r for r in group if int(r.cfg["eval"].get("clips") or 1) > 1]
        full = next((r.name for r in multi if r.file == FULL_CLIPS), multi[0].name if multi else None)
        for r in sorted(group, key=lambda r: (r.name != leaders.get(r.model), r.file in AFTER, r.name)):
            after = [leaders[r.model]] if leaders.get(r.model, r.name) != r.name else []
            after += [ids[f] for f in AFTER.get(r.file, ()) if f in ids]
            extra = small_overrides(r.cfg)
            if r in multi and r.name != full:
                extra.append("eval.clips=1")
            if dataset in INIT_FROM and is_chapter4(r):
                src_dataset, src_file, stage = INIT_FROM[dataset]
                src = [j for j in jobs if j.recipe.dataset == src_dataset and j.recipe.file == src_file]
                if not src:
                    raise KeyError(f"{r.name} fine-tunes from papers/*/{src_dataset}/{src_file}, which is not shipped")
                src = src[0]
                extra.append(f"stages.streams.init_from={src.run_dir / 'stages' / stage / 'model.pt'}")
                after.append(src.id)
            run_dir = root / "runs" / r.name.replace("/", "_")
            jobs.append(Job(r.name, r, data, cache, run_dir, extra, after))
        for variant in VARIANTS:
            job = variant(jobs, root)
            if job is not None and job.recipe.dataset == dataset:
                jobs.append(job)
    return jobs


def _surf_command(jobs: list[Job], root: Path) -> Job | None:
    """The issue's command on CASIA-SURF (``mmh train papers/mmh/casia_surf/rad dataset.kwargs.root=DIR``, only the
    length and batch shortened), with a stage cache of its own: both its stages train."""
    (job,) = [j for j in jobs if j.id == "papers/mmh/casia_surf/rad"] or [None]
    if job is None:
        return None
    return Job(
        job.id + "#command", job.recipe, job.data, root / "cache" / "surf_command", root / "runs" / "command", []
    )


#: Extra jobs: functions of (the jobs planned so far, the root) giving one more job or None.
VARIANTS: list[Callable[[list[Job], Path], Job | None]] = [_surf_command]


# ----------------------------------------------------------------------------------------------- the fork server
def _serve() -> None:
    """The helper process: import torch and mmh once, then fork one child per request line (JSON: id, argv, log)
    read from stdin, at once; write ``{"id", "rc"}`` to stdout as each child ends. Ends when stdin closes and the
    children have ended."""
    import torch  # noqa: F401  (the imports every child shares; no torch op runs here)
    import torchvision  # noqa: F401

    import mmh.cli
    import mmh.evaluation  # noqa: F401
    import mmh.methods  # noqa: F401
    import mmh.models  # noqa: F401
    import mmh.runner  # noqa: F401

    out = os.fdopen(os.dup(1), "w", buffering=1)
    children: dict[int, str] = {}
    buf, closed = b"", False
    while not closed or children:
        ready, _, _ = select.select([] if closed else [0], [], [], 0.05)
        if ready:
            chunk = os.read(0, 65536)
            closed = not chunk
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:  # the child: one recipe, then _exit (no atexit / finalizers of the helper)
                    rc = 99
                    try:
                        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                        os.dup2(fd, 1)
                        os.dup2(fd, 2)
                        os.close(fd)
                        rc = mmh.cli.main(req["argv"])
                    except BaseException:  # noqa: BLE001 - reported in the log, the exit code says it failed
                        traceback.print_exc()
                    finally:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(rc if isinstance(rc, int) else 98)
                children[pid] = req["id"]
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            out.write(json.dumps({"id": children.pop(pid), "rc": os.waitstatus_to_exitcode(status)}) + "\n")


def _read_back(run: Run) -> None:
    """The run's small records and probe tensors, then its large files removed."""
    from mmh.utils.safe_io import safe_load

    folder = run.job.run_dir
    if (folder / "results.json").is_file():
        run.results = json.loads((folder / "results.json").read_text())
    if (folder / "dataset.json").is_file():
        run.dataset = json.loads((folder / "dataset.json").read_text())
    if (folder / "config.yaml").is_file():
        run.config = read_yaml(folder / "config.yaml")
    for stage_dir in sorted((folder / "stages").glob("*")):
        if (stage_dir / "metrics.csv").is_file():
            with open(stage_dir / "metrics.csv", newline="") as f:
                run.metrics[stage_dir.name] = list(csv.DictReader(f))
        if (stage_dir / "model.pt").is_file():
            sd = safe_load(stage_dir / "model.pt", "model artifact").get("state_dict")  # (an ensemble has none)
            if isinstance(sd, dict):
                run.tensors[stage_dir.name] = {k: v.clone() for k, v in sd.items() if k.endswith(PROBES)}


def _shrink(folder: Path, keep: set[Path]) -> None:
    for path in folder.rglob("*.pt"):
        if path not in keep:
            path.unlink()


def run_all(root: Path, jobs: list[Job] | None = None, env: dict[str, str] | None = None) -> dict[str, Run]:
    """Build the trees, run the jobs (:func:`plan`'s by default) through the fork server, :data:`PARALLEL` at a
    time in dependency order, and return each job's :class:`Run`. A job whose dependency failed is not run (its
    Run says so, rc -1)."""
    jobs = plan(root) if jobs is None else jobs
    for data in sorted({j.data for j in jobs}):
        _trees.TREES[data.name](data)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "PYTHONPATH": f"{ROOT / 'python'}:{ROOT}"}
    env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("MMH_DEBUG", None)
    server = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
         "import _recipes; _recipes._serve()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1,
    )  # fmt: skip
    prefix = "stages.streams.init_from="  # the files later jobs fine-tune from stay until the end
    keep = {Path(a.removeprefix(prefix)) for j in jobs for a in j.overrides if a.startswith(prefix)}
    pending = {j.id: j for j in jobs}
    running: dict[str, float] = {}
    runs: dict[str, Run] = {}
    t0 = time.perf_counter()
    try:
        while pending or running:
            for job in list(pending.values()):
                failed = [a for a in job.after if a in runs and runs[a].rc != 0]
                if failed:
                    del pending[job.id]
                    runs[job.id] = Run(job, -1, f"not run: {failed} failed", 0.0, 0.0)
                elif len(running) < PARALLEL and all(a in runs for a in job.after):
                    del pending[job.id]
                    log = root / "logs" / (job.id.replace("/", "_").replace("#", "_") + ".log")
                    server.stdin.write(json.dumps({"id": job.id, "argv": job.argv(), "log": str(log)}) + "\n")
                    server.stdin.flush()
                    running[job.id] = time.perf_counter() - t0
            if not running:
                continue
            line = server.stdout.readline()
            if not line:
                raise RuntimeError(f"the recipe fork server died (exit {server.wait()})")
            msg = json.loads(line)
            job = next(j for j in jobs if j.id == msg["id"])
            log = (root / "logs" / (job.id.replace("/", "_").replace("#", "_") + ".log")).read_text()
            run = Run(job, msg["rc"], log[-4000:], running.pop(job.id), time.perf_counter() - t0)
            _read_back(run)
            runs[job.id] = run
            _shrink(job.run_dir, keep)
            if not any(j.cache == job.cache for j in [*pending.values(), *(jobs_by(jobs, running))]):
                shutil.rmtree(job.cache, ignore_errors=True)
    finally:
        server.stdin.close()
        server.wait(timeout=600)
    return runs


def jobs_by(jobs: list[Job], ids: Any) -> list[Job]:
    return [j for j in jobs if j.id in ids]


# ----------------------------------------------------------------------------------------- planted weight files
def plant_kinetics_i3d(torch_home: Path) -> dict[str, Any]:
    """The Kinetics-400 I3D file of the PyTorch port, built from a fresh ``i3d`` stream (its state dict plus the
    port's 400-class ``logits``), under the file name :mod:`mmh.models.pretrained` reads from the hub cache; its
    state dict. Nothing is there before (FileNotFoundError checked)."""
    import torch

    from mmh.models import build_model
    from mmh.models.pretrained import cached_weights, published_weights

    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(torch_home)
    try:
        try:
            cached_weights("kinetics400", "i3d", "rgb")
        except FileNotFoundError:
            pass
        else:
            raise AssertionError(f"a Kinetics-400 I3D file is already in {torch_home}")
        torch.manual_seed(7)
        stream = build_model("i3d", modalities=["rgb"], num_classes=2).streams["rgb"]
        sd = {k: v.clone() for k, v in stream.state_dict().items()}
        sd["logits.conv3d.weight"] = torch.randn(400, 1024, 1, 1, 1) * 0.01
        sd["logits.conv3d.bias"] = torch.zeros(400)
        folder = torch_home / "hub" / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        (name,) = [w.file for w in published_weights() if (w.name, w.arch, w.variant) == ("kinetics400", "i3d", "rgb")]
        torch.save(sd, folder / name)
        assert cached_weights("kinetics400", "i3d", "rgb") == folder / name
        return torch.load(folder / name, weights_only=True)
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old


def plant_imagenet_resnet50(torch_home: Path) -> dict[str, Any]:
    """A torchvision-format ResNet-50 file (torchvision's constructor, random values) under torchvision's
    IMAGENET1K_V1 file name in the hub cache; its state dict."""
    import torch
    import torchvision

    from mmh.models.pretrained import published_weights

    torch.manual_seed(11)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    sd = {k: (torch.randn_like(v) * 0.05 if v.is_floating_point() else v) for k, v in sd.items()}
    sd = {k: (v.abs() + 0.5 if "running_var" in k else v) for k, v in sd.items()}
    (name,) = [w.file for w in published_weights() if (w.name, w.arch) == ("imagenet", "resnet50")]
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(sd, folder / name)
    return sd


@dataclass
class Session:
    runs: dict[str, Run]
    i3d: dict[str, Any]  # the planted Kinetics-400 I3D file's state dict
    resnet50: dict[str, Any]  # the planted ImageNet ResNet-50 file's state dict
    wall_s: float


_SESSION: Session | None = None


def session(tmp_path_factory: Any) -> Session:
    """All recipes' runs, once per test session (both recipe test files read the same runs), with both published
    weight files planted in one temporary torch hub cache (nothing is downloaded)."""
    global _SESSION
    if _SESSION is None:
        root = tmp_path_factory.mktemp("recipes")
        home = root / "torch_home"
        i3d, resnet50 = plant_kinetics_i3d(home), plant_imagenet_resnet50(home)
        t0 = time.perf_counter()
        runs = run_all(root, env={"TORCH_HOME": str(home)})
        _SESSION = Session(runs, i3d, resnet50, time.perf_counter() - t0)
    return _SESSION
