"""What each section of the GPU check runs: the command lines (the same as the bash script's before this package),
their environment and working folder, and the checks between them. A section body gets a :class:`Shell` (the real
one runs commands under the section's time limit, a test's records them) and the :class:`Context` of the check.

Sections: ``build`` (mmh_ext for this GPU's architecture), ``tests`` (tests/ops/test_cuda.py, a skip counts as a
failure on a GPU), ``memcheck`` and ``racecheck`` (compute-sanitizer on scripts/gpu_ops_smoke.py), ``train`` (the main
job --quick and one thesis stage with AMP) and ``bench`` (benchmarks/bench_ops.py).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Protocol

#: (name, what) in report order; the names are the keys of :data:`benchmarks.gpu_check.budget.SPECS`.
SECTIONS = [
    ("build", "build mmh_ext (this GPU's architecture only)"),
    ("tests", "tests/ops/test_cuda.py"),
    ("memcheck", "compute-sanitizer memcheck on scripts/gpu_ops_smoke.py"),
    ("racecheck", "compute-sanitizer racecheck on scripts/gpu_ops_smoke.py"),
    ("train", "training smoke test with AMP: main job --quick + thesis/multistream"),
    ("bench", "benchmarks/bench_ops.py"),
]

ARCH_SNIPPET = 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))'
KERNELS_SNIPPET = """import sys, mmh_ext
info = mmh_ext.BUILD_INFO
ok = info.get("cuda_kernels") == "1" and info.get("cuda_archs") == sys.argv[1]
print("CUDA kernels for", info.get("cuda_archs"), "(wanted", sys.argv[1] + "):", "yes" if ok else "NO")
sys.exit(0 if ok else 1)"""


@dataclass
class Context:
    """What every section knows of the check: the interpreter with torch, the checkout, the output folder, the
    device (``cuda``, or ``cpu`` with GPU_CHECK_ALLOW_NO_CUDA), the cores, the CUDA toolkit and compute-sanitizer
    found (empty: none) and the environment the sections start from."""

    py: str
    root: str
    out: str
    device: str
    cores: int
    cuda_home: str = ""
    sanitizer: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def checkout_path(self) -> str:
        """PYTHONPATH entries that import mmh and mmh_ext from the checkout (an in-place build)."""
        return f"{self.root}/python:{self.root}"


class Shell(Protocol):
    """How a section body runs things. ``env`` maps a variable to its value for this command only (None: unset);
    ``setenv`` changes it for the rest of the section. Commands run in the checkout unless ``cwd`` says otherwise.
    ``tee``: a file that also gets the command's output."""

    def run(
        self, argv: list[str], env: dict[str, str | None] | None = None, cwd: str | None = None, tee: str | None = None
    ) -> int: ...

    def capture(self, argv: list[str]) -> tuple[int, str]: ...

    def echo(self, text: str) -> None: ...

    def note(self, text: str) -> None: ...

    def setenv(self, **changes: str | None) -> None: ...

    def getenv(self, name: str) -> str | None: ...


def build(sh: Shell, c: Context) -> int:
    """pip install -e . against this torch (no build isolation, no network) for this GPU's architecture only, with
    MAX_JOBS = the cores; where the environment is read-only, build in place instead (noted, so that the later
    sections import from the checkout). Then ``python -m mmh_ext.info`` and, on CUDA, a check that the build holds
    this architecture's kernels."""
    arch = ""
    if c.device == "cuda":
        rc, arch = sh.capture([c.py, "-c", ARCH_SNIPPET])
        if rc != 0:
            return 1
        arch = arch.strip()
        sh.setenv(TORCH_CUDA_ARCH_LIST=arch, MMH_EXT_FORCE_CUDA="1", MMH_EXT_NO_CUDA=None)
        if c.cuda_home:
            sh.setenv(CUDA_HOME=c.cuda_home)
    else:
        sh.setenv(MMH_EXT_NO_CUDA="1", MMH_EXT_FORCE_CUDA=None, TORCH_CUDA_ARCH_LIST=None)
    sh.setenv(MAX_JOBS=str(c.cores))
    sh.echo(
        f"building mmh_ext: TORCH_CUDA_ARCH_LIST={sh.getenv('TORCH_CUDA_ARCH_LIST') or ''} MAX_JOBS={c.cores} "
        f"CUDA_HOME={sh.getenv('CUDA_HOME') or ''} python={c.py}"
    )
    pip_log = os.path.join(c.out, "logs", "pip.log")
    if (
        sh.run(
            [c.py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-e", "."], tee=pip_log
        )
        != 0
    ):
        text = open(pip_log, errors="replace").read() if os.path.isfile(pip_log) else ""
        if not re.search(r"read-only file system|permission denied", text, re.IGNORECASE):
            return 1
        # the environment is not writable: build in place and import from the checkout instead
        sh.echo("pip cannot write to this environment: building in place (python setup.py build_ext --inplace)")
        sh.note(f"built in place (environment not writable): PYTHONPATH={c.checkout_path}")
        if sh.run([c.py, "setup.py", "build_ext", "--inplace", "-j", str(c.cores)]) != 0:
            return 1
    old = sh.getenv("PYTHONPATH")
    from_checkout = {"PYTHONPATH": c.checkout_path + (f":{old}" if old else "")}
    sh.echo("--- python -m mmh_ext.info")
    if sh.run([c.py, "-m", "mmh_ext.info"], env=from_checkout, cwd=c.out) != 0:
        return 1
    if c.device == "cuda":  # the build must hold the CUDA kernels for this GPU
        if sh.run([c.py, "-c", KERNELS_SNIPPET, arch], env=from_checkout, cwd=c.out) != 0:
            return 1
    return 0


def junit_summary(xml: str, device: str) -> tuple[str, bool]:
    """(the tests' one-line count, whether that counts as a failure: no test ran, no report, or a skip on CUDA)."""
    try:
        root = ET.parse(xml).getroot()
    except Exception as exc:  # noqa: BLE001
        return f"no junit report ({type(exc).__name__})", True
    suites = [root] if root.tag == "testsuite" else list(root)
    n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    line = (
        f"{n['tests']} tests: {n['tests'] - n['failures'] - n['errors'] - n['skipped']} passed, "
        f"{n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"
    )
    return line, bool(n["skipped"] and device == "cuda") or n["tests"] == 0


def tests(sh: Shell, c: Context) -> int:
    """tests/ops/test_cuda.py with a junit report (on the CPU: in MMH_CUDA_TESTS_ON_CPU mode); its counts become the
    section's note, and a skipped test on a GPU machine (or none run) is a failure."""
    xml = os.path.join(c.out, "test_cuda.xml")
    env = {"MMH_CUDA_TESTS_ON_CPU": "1"} if c.device == "cpu" else None
    rc = sh.run(
        [c.py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/ops/test_cuda.py", f"--junitxml={xml}"],
        env=env,
    )
    line, bad = junit_summary(xml, c.device)
    sh.note(line)
    if bad and rc == 0:
        sh.echo("tests were skipped on a GPU machine (or none ran): counted as a failure")
        rc = 1
    return rc


def sanitizer_argv(c: Context, tool: str) -> list[str]:
    """compute-sanitizer ``tool`` on scripts/gpu_ops_smoke.py: only mmh_ext's kernels are instrumented (torch's and
    cuBLAS's are not ours); failing CUDA API calls that torch makes on purpose (probing) are not reported."""
    extra = ["--padding", "256", "--leak-check", "no"] if tool == "memcheck" else []
    return [
        c.sanitizer,
        "--tool",
        tool,
        *extra,
        "--kernel-name",
        "kns=mmh_ext",
        "--report-api-errors",
        "no",
        "--target-processes",
        "application-only",
        "--error-exitcode",
        "97",
        "--print-limit",
        "50",
        c.py,
        "scripts/gpu_ops_smoke.py",
        "--device",
        "cuda",
    ]


def sanitize(sh: Shell, c: Context, tool: str) -> int:
    # without the caching allocator every tensor is its own allocation (out-of-bounds accesses are caught)
    return sh.run(sanitizer_argv(c, tool), env={"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"})


def _has_results(path: str) -> bool:
    return os.path.isfile(path) and os.path.getsize(path) > 0


def train(sh: Shell, c: Context) -> int:
    """``mmh benchmark mmh --quick`` (train.amp auto: fp16 + GradScaler on CUDA), then one thesis stage with the
    cross-stream injection (train.amp=bf16, 40 steps), then ``mmh benchmark speed`` (the paper-size step rates with
    AMP, no compile variant); each must leave its results.json / speed.json. On the CPU: fewer steps."""
    dev, workers = c.device, 6 if c.cores >= 12 else 2
    quick_steps = ["--steps", "10", "--no-antispoof"] if c.device == "cpu" else []
    main_out = os.path.join(c.out, "train", "main_quick")
    sh.echo(f"--- mmh benchmark mmh --quick on {dev} (train.amp=auto)")
    if (
        sh.run(
            [
                c.py,
                "-m",
                "mmh.cli",
                "benchmark",
                "mmh",
                "--quick",
                "--workers",
                str(workers),
                "--out",
                main_out,
                *quick_steps,
                f"device={dev}",
                "train.amp=auto",
            ]
        )
        != 0
    ):
        return 1
    if not _has_results(os.path.join(main_out, "results.json")):
        sh.echo("no results.json from the main job")
        return 1
    amp, steps = ("auto", 3) if c.device == "cpu" else ("bf16", 40)
    thesis = os.path.join(c.out, "train", "thesis")
    sh.echo(f"--- mmh train thesis/multistream (cross-stream injection) on {dev}, train.amp={amp}, train.steps={steps}")
    if (
        sh.run(
            [
                c.py,
                "-m",
                "mmh.cli",
                "train",
                "thesis/multistream",
                f"device={dev}",
                f"train.amp={amp}",
                f"train.steps={steps}",
                "train.progress=false",
                f"output.root={thesis}",
                "--run-dir",
                os.path.join(thesis, "multistream"),
            ]
        )
        != 0
    ):
        return 1
    if not _has_results(os.path.join(thesis, "multistream", "results.json")):
        sh.echo("no results.json from the thesis stage")
        return 1
    # the paper-size training step rates with AMP (train.amp auto: fp16 + GradScaler on CUDA), per phase; on the CPU
    # one small step of one recipe (the check's self-test)
    speed = os.path.join(c.out, "train", "speed")
    small = ["--quick", "--recipe", "papers/mmh/casia_surf/baseline", "--batch", "2", "--steps", "1"]
    speed_args = small if c.device == "cpu" else ["--steps", "10", "--no-compile"]
    sh.echo(f"--- mmh benchmark speed on {dev} (the training step at the papers' sizes, train.amp=auto)")
    argv = [c.py, "-m", "mmh.cli", "benchmark", "speed", "--device", dev, "--out", speed, *speed_args]
    if sh.run([*argv, "train.amp=auto"]) != 0:
        return 1
    if not _has_results(os.path.join(speed, "speed.json")):
        sh.echo("no speed.json from the speed benchmark")
        return 1
    return 0


def bench_argv(c: Context, time_budget: int) -> list[str]:
    """benchmarks/bench_ops.py on the device, its CSV in OUT, with ``--time-budget`` (on the CPU: --quick)."""
    argv = [
        c.py,
        "benchmarks/bench_ops.py",
        "--device",
        c.device,
        "--csv",
        os.path.join(c.out, "bench_ops.csv"),
        "--time-budget",
        str(time_budget),
    ]
    if c.device == "cpu":
        argv += ["--quick", "--min-run-time", "0.05"]
    return argv


def bench_markdown_argv(c: Context) -> list[str]:
    """The benchmark's table and targets as markdown, from its CSV (for the summary)."""
    return [
        c.py,
        "benchmarks/bench_ops.py",
        "--from-csv",
        os.path.join(c.out, "bench_ops.csv"),
        "--markdown",
        os.path.join(c.out, "bench_ops.md"),
    ]
