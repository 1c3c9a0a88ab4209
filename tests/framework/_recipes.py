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
  ``model.pt`` files are read back and the large files removed (a dataset's stage cache once its last job ended, a
  ``model.pt`` other jobs fine-tune from once the last of them ended).

Process handling: a child that runs longer than :func:`job_timeout` (``MMH_RECIPE_TIMEOUT``, 600 s) is killed and its
run fails with a message naming it; a child holds no pipe end of the harness (fd 0 on ``/dev/null``, the result pipe
closed), so the test process sees at once when the server dies; the server and its children form their own session,
killed as a whole when anything goes wrong (the original error is raised); jobs whose ``after`` can never finish
(an unknown id, a cycle) are refused before anything runs.

The runs pass ``train.checkpoint_every=-1``: the resume checkpoints (optimizer state included, about 1 GB for the
three R(2+1)D-18 of chapter 5) are not written; every stage's ``model.pt`` still is.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
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
#: What the fork server imports before its first fork: what every child shares (no torch op runs in the server).
SERVER_IMPORTS = ("torch", "torchvision", "mmh.cli", "mmh.evaluation", "mmh.methods", "mmh.models", "mmh.runner")
#: Tensors kept from every run's ``model.pt`` files (state-dict keys ending so), for the tests that compare a run's
#: weights with a planted file or another run's.
PROBES = (
    "Mixed_5c.b3b.conv3d.weight",
    "layer3.2.conv2.weight",
    "layer4.0.conv1.weight",
    "stem.conv1.weight",
    "bottleneck.conv.weight",
)


def job_timeout() -> float:
    """Seconds one job may run before its child is killed: ``MMH_RECIPE_TIMEOUT`` (default 600, generous: many times
    the slowest recipe's 2 steps on 2 cores); ValueError naming the variable when it is not a positive number."""
    raw = os.environ.get("MMH_RECIPE_TIMEOUT", "600")
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ValueError(f"MMH_RECIPE_TIMEOUT must be a positive number of seconds, got {raw!r}")
    return value


def child_env(**extra: str) -> dict[str, str]:
    """The environment of an ``mmh`` process the tests start: this checkout's ``python/`` first, one OpenMP thread,
    no ``MMH_DEBUG`` (which changes what a run writes); ``extra`` on top."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'python'}:{ROOT}", "OMP_NUM_THREADS": "1", **extra}
    env.pop("MMH_DEBUG", None)
    return env


_LISTED: list[str] = []


def listed_configs() -> list[str]:
    """What ``mmh list configs`` prints, one name per entry (run once per test session, in a fresh process)."""
    if not _LISTED:
        cmd = [sys.executable, "-m", "mmh.cli", "list", "configs"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=120)
        assert out.returncode == 0, out.stderr
        _LISTED.extend(out.stdout.split())
    return list(_LISTED)


def transform_names(specs: list[Any]) -> list[str]:
    """The names of a config's transform list (an entry is a name or a dict with ``name``)."""
    return [t["name"] if isinstance(t, dict) else t for t in specs]


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
    return recipe.method.startswith("admd") or get_path(recipe.cfg, "stages.streams.init_from", None) is not None


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
    #: For the harness's own tests only: ``"module:function"`` the child calls with the overrides as its argv
    #: (exit code its return value) instead of ``mmh train``; no fixture tree is built for such a job.
    call: str | None = None

    def argv(self) -> list[str]:
        if self.call is not None:
            return list(self.overrides)
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
    #: The sha256 of each ``stages.streams.init_from`` file (by the path the override gives) as the job started: the
    #: file itself is deleted once the last job fine-tuning from it ended.
    init_sha256: dict[str, str] = field(default_factory=dict)

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
                # another seed than the source run's: a tensor the copy did not bring would differ from the source's
                extra.append(f"seed={int(src.recipe.cfg['seed']) + 1}")
                after.append(src.id)
            run_dir = root / "runs" / r.name.replace("/", "_")
            jobs.append(Job(r.name, r, data, cache, run_dir, extra, after))
        for variant in VARIANTS:
            job = variant(jobs, root)
            if job is not None and job.recipe.dataset == dataset:
                jobs.append(job)
    return jobs


def _surf_docs_command(jobs: list[Job], root: Path) -> Job | None:
    """The full-size CASIA-SURF command of the docs (``mmh train papers/mmh/casia_surf/rad dataset.kwargs.root=DIR``,
    only the length and batch shortened: no small-input overrides), with a stage cache of its own: both its stages
    train."""
    (job,) = [j for j in jobs if j.id == "papers/mmh/casia_surf/rad"] or [None]
    if job is None:
        return None
    return Job(
        job.id + "#command", job.recipe, job.data, root / "cache" / "surf_command", root / "runs" / "command", []
    )


#: Extra jobs: functions of (the jobs planned so far, the root) giving one more job or None.
VARIANTS: list[Callable[[list[Job], Path], Job | None]] = [_surf_docs_command]


# ----------------------------------------------------------------------------------------------- the fork server
def _serve(imports: Sequence[str] = SERVER_IMPORTS) -> None:
    """The helper process: import ``imports`` once, then fork one child per request line (JSON: id, argv, log and,
    for the harness's own tests, call) read from stdin, at once; write ``{"id", "pid"}`` to stdout as it forks a
    child and ``{"id", "rc"}`` as each child ends. Ends when stdin closes and the children have ended.

    The result pipe is only written through ``out`` (fd 1 itself goes to stderr, so a stray print cannot break the
    protocol), and a child keeps no pipe end of the harness: it closes ``out`` and reopens fd 0 on ``/dev/null``, so
    the test process sees end-of-file as soon as the server is gone, whatever its children still do."""
    import importlib

    for name in imports:  # the imports every child shares; no torch op runs here
        importlib.import_module(name)

    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
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
                        out.close()  # the result pipe (empty buffer: every message is a whole line)
                        null = os.open(os.devnull, os.O_RDONLY)
                        os.dup2(null, 0)
                        os.close(null)
                        fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                        os.dup2(fd, 1)
                        os.dup2(fd, 2)
                        os.close(fd)
                        if req.get("call"):
                            module, _, function = req["call"].partition(":")
                            main = getattr(importlib.import_module(module), function)
                        else:
                            from mmh.cli import main
                        rc = main(req["argv"])
                    except BaseException:  # noqa: BLE001 - reported in the log, the exit code says it failed
                        traceback.print_exc()
                    finally:
                        sys.stdout.flush()
                        sys.stderr.flush()
                        os._exit(rc if isinstance(rc, int) else 98)
                children[pid] = req["id"]
                out.write(json.dumps({"id": req["id"], "pid": pid}) + "\n")
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


def check_order(jobs: list[Job]) -> None:
    """ValueError unless every job can start: ids unique, and every ``after`` id a job that itself can start (not
    an unknown id, no cycle). The error names each stuck job and the dependencies it would wait for forever."""
    ids = [j.id for j in jobs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"jobs: duplicate job ids {duplicates}")
    done: set[str] = set()
    left = list(jobs)
    while ready := [j for j in left if set(j.after) <= done]:
        done |= {j.id for j in ready}
        left = [j for j in left if j.id not in done]
    if left:
        unknown = sorted({a for j in left for a in j.after} - set(ids))
        waits = "; ".join(f"{j.id} waits for {[a for a in j.after if a not in done]}" for j in left)
        raise ValueError(
            f"jobs: {len(left)} job(s) would never start, their `after` jobs never finish "
            f"(unknown job ids {unknown}, or a cycle): {waits}"
        )


def _log_path(root: Path, job: Job) -> Path:
    return root / "logs" / (job.id.replace("/", "_").replace("#", "_") + ".log")


def _stop(server: subprocess.Popen) -> None:
    """Kill the fork server and everything it started (its own session: the children and theirs), then reap it."""
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pipe in (server.stdin, server.stdout):
        try:
            pipe.close()
        except OSError:
            pass
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _exit_code(server: subprocess.Popen) -> int | None:
    try:
        return server.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def run_all(
    root: Path,
    jobs: list[Job] | None = None,
    env: dict[str, str] | None = None,
    *,
    timeout: float | None = None,
    imports: Sequence[str] = SERVER_IMPORTS,
) -> dict[str, Run]:
    """Build the trees, run the jobs (:func:`plan`'s by default) through the fork server, :data:`PARALLEL` at a
    time in dependency order, and return each job's :class:`Run`. A job whose dependency failed is not run (its
    Run says so, rc -1); a job still running ``timeout`` seconds (:func:`job_timeout` by default) after it started
    is killed (rc -9, its log tail after a line naming it). Jobs that could never start are refused first
    (:func:`check_order`). On any error (the server dying included) the server's whole session is killed and the
    error raised. ``imports``: what the server imports before forking (the harness's own tests pass none)."""
    jobs = plan(root) if jobs is None else jobs
    timeout = job_timeout() if timeout is None else float(timeout)
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    check_order(jobs)
    for data in sorted({j.data for j in jobs if j.call is None}):
        _trees.TREES[data.name](data)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    env = child_env(**(env or {})) | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
         f"import _recipes; _recipes._serve({list(imports)!r})"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True,
    )  # fmt: skip
    prefix = "stages.streams.init_from="  # the files later jobs fine-tune from stay until the last of them ended
    users: dict[Path, set[str]] = {}
    for j in jobs:
        for a in j.overrides:
            if a.startswith(prefix):
                users.setdefault(Path(a.removeprefix(prefix)), set()).add(j.id)
    by_id = {j.id: j for j in jobs}
    pending = dict(by_id)
    running: dict[str, float] = {}  # id -> start (seconds since t0)
    pids: dict[str, int] = {}
    sums: dict[str, dict[str, str]] = {}  # id -> the sha256 of its init_from files as it started
    runs: dict[str, Run] = {}
    t0 = time.perf_counter()

    def release() -> None:  # the files jobs fine-tune from, once all those jobs ended (before later jobs start)
        for path, ids in list(users.items()):
            if ids <= runs.keys():
                path.unlink(missing_ok=True)
                del users[path]

    def finish(job_id: str, rc: int, note: str = "") -> None:
        job = by_id[job_id]
        log = _log_path(root, job)
        tail = log.read_text(errors="replace")[-4000:] if log.is_file() else "(no log written)"
        run = Run(job, rc, note + tail, running.pop(job_id), time.perf_counter() - t0)
        run.init_sha256 = sums.pop(job_id, {})
        if not note:  # a killed child may have left a half-written file
            _read_back(run)
        runs[job_id] = run
        _shrink(job.run_dir, set(users))
        if not any(j.cache == job.cache for j in [*pending.values(), *jobs_by(jobs, running)]):
            shutil.rmtree(job.cache, ignore_errors=True)
        release()

    def send(job: Job) -> None:
        files = [a.removeprefix(prefix) for a in job.overrides if a.startswith(prefix)]
        sums[job.id] = {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files if Path(f).is_file()}
        log = _log_path(root, job)
        req = {"id": job.id, "argv": job.argv(), "log": str(log)} | ({"call": job.call} if job.call else {})
        try:
            server.stdin.write((json.dumps(req) + "\n").encode())
            server.stdin.flush()
        except BrokenPipeError as err:
            raise RuntimeError(f"the recipe fork server died (exit {_exit_code(server)})") from err
        running[job.id] = time.perf_counter() - t0

    out, buf = server.stdout.fileno(), b""
    try:
        while pending or running:
            for job in list(pending.values()):
                failed = [a for a in job.after if a in runs and runs[a].rc != 0]
                if failed:
                    del pending[job.id]
                    runs[job.id] = Run(job, -1, f"not run: {failed} failed", 0.0, 0.0)
                    release()
                elif len(running) < PARALLEL and all(a in runs for a in job.after):
                    del pending[job.id]
                    send(job)
            if not running:
                if pending:  # check_order rules this out; never spin on jobs that cannot start
                    stuck = {i: [a for a in j.after if a not in runs] for i, j in pending.items()}
                    raise RuntimeError(f"jobs that can never start (waiting for): {stuck}")
                break
            wait = max(0.0, min(running.values()) + timeout - (time.perf_counter() - t0))
            ready, _, _ = select.select([out], [], [], wait)
            if ready:
                chunk = os.read(out, 65536)
                if not chunk:
                    raise RuntimeError(
                        f"the recipe fork server died (exit {_exit_code(server)}) while running {sorted(running)}"
                    )
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg["id"] not in running:  # the end of a child killed on its timeout
                        continue
                    if "pid" in msg:
                        pids[msg["id"]] = msg["pid"]
                    else:
                        finish(msg["id"], msg["rc"])
            now = time.perf_counter() - t0
            for job_id in [i for i, start in running.items() if now - start >= timeout]:
                if job_id not in pids:
                    raise RuntimeError(f"the recipe fork server did not start {job_id} within {timeout:g} s")
                try:
                    os.kill(pids[job_id], signal.SIGKILL)
                except ProcessLookupError:
                    pass
                note = f"{job_id}: timed out after {timeout:g} s (MMH_RECIPE_TIMEOUT), killed; its log's tail:\n"
                finish(job_id, -signal.SIGKILL, note)
        server.stdin.close()
        if _exit_code(server) is None:
            raise RuntimeError("the recipe fork server did not end after its last job")
    except BaseException:
        _stop(server)
        raise
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
