"""The GPU check's orchestration (benchmarks.gpu_check) on the CPU: each section's command lines (the same as the bash
script's before it), the time budget's arithmetic, which sections run, are cut or are not run given the elapsed
times (fake sections on a fake clock), the summary and exit status of whole runs on a pretend CUDA machine, and a
section stopped at its limit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gpu_check import budget as B
from benchmarks.gpu_check import check, sections
from benchmarks.gpu_check.budget import Budget
from benchmarks.gpu_check.check import GpuCheck, SectionShell, prepare_out
from benchmarks.gpu_check.sections import Context

ROOT = Path(__file__).resolve().parents[2]
SHOWN = [
    "TORCH_CUDA_ARCH_LIST",
    "MMH_EXT_FORCE_CUDA",
    "MMH_EXT_NO_CUDA",
    "MAX_JOBS",
    "CUDA_HOME",
    "PYTHONPATH",
    "MMH_CUDA_TESTS_ON_CPU",
    "PYTORCH_NO_CUDA_MEMORY_CACHING",
]


class RecordingShell:
    """A section's shell that runs nothing: it records each command as "cwd argv | VAR=value ..." (the variables of
    SHOWN that are set) and answers from ``answers`` (first argv words -> (exit status, output))."""

    def __init__(self, ctx: Context, answers: dict[tuple[str, ...], tuple[int, str]] | None = None) -> None:
        self.ctx, self.env, self.lines, self.notes, self.echoes = ctx, dict(ctx.env), [], [], []
        self.answers = answers or {}

    def _answer(self, argv):
        return next((a for k, a in self.answers.items() if tuple(argv[: len(k)]) == k), (0, ""))

    def _record(self, argv, env, cwd):
        full = {**self.env, **{k: v for k, v in (env or {}).items() if v is not None}}
        for k, v in (env or {}).items():
            if v is None:
                full.pop(k, None)
        shown = " ".join(f"{k}={full[k]}" for k in SHOWN if k in full)
        self.lines.append(f"{cwd or 'ROOT'}: {' '.join(argv)}" + (f" | {shown}" if shown else ""))

    def run(self, argv, env=None, cwd=None, tee=None):
        self._record(argv, env, cwd)
        rc, text = self._answer(argv)
        if tee:
            Path(tee).write_text(text)
        return rc

    def capture(self, argv):
        self._record(argv, None, None)
        return self._answer(argv)

    def echo(self, text):
        self.echoes.append(text)

    def note(self, text):
        self.notes.append(text)

    def setenv(self, **changes):
        for k, v in changes.items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v

    def getenv(self, name):
        return self.env.get(name)


def _ctx(tmp_path, device="cuda", **kw) -> Context:
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / ".status").mkdir(exist_ok=True)
    return Context(
        **{
            **dict(
                py="PY",
                root="ROOT",
                out=str(out),
                device=device,
                cores=16,
                cuda_home="/cuda",
                sanitizer="/cuda/bin/compute-sanitizer",
                env={"MMH_EXT_NO_CUDA": "1"},
            ),
            **kw,
        }
    )


def _lines(tmp_path, ctx, body, answers=None):
    sh = RecordingShell(ctx, answers)
    rc = body(sh, ctx)
    return rc, [line.replace(ctx.out, "OUT") for line in sh.lines], sh


# ------------------------------------------------------------------------------------------ pretend machine
#: The variables whose values the fake python records with each command (unset: "-").
RECORDED_ENV = [
    "TORCH_CUDA_ARCH_LIST",
    "MMH_EXT_FORCE_CUDA",
    "MMH_EXT_NO_CUDA",
    "MAX_JOBS",
    "CUDA_HOME",
    "PYTHONPATH",
    "MMH_CUDA_TESTS_ON_CPU",
    "PYTORCH_NO_CUDA_MEMORY_CACHING",
]

FAKE_PY = r"""#!/usr/bin/env bash
# every call: one line "cwd|argv...|VAR=value..." (arguments separated by \x1f)
line=$PWD; for a in "$@"; do line+=$'\x1f'"$a"; done
for v in __VARS__; do line+="|$v=${!v--}"; done
printf '%s\n' "$line" >> "$FAKE_LOG"  # one write: the sections run side by side
case "$1" in
  -c)
    case "$2" in
      *"torch.cuda.is_available() and torch.cuda.device_count()"*) exit "${FAKE_NO_CUDA:-0}" ;;
      *get_device_capability*) echo 9.0 ;;
      *"sys.version.split()[0], sys.executable"*) echo "3.11.7 $0" ;;
      *"torch.backends.cudnn.version()"*) echo "torch: 2.14.1 (CUDA 13.0, cuDNN 91000)"
        echo "gpu: Fake GPU (compute capability 9.0, 80 GiB, 132 SMs) x 1" ;;
      *"import cupy"*) exit 1 ;;
      *BUILD_INFO*) echo "CUDA kernels for 9.0 (wanted $3): yes" ;;
    esac ;;
  -)  exec "$REAL_PY" "$@" ;;
  -m)
    case "$2" in
      pip) echo "Successfully installed mmh"; exit "${FAKE_PIP_RC:-0}" ;;
      mmh_ext.info) echo "mmh_ext 0.1.0" ;;
      pytest) for a in "$@"; do case "$a" in --junitxml=*) xml=${a#--junitxml=} ;; esac; done
        suite="<testsuite tests='3' failures='0' errors='0' skipped='${FAKE_SKIPPED:-0}'/>"
        echo "<testsuites>$suite</testsuites>" > "$xml"
        sleep "${FAKE_TEST_SLEEP:-0}"; echo "3 passed" ;;
      mmh.cli) prev=""; for a in "$@"; do
          case "$prev" in --out|--run-dir) mkdir -p "$a"; echo '{"status": "done", "final": {}}' > "$a/results.json"
            echo "| metric |" > "$a/results.md"; echo '{"methods": {}}' > "$a/speed.json" ;; esac; prev=$a; done ;;
    esac ;;
  scripts/gpu_summary.py) exec "$REAL_PY" "$@" ;;
  scripts/gpu_ops_smoke.py) echo "gpu_ops_smoke: 40 passed, 0 failed (cuda)" ;;
  benchmarks/bench_ops.py)
    if [ "$2" = --from-csv ]; then exec "$REAL_PY" "$@"; fi
    prev=""; for a in "$@"; do [ "$prev" = --csv ] && csv=$a; prev=$a; done
    printf 'op,shape,pass_,x_eager,device\ndad_loss,S,forward+backward,%s,cuda\n' "${FAKE_X_EAGER:-2.5}" > "$csv" ;;
esac
exit 0
"""

FAKE_SANITIZER = r"""#!/usr/bin/env bash
[ "$1" = --version ] && { echo "Compute Sanitizer"; echo "Version 2025.3.0"; exit 0; }
line=SANITIZER; for a in "$@"; do line+=$'\x1f'"$a"; done; printf '%s\n' "$line" >> "$FAKE_LOG"
while [ "$#" -gt 0 ] && [ "${1#--}" != "$1" ]; do shift 2; done
exec "$@"
"""


def make_fake_machine(tmp: Path) -> dict[str, str]:
    """A pretend CUDA machine: a ``python`` that records every command line (with the environment variables the
    sections set) and plays each command's part (a CUDA device, a build, tests with a junit report, training runs with
    results.json, a benchmark CSV), a compute-sanitizer, nvcc and nvidia-smi, written under ``tmp``. Returns the
    environment (PATH, FAKE_LOG, REAL_PY) with the fake python's path as PY."""
    bin_, cuda = tmp / "bin", tmp / "cuda" / "bin"
    bin_.mkdir(parents=True)
    cuda.mkdir(parents=True)
    files = {
        bin_ / "python": FAKE_PY.replace("__VARS__", " ".join(RECORDED_ENV)),
        cuda / "nvcc": "#!/usr/bin/env bash\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n",
        cuda / "compute-sanitizer": FAKE_SANITIZER,
        bin_ / "nvidia-smi": "#!/usr/bin/env bash\necho 580.95\n",
    }
    for path, text in files.items():
        path.write_text(text)
        path.chmod(0o755)
    (bin_ / "nvcc").symlink_to(cuda / "nvcc")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CUDA_HOME", "PYTHONPATH", "GPU_CHECK_BUDGET_S", "GPU_CHECK_SKIP_BUILD", "GPU_CHECK_ALLOW_NO_CUDA")
    }
    env.update(
        PATH=f"{bin_}:{os.environ.get('PATH', '')}",
        FAKE_LOG=str(tmp / "calls.log"),
        REAL_PY=sys.executable,
        PY=str(bin_ / "python"),
    )
    return env


def fake_calls(env: dict[str, str], out: str, root: str) -> list[str]:
    """The recorded command lines, with OUT, the checkout and the fake python's path as placeholders."""
    path = Path(env["FAKE_LOG"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        line.replace(out, "OUT").replace(env["PY"], "PY").replace(root, "ROOT").replace("\x1f", " ") for line in lines
    ]


# ------------------------------------------------------------------------------------------- command lines
def test_section_command_lines_are_the_bash_scripts(tmp_path):
    ctx = _ctx(tmp_path)
    cuda = "TORCH_CUDA_ARCH_LIST=9.0 MMH_EXT_FORCE_CUDA=1 MAX_JOBS=16 CUDA_HOME=/cuda"
    rc, lines, _ = _lines(tmp_path, ctx, sections.build, {("PY", "-c"): (0, "9.0\n")})
    assert rc == 0 and lines == [
        "ROOT: PY -c " + sections.ARCH_SNIPPET + " | MMH_EXT_NO_CUDA=1",
        f"ROOT: PY -m pip install --no-build-isolation --no-deps --no-index -e . | {cuda}",
        f"OUT: PY -m mmh_ext.info | {cuda} PYTHONPATH=ROOT/python:ROOT",
        f"OUT: PY -c {sections.KERNELS_SNIPPET} 9.0 | {cuda} PYTHONPATH=ROOT/python:ROOT",
    ]

    rc, lines, sh = _lines(tmp_path, ctx, sections.tests)
    assert lines == [
        "ROOT: PY -m pytest -q -rs -p no:cacheprovider tests/ops/test_cuda.py --junitxml=OUT/test_cuda.xml"
        " | MMH_EXT_NO_CUDA=1"
    ]
    assert rc == 1 and sh.notes == ["no junit report (FileNotFoundError)"]  # no report: a failure

    for tool, extra in (("memcheck", "--padding 256 --leak-check no "), ("racecheck", "")):
        rc, lines, _ = _lines(tmp_path, ctx, lambda s, c, t=tool: sections.sanitize(s, c, t))
        assert lines == [
            f"ROOT: /cuda/bin/compute-sanitizer --tool {tool} {extra}--kernel-name kns=mmh_ext "
            "--report-api-errors no --target-processes application-only --error-exitcode 97 "
            "--print-limit 50 PY scripts/gpu_ops_smoke.py --device cuda "
            "| MMH_EXT_NO_CUDA=1 PYTORCH_NO_CUDA_MEMORY_CACHING=1"
        ]

    for d in ("main_quick", "thesis/multistream"):
        (Path(ctx.out) / "train" / d).mkdir(parents=True)
        (Path(ctx.out) / "train" / d / "results.json").write_text("{}")
    (Path(ctx.out) / "train" / "speed").mkdir(parents=True)
    (Path(ctx.out) / "train" / "speed" / "speed.json").write_text("{}")
    rc, lines, _ = _lines(tmp_path, ctx, sections.train)
    assert rc == 0 and lines == [
        "ROOT: PY -m mmh.cli benchmark mmh --quick --workers 6 --out OUT/train/main_quick device=cuda train.amp=auto"
        " | MMH_EXT_NO_CUDA=1",
        "ROOT: PY -m mmh.cli train thesis/multistream device=cuda train.amp=bf16 train.steps=40 train.progress=false "
        "output.root=OUT/train/thesis --run-dir OUT/train/thesis/multistream | MMH_EXT_NO_CUDA=1",
        "ROOT: PY -m mmh.cli benchmark speed --device cuda --out OUT/train/speed --steps 10 --no-compile "
        "train.amp=auto | MMH_EXT_NO_CUDA=1",
    ]
    assert (
        " ".join(sections.bench_argv(ctx, 270)).replace(ctx.out, "OUT")
        == "PY benchmarks/bench_ops.py --device cuda --csv OUT/bench_ops.csv --time-budget 270"
    )


def test_section_command_lines_on_the_cpu_and_when_pip_cannot_write(tmp_path):
    ctx = _ctx(tmp_path, device="cpu", cores=4, env={"PYTHONPATH": "/x", "TORCH_CUDA_ARCH_LIST": "8.0"})
    answers = {("PY", "-m", "pip"): (1, "ERROR: [Errno 30] Read-only file system: '/usr/lib'\n")}
    rc, lines, sh = _lines(tmp_path, ctx, sections.build, answers)
    assert rc == 0 and lines == [
        "ROOT: PY -m pip install --no-build-isolation --no-deps --no-index -e . | MMH_EXT_NO_CUDA=1 MAX_JOBS=4 "
        "PYTHONPATH=/x",
        "ROOT: PY setup.py build_ext --inplace -j 4 | MMH_EXT_NO_CUDA=1 MAX_JOBS=4 PYTHONPATH=/x",
        "OUT: PY -m mmh_ext.info | MMH_EXT_NO_CUDA=1 MAX_JOBS=4 PYTHONPATH=ROOT/python:ROOT:/x",
    ]
    assert sh.notes == ["built in place (environment not writable): PYTHONPATH=ROOT/python:ROOT"]
    # any other pip failure fails the build, with nothing built in place
    rc, lines, _ = _lines(tmp_path, ctx, sections.build, {("PY", "-m", "pip"): (1, "No matching distribution\n")})
    assert rc == 1 and len(lines) == 1

    rc, lines, _ = _lines(tmp_path, ctx, sections.tests)
    assert lines[0].endswith("| TORCH_CUDA_ARCH_LIST=8.0 PYTHONPATH=/x MMH_CUDA_TESTS_ON_CPU=1")  # not the build's
    rc, lines, sh = _lines(tmp_path, ctx, sections.train)  # no results.json: the first run is a failure
    assert rc == 1 and sh.echoes[-1] == "no results.json from the main job"
    assert lines == [
        "ROOT: PY -m mmh.cli benchmark mmh --quick --workers 2 --out OUT/train/main_quick --steps 10 "
        "--no-antispoof device=cpu train.amp=auto | TORCH_CUDA_ARCH_LIST=8.0 PYTHONPATH=/x"
    ]
    assert sections.bench_argv(ctx, 5)[-5:] == ["--time-budget", "5", "--quick", "--min-run-time", "0.05"]


@pytest.mark.parametrize("skipped, device, want", [(0, "cuda", 0), (2, "cuda", 1), (2, "cpu", 0)])
def test_tests_section_counts_a_skip_on_cuda_as_a_failure(tmp_path, skipped, device, want):
    ctx = _ctx(tmp_path, device=device)
    (Path(ctx.out) / "test_cuda.xml").write_text(
        f"<testsuites><testsuite tests='5' failures='0' errors='0' skipped='{skipped}'/></testsuites>"
    )
    rc, _, sh = _lines(tmp_path, ctx, sections.tests)
    assert rc == want and sh.notes == [f"5 tests: {5 - skipped} passed, 0 failed, 0 errors, {skipped} skipped"]


# ------------------------------------------------------------------------------------------------------ budget
def test_budget_arithmetic():
    b = Budget(start=1000, total_s=450)
    assert b.deadline == 1450
    assert b.limit("build", 1000) == 240  # 450 - (150 + 60) left before its reserve, under its cap of 300
    assert b.limit("tests", 1000) == 240 and b.limit("tests", 1100) == 200  # cap, then what is left less 150
    assert b.limit("racecheck", 1280) == 20 and b.runs(20) and not b.runs(b.limit("racecheck", 1290))
    assert b.limit("bench", 1000) == 300 and b.limit("bench", 1300) == 150
    assert b.bench_time_budget(1000) == 270 and b.bench_time_budget(1300) == 120
    cpu = Budget(start=0, total_s=10_000, cap_scale=B.CPU_CAP_SCALE)
    assert cpu.limit("tests", 0) == 2400 and cpu.bench_time_budget(0) == 2970
    assert B.worst_case_end_s(B.DEFAULT_BUDGET_S) <= 600 - 60  # a lent machine's command limit, with a margin
    assert B.parse_budget(None) == B.parse_budget("") == 450 and B.parse_budget(" 600 ") == 600
    for bad in ("abc", "0", "-5", "4.5"):
        with pytest.raises(ValueError, match="GPU_CHECK_BUDGET_S="):
            B.parse_budget(bad)


class SimulatedCheck(GpuCheck):
    """The real schedule on a fake clock: a section takes ``durations[name]`` seconds (default 5) or, past its
    limit, is stopped at it (SIGKILL after the grace, the worst case); it records its limit and its commands."""

    def __init__(self, ctx, total_s, durations=None, rcs=None):
        self.t = 10_000
        super().__init__(ctx, Budget(self.t, total_s), clock=lambda: self.t)
        self.durations, self.rcs, self.limits, self.commands = durations or {}, rcs or {}, {}, {}

    def execute(self, name, limit, body):
        self.limits[name] = limit
        sh = RecordingShell(self.ctx, {("PY", "-c"): (0, "9.0")})
        body(sh, self.ctx)
        self.commands[name] = sh.lines
        d = self.durations.get(name, 5)
        if d > limit:
            self.t += limit + B.KILL_AFTER_S
            return 137
        self.t += d
        return self.rcs.get(name, 0)

    def run_lanes(self, lanes):  # side by side: each lane starts at the same time; the phase ends with the last
        start, ends = self.t, []
        for lane in lanes:
            self.t = start
            lane()
            ends.append(self.t)
        self.t = max(ends)


def _statuses(ctx) -> dict[str, list[str]]:
    d = Path(ctx.out) / ".status"
    return {n: (d / n).read_text().rstrip("\n").split("\t") for n, _ in sections.SECTIONS}


def test_schedule_everything_in_time(tmp_path):
    ctx = _ctx(tmp_path)
    sim = SimulatedCheck(ctx, 450, durations={"build": 100, "tests": 60, "memcheck": 50, "racecheck": 40, "train": 80})
    sim.run_all(skip_build=False)
    assert sim.limits == {"build": 240, "tests": 200, "memcheck": 180, "racecheck": 150, "train": 200, "bench": 260}
    assert [s for s, _, _ in _statuses(ctx).values()] == ["PASS"] * 6
    # the benchmark starts after the slowest lane (build 100 s + memcheck 50 + racecheck 40): 260 s left
    assert "--time-budget 230 |" in sim.commands["bench"][0]
    assert _statuses(ctx)["train"] == ["PASS", "80", ""]
    log = (Path(ctx.out) / "gpu_check.log").read_text()
    assert "tests: start (limit 200s): tests" in log and "==================== bench (PASS, 5s) ====" in log


def test_schedule_cuts_and_skips_sections_as_the_budget_runs_out(tmp_path):
    ctx = _ctx(tmp_path)
    sim = SimulatedCheck(ctx, 450, durations={"build": 230, "memcheck": 60})
    sim.run_all(skip_build=False)
    # after a 230 s build 220 s are left: 70 for the side-by-side sections (150 kept for the benchmark)
    assert sim.limits["tests"] == sim.limits["memcheck"] == sim.limits["train"] == 70
    st = _statuses(ctx)
    assert st["racecheck"] == ["FAIL", "0", "not run: the time budget (GPU_CHECK_BUDGET_S=450) is spent"]
    assert st["tests"][0] == st["memcheck"][0] == st["train"][0] == "PASS"
    assert sim.limits["bench"] == 160 and "--time-budget 130 |" in sim.commands["bench"][0]
    assert "racecheck: NOT RUN (time budget spent)" in (Path(ctx.out) / "gpu_check.log").read_text()


def test_schedule_when_every_section_hangs_ends_within_the_worst_case(tmp_path):
    ctx = _ctx(tmp_path)
    sim = SimulatedCheck(ctx, 450, durations=dict.fromkeys(B.SPECS, 10_000))
    sim.run_all(skip_build=False)
    assert sim.t - sim.budget.start <= B.worst_case_end_s(450)
    st = _statuses(ctx)
    assert st["build"] == ["FAIL", str(240 + B.KILL_AFTER_S), "timed out after 240s"]
    for name in ("tests", "memcheck", "racecheck", "train", "bench"):
        assert st[name][0] == "FAIL" and st[name][2] == "not run: the build failed"
    # with a build in time, the sections hang instead: each is stopped at its limit, the benchmark still runs
    ctx = _ctx(tmp_path / "b")
    sim = SimulatedCheck(ctx, 450, durations={**dict.fromkeys(B.SPECS, 10_000), "build": 50})
    sim.run_all(skip_build=False)
    assert sim.t - sim.budget.start <= B.worst_case_end_s(450)
    st = _statuses(ctx)
    assert st["tests"] == ["FAIL", str(240 + B.KILL_AFTER_S), "timed out after 240s"]
    # memcheck ends at 50 + 180 + 15: racecheck gets the 55 s left before the benchmark's 150
    assert st["memcheck"][2] == "timed out after 180s" and st["racecheck"][2] == "timed out after 55s"
    assert st["bench"][2] == "timed out after 135s"  # 450 - (245 + 55 + 15): what was left


def test_schedule_without_sanitizer_or_gpu(tmp_path):
    sim = SimulatedCheck(_ctx(tmp_path, sanitizer=""), 450)
    sim.run_all(skip_build=False)
    st = _statuses(sim.ctx)
    assert st["memcheck"] == ["FAIL", "0", "compute-sanitizer not found (PATH, $CUDA_HOME/bin, /opt/nvidia)"]
    assert st["racecheck"] == ["FAIL", "0", "compute-sanitizer not found"] and "memcheck" not in sim.limits
    sim = SimulatedCheck(_ctx(tmp_path / "cpu", device="cpu"), 450)
    sim.budget = Budget(sim.t, 450, B.CPU_CAP_SCALE)
    sim.run_all(skip_build=False)
    st = _statuses(sim.ctx)
    assert st["memcheck"] == st["racecheck"] == ["SKIP", "0", "no GPU (GPU_CHECK_ALLOW_NO_CUDA)"]
    assert "--time-budget 410 --quick --min-run-time 0.05 |" in sim.commands["bench"][0]  # 450 - 2 x 5 s - 30


def test_schedule_with_a_failed_build_reports_and_summarises(tmp_path):
    ctx = _ctx(tmp_path)
    (Path(ctx.out) / "machine.txt").write_text("date: today\ngpu: a fake GPU\n")
    sim = SimulatedCheck(ctx, 450, rcs={"build": 1})
    (Path(ctx.out) / "logs" / "build.log").write_text("nvcc fatal: unsupported gpu architecture\n")
    sim.run_all(skip_build=False)
    assert sim.write_summary() == 1
    text = (Path(ctx.out) / "summary.md").read_text()
    assert "| build | build mmh_ext (this GPU's architecture only) | **FAIL** | 5 s | exit status 1 |" in text
    assert "| bench | benchmarks/bench_ops.py | **FAIL** | 0 s | not run: the build failed |" in text
    assert "0 passed, 6 failed (build, tests, memcheck, racecheck, train, bench), 0 skipped." in text
    assert "nvcc fatal: unsupported gpu architecture" in text  # the failed section's log tail
    assert set(sim.limits) == {"build"}


# ----------------------------------------------------------------------------------------- a section's shell
def test_section_shell_stops_a_command_and_its_children_at_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(check, "KILL_AFTER_S", 1)
    ctx = _ctx(tmp_path, py=sys.executable, root=str(ROOT), env=dict(os.environ))
    gc = GpuCheck(ctx, Budget(int(time.time()), 450))
    pid_file = tmp_path / "child.pid"
    with open(tmp_path / "s.log", "w") as log:
        sh = SectionShell(gc, "tests", log, time.monotonic() + 1.5, ctx.env)
        t0 = time.monotonic()
        rc = sh.run(["bash", "-c", f"sleep 60 & echo $! > {pid_file}; echo started; wait"])
        assert rc == 124 and time.monotonic() - t0 < 10
        assert sh.run(["true"]) == 124  # nothing more runs in a timed-out section
        # a command that ignores SIGTERM gets SIGKILL after the grace
        sh = SectionShell(gc, "train", log, time.monotonic() + 1, ctx.env)
        assert sh.run(["bash", "-c", "trap '' TERM; sleep 60"]) == 137
        sh = SectionShell(gc, "bench", log, time.monotonic() + 30, ctx.env)
        assert sh.capture([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"]) == (
            0,
            "out\n",
        )
    child = int(pid_file.read_text())
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # the background child went with its process group
        os.kill(child, 0)
    log = (tmp_path / "s.log").read_text()
    assert "started" in log and "err" in log and "out" not in log.replace("started", "")


# -------------------------------------------------------------------------------- whole runs, pretend machine
def _check(tmp_path, args=None, **env_kw):
    env = make_fake_machine(tmp_path)
    env.update(env_kw)
    out = str(tmp_path / "out")
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from benchmarks.gpu_check.check import main; sys.exit(main(sys.argv[2:], py=sys.argv[1]))",
            env["PY"],
            *(args or [out]),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    return res, fake_calls(env, out, str(ROOT)), Path(out)


@pytest.mark.parametrize("case, want", [("targets met", 0), ("a target missed", 3), ("a test skipped", 1)])
def test_whole_check_on_a_pretend_gpu_machine(tmp_path, case, want):
    kw = {"a target missed": {"FAKE_X_EAGER": "1.5"}, "a test skipped": {"FAKE_SKIPPED": "1"}}.get(case, {})
    res, calls, out = _check(tmp_path, **kw)
    assert res.returncode == want, res.stdout + res.stderr
    text = (out / "summary.md").read_text()
    assert res.stdout.rstrip().endswith(text.rstrip())
    assert "- gpu: Fake GPU (compute capability 9.0, 80 GiB, 132 SMs) x 1" in text
    assert f"- nvcc: Cuda compilation tools, release 13.0, V13.0.88 (CUDA_HOME={tmp_path}/cuda)" in text
    assert f"- compute-sanitizer: {tmp_path}/cuda/bin/compute-sanitizer — Version 2025.3.0" in text
    assert "| memcheck | compute-sanitizer memcheck on scripts/gpu_ops_smoke.py | pass |" in text
    if case == "a test skipped":
        assert "| tests | tests/ops/test_cuda.py | **FAIL** |" in text and "1 skipped" in text
    else:
        assert "| tests | tests/ops/test_cuda.py | pass |" in text
    verdict = "2.50x (target ≥ 2x): met" if want != 3 else "1.50x (target ≥ 2x): **MISSED**"
    assert f"- dad_loss S: speed-up over eager {verdict}" in text
    bench = [c for c in calls if "benchmarks/bench_ops.py --device" in c]
    assert len(bench) == 1 and "--device cuda --csv OUT/bench_ops.csv --time-budget 270|" in bench[0]
    sanitized = [c.split("|")[0] for c in calls if c.startswith("SANITIZER")]
    assert [s.split()[2] for s in sanitized] == ["memcheck", "racecheck"]
    assert all(s.endswith(" PY scripts/gpu_ops_smoke.py --device cuda") for s in sanitized)
    smoke = [c for c in calls if c.startswith("ROOT scripts/gpu_ops_smoke.py --device cuda|")]
    assert len(smoke) == 2 and all(c.endswith("|PYTORCH_NO_CUDA_MEMORY_CACHING=1") for c in smoke)
    log = (out / "gpu_check.log").read_text()
    assert "==================== train (" in log and "Successfully installed mmh" in log


def test_whole_check_refuses_a_bad_budget_or_folder_and_reruns_into_its_own(tmp_path):
    res, calls, out = _check(tmp_path, GPU_CHECK_BUDGET_S="soon")
    assert (
        res.returncode == 1
        and res.stderr.strip()
        == "gpu_check: GPU_CHECK_BUDGET_S='soon': expected a positive whole number of seconds (default 450)"
    )
    assert calls == [] and not out.exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    res, _, _ = _check(tmp_path / "b", args=[str(other)])
    assert res.returncode == 1 and "exists and is not an earlier gpu_check folder" in res.stderr
    assert sorted(p.name for p in other.iterdir()) == ["mine.txt"]
    with pytest.raises(ValueError, match="notes exists"):
        prepare_out(str(other))
    # an earlier check's folder: its results are cleared, then written again
    res, _, out = _check(tmp_path / "c")
    (out / ".status" / "stale").write_text("FAIL\t1\t\n")
    res, _, _ = _check(tmp_path / "d", args=[str(out)])
    assert res.returncode == 0 and not (out / ".status" / "stale").exists()
