"""The GPU check's orchestration: the CUDA probe, the output folder, the machine facts, the sections in order under
one time budget (build; then tests, memcheck -> racecheck and train side by side; then the benchmark alone on the
GPU), each section's status, and the summary with the exit status.

Each section runs as a body of :mod:`benchmarks.gpu_check.sections` in a :class:`SectionShell`: its commands' output
goes to OUT/logs/<section>.log (appended to OUT/gpu_check.log when it ends), every command runs in its own process
group, and at the section's limit the running command's group gets SIGTERM, then SIGKILL ``KILL_AFTER_S`` later (the
section then counts as timed out). Its status is OUT/.status/<section> = "status<TAB>seconds<TAB>note".
"""

from __future__ import annotations

import datetime
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import sections, summary
from .budget import BUDGET_ENV, CPU_CAP_SCALE, KILL_AFTER_S, Budget, parse_budget
from .machine import cuda_home, facts, find_sanitizer
from .sections import Context

ROOT = Path(__file__).resolve().parents[2]
#: The CUDA probe, run before anything is built or written: exit status 0 when torch sees a CUDA device.
PROBE = """import sys, torch
if torch.cuda.is_available() and torch.cuda.device_count() > 0:
    sys.exit(0)
cuda = torch.version.cuda or "no"
print(f"gpu_check: torch {torch.__version__} (CUDA build: {cuda}) sees no CUDA device; nothing to check")
sys.exit(1)"""
#: Files of an earlier check in the same folder that are cleared first (nothing of it is reported).
EARLIER = ["summary.md", "bench_ops.csv", "bench_ops.md", "test_cuda.xml", "machine.txt"]
Body = Callable[[sections.Shell, Context], int]


class SectionShell:
    """A section's :class:`~benchmarks.gpu_check.sections.Shell`: runs its commands until ``deadline`` (monotonic
    seconds), output to ``log``."""

    def __init__(self, check: GpuCheck, name: str, log, deadline: float, env: dict[str, str]) -> None:
        self.check, self.name, self.log, self.deadline = check, name, log, deadline
        self.env = dict(env)
        self.timed_out_rc = 0  # 124 (or 137 when SIGKILL was needed) once the limit was reached

    def _env(self, changes: dict[str, str | None] | None) -> dict[str, str]:
        env = dict(self.env)
        for k, v in (changes or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        return env

    def setenv(self, **changes: str | None) -> None:
        self.env = self._env(changes)

    def getenv(self, name: str) -> str | None:
        return self.env.get(name)

    def echo(self, text: str) -> None:
        self.log.write(text + "\n")
        self.log.flush()

    def note(self, text: str) -> None:
        (self.check.out / ".status" / f"{self.name}.note").write_text(text + "\n")

    def run(
        self,
        argv: list[str],
        env: dict[str, str | None] | None = None,
        cwd: str | None = None,
        tee: str | None = None,
        capture: list[str] | None = None,
    ) -> int:
        """Run ``argv`` (output to the log, and to ``tee``; stdout into ``capture`` instead, if given) until the
        section's deadline."""
        if self.timed_out_rc:
            return self.timed_out_rc
        self.log.flush()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd or str(self.check.root),
                env=self._env(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if capture is not None else subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            self.echo(f"{argv[0]}: cannot run: {exc}")
            return 127
        self.check.started(proc)
        outs = [self.log] + ([open(tee, "w")] if tee else [])
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, outs if capture is None else None, capture), daemon=True)
        ]
        if capture is not None:
            pumps.append(threading.Thread(target=_pump, args=(proc.stderr, outs, None), daemon=True))
        for t in pumps:
            t.start()
        try:
            rc = proc.wait(timeout=max(self.deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            rc = self.timed_out_rc = _stop(proc)
        finally:
            self.check.ended(proc)
        for t in pumps:
            t.join(timeout=5)  # a process left behind may hold the pipe open: its output is not waited for
        for fh in outs[1:]:
            fh.close()
        return rc

    def capture(self, argv: list[str]) -> tuple[int, str]:
        out: list[str] = []
        rc = self.run(argv, capture=out)
        return rc, "".join(out)


def _pump(pipe, outs, capture: list[str] | None) -> None:
    for raw in iter(pipe.readline, b""):
        text = raw.decode(errors="replace")
        if capture is not None:
            capture.append(text)
        for fh in outs or []:
            fh.write(text)
            fh.flush()
    pipe.close()


def _stop(proc: subprocess.Popen) -> int:
    """SIGTERM to the process group, SIGKILL ``KILL_AFTER_S`` later if it is still there: 124, or 137 if killed
    (what ``timeout --kill-after`` returns)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=KILL_AFTER_S)
        return 124
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return 137


class GpuCheck:
    """One run of the check. ``clock`` (whole seconds) and :meth:`execute` / :meth:`run_lanes` are what a test
    replaces to run the schedule without commands."""

    def __init__(self, ctx: Context, budget: Budget, clock: Callable[[], float] = time.time) -> None:
        self.ctx, self.budget, self.clock = ctx, budget, clock
        self.root, self.out = Path(ctx.root), Path(ctx.out)
        self.log_path = self.out / "gpu_check.log"
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()

    # ----------------------------------------------------------------------------------------------- bookkeeping
    def now(self) -> int:
        return int(self.clock())

    def say(self, msg: str) -> None:
        line = f"[gpu_check {time.strftime('%H:%M:%S')} +{self.now() - self.budget.start}s] {msg}"
        with self._lock:
            print(line, flush=True)
            with open(self.log_path, "a") as fh:
                fh.write(line + "\n")

    def started(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def ended(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self) -> None:
        """SIGKILL every running command's process group (the check itself is being stopped)."""
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def write_status(self, name: str, status: str, secs: int, note: str) -> None:
        (self.out / ".status" / name).write_text(f"{status}\t{secs}\t{note}\n")

    def skip_section(self, name: str, status: str, note: str) -> None:
        """A section that cannot run here."""
        self.write_status(name, status, 0, note)
        self.say(f"{name}: {status} ({note})")

    # --------------------------------------------------------------------------------------------------- sections
    def run_section(self, name: str, body: Body, what: str) -> int:
        """Run ``body`` with the section's limit (its cap, or what the budget leaves less its reserve); not at all
        when that is under ``MIN_LIMIT_S``. Writes its status and returns its exit status."""
        start = self.now()
        limit = self.budget.limit(name, start)
        if not self.budget.runs(limit):
            spent = f"not run: the time budget ({BUDGET_ENV}={self.budget.total_s}) is spent"
            self.write_status(name, "FAIL", 0, spent)
            self.say(f"{name}: NOT RUN (time budget spent)")
            return 1
        self.say(f"{name}: start (limit {limit}s): {what}")
        rc = self.execute(name, limit, body)
        secs = self.now() - start
        status = "PASS" if rc == 0 else "FAIL"
        note = f"timed out after {limit}s" if rc in (124, 137) else (f"exit status {rc}" if rc else "")
        note_file = self.out / ".status" / f"{name}.note"
        if note_file.is_file():
            extra = note_file.read_text().rstrip("\n")
            note = f"{note}; {extra}" if note else extra
        self.write_status(name, status, secs, note)
        log = self.out / "logs" / f"{name}.log"
        with self._lock, open(self.log_path, "a") as fh:
            fh.write(
                f"\n==================== {name} ({status}, {secs}s{', ' + note if note else ''}) ====================\n"
            )
            if log.is_file():
                fh.write(log.read_text(errors="replace"))
        self.say(f"{name}: {status} in {secs}s{f' ({note})' if note else ''}")
        return rc

    def execute(self, name: str, limit: int, body: Body) -> int:
        """Run ``body`` in a :class:`SectionShell` that stops it at ``limit`` seconds; its output in logs/NAME.log."""
        with open(self.out / "logs" / f"{name}.log", "w") as log:
            sh = SectionShell(self, name, log, time.monotonic() + limit, self.ctx.env)
            try:
                rc = body(sh, self.ctx)
            except Exception:  # noqa: BLE001  (a broken section is a failed section, not a broken check)
                log.write(traceback.format_exc())
                rc = 1
            return sh.timed_out_rc or rc

    def run_lanes(self, lanes: list[Callable[[], object]]) -> None:
        """Run the lanes side by side (threads) and wait for all of them."""
        threads = [threading.Thread(target=lane, daemon=True) for lane in lanes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # ------------------------------------------------------------------------------------------------------- plan
    def run_all(self, skip_build: bool) -> None:
        """build; then tests | memcheck -> racecheck | train side by side; then bench alone (every status written)."""
        c = self.ctx
        build_ok = True
        if skip_build:
            with open(self.log_path, "a") as fh:
                ok = (
                    subprocess.run(
                        [c.py, "-m", "mmh_ext.info"],
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=c.env,
                        cwd=c.root,
                    ).returncode
                    == 0
                )
            if ok:
                self.skip_section("build", "PASS", "skipped (GPU_CHECK_SKIP_BUILD=1): the existing build is used")
            else:
                self.skip_section("build", "FAIL", "GPU_CHECK_SKIP_BUILD=1 but mmh_ext does not import (gpu_check.log)")
                build_ok = False
        else:
            build_ok = self.run_section("build", sections.build, "build") == 0
        note = self.out / ".status" / "build.note"
        if note.is_file() and "built in place" in note.read_text():  # later sections import from the checkout
            old = c.env.get("PYTHONPATH")
            c.env["PYTHONPATH"] = c.checkout_path + (f":{old}" if old else "")
        if not build_ok:
            for s in ("tests", "memcheck", "racecheck", "train", "bench"):
                self.skip_section(s, "FAIL", "not run: the build failed")
            return

        lanes: list[Callable[[], object]] = [lambda: self.run_section("tests", sections.tests, "tests")]
        if c.device != "cuda":
            for s in ("memcheck", "racecheck"):
                self.skip_section(s, "SKIP", "no GPU (GPU_CHECK_ALLOW_NO_CUDA)")
        elif not c.sanitizer:
            self.skip_section("memcheck", "FAIL", "compute-sanitizer not found (PATH, $CUDA_HOME/bin, /opt/nvidia)")
            self.skip_section("racecheck", "FAIL", "compute-sanitizer not found")
        else:

            def sanitizers() -> None:
                for tool in ("memcheck", "racecheck"):
                    self.run_section(tool, lambda sh, ctx, t=tool: sections.sanitize(sh, ctx, t), f"sanitize {tool}")

            lanes.append(sanitizers)
        lanes.append(lambda: self.run_section("train", sections.train, "train"))
        self.run_lanes(lanes)

        # the benchmark's own budget ends BENCH_MARGIN_S before its section's limit (300 s at most, or what is
        # left), so that it finishes its table (the GPU kernel-time pass included) before it is stopped
        argv = sections.bench_argv(c, self.budget.bench_time_budget(self.now()))
        self.run_section("bench", lambda sh, ctx: sh.run(argv), " ".join(argv))

    def write_summary(self) -> int:
        """bench_ops.md from the benchmark's CSV, then summary.md; the exit status (0, 1 or 3)."""
        c = self.ctx
        (self.out / "bench_ops.md").unlink(missing_ok=True)
        csv = self.out / "bench_ops.csv"
        if csv.is_file() and csv.stat().st_size > 0:
            with open(self.log_path, "a") as log:
                subprocess.run(
                    sections.bench_markdown_argv(c),
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    stdin=subprocess.DEVNULL,
                    env=c.env,
                    cwd=c.root,
                )
        try:
            rc = summary.main([str(self.out)])
        except Exception:  # noqa: BLE001
            with open(self.log_path, "a") as log:
                log.write(traceback.format_exc())
            rc = 1
        if rc not in (0, 3):
            rc = 1
        md = self.out / "summary.md"
        if not md.is_file() or md.stat().st_size == 0:  # the summary itself failed: the bare results
            lines = ["# mmh GPU check (summary script failed: see gpu_check.log)", ""]
            machine = self.out / "machine.txt"
            lines += [machine.read_text().rstrip("\n") if machine.is_file() else "", ""]
            for f in sorted((self.out / ".status").iterdir()):
                if not f.name.endswith(".note"):
                    lines.append(f"- {f.name}: {f.read_text()}".rstrip("\n"))
            md.write_text("\n".join(lines) + "\n")
            rc = 1
        return rc


# ----------------------------------------------------------------------------------------------------------- main
def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 4


def prepare_out(arg: str | None) -> Path:
    """The output folder: ``arg`` or gpu_check_out/<date-time>; it must be new, empty or an earlier check's (whose
    results are cleared). ValueError naming it otherwise."""
    out = Path(arg or f"gpu_check_out/{datetime.datetime.now():%Y%m%d-%H%M%S}")
    if out.is_dir() and any(out.iterdir()) and not (out / "gpu_check.log").is_file():
        raise ValueError(f"{out} exists and is not an earlier gpu_check folder: give an empty or new OUT_DIR")
    try:
        (out / "logs").mkdir(parents=True, exist_ok=True)
        (out / ".status").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create {out}: {exc}") from exc
    out = out.resolve()
    (out / "gpu_check.log").write_text("")
    for d in (out / ".status", out / "logs"):  # nothing from an earlier run in the same folder is reported
        for f in d.iterdir():
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    shutil.rmtree(out / "train", ignore_errors=True)
    for name in EARLIER:
        (out / name).unlink(missing_ok=True)
    return out


USAGE = "usage: bash scripts/gpu_check.sh [OUT_DIR]   (or, from the checkout: python -m benchmarks.gpu_check [OUT_DIR])"


def main(argv: list[str] | None = None, py: str | None = None, environ: dict[str, str] | None = None) -> int:
    """The GPU check (see :mod:`benchmarks.gpu_check`); ``py``: the interpreter the sections run (default: this one)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(sys.modules["benchmarks.gpu_check"].__doc__)
        return 0
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(USAGE, file=sys.stderr)
        return 1
    env = dict(os.environ if environ is None else environ)
    py = py or sys.executable
    t0 = int(time.time())
    try:
        total = parse_budget(env.get(BUDGET_ENV))
    except ValueError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 1

    device = "cuda"
    probe = subprocess.run(
        [py, "-c", PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        stdin=subprocess.DEVNULL,
        env=env,
    )
    if probe.returncode != 0:
        if env.get("GPU_CHECK_ALLOW_NO_CUDA", "0") != "1":
            last = (probe.stdout.strip().splitlines() or ["gpu_check: torch sees no CUDA device"])[-1]
            print(last, file=sys.stderr)
            return 2
        device = "cpu"
    try:
        out = prepare_out(argv[0] if argv else None)
    except ValueError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 1

    env.update(PYTHONUNBUFFERED="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    cores = _cores()
    home = cuda_home(env)
    sanitizer = find_sanitizer(home, env)
    # what the bash script exported to its sections
    env.update(
        OUT=str(out), DEVICE=device, PY=py, ROOT=str(ROOT), CORES=str(cores), CUDA_HOME_FOUND=home, SANITIZER=sanitizer
    )
    ctx = Context(
        py=py, root=str(ROOT), out=str(out), device=device, cores=cores, cuda_home=home, sanitizer=sanitizer, env=env
    )
    check = GpuCheck(ctx, Budget(t0, total, CPU_CAP_SCALE if device == "cpu" else 1))

    def stop(signum, frame):  # stopped from outside: end the running commands with the check
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
    try:
        check.say(f"mmh GPU check: device {device}, python {py}, {cores} cores, budget {total}s, output {out}")
        text = facts(py, cores, home, sanitizer, env)
        (out / "machine.txt").write_text(text)
        print(text, end="", flush=True)
        with open(check.log_path, "a") as fh:
            fh.write(text)
        check.run_all(env.get("GPU_CHECK_SKIP_BUILD", "0") == "1")
        rc = check.write_summary()
    finally:
        check.stop_all()
    check.say(f"done in {check.now() - t0}s: {out}/summary.md (exit status {rc})")
    print()
    print((out / "summary.md").read_text(), end="")
    return rc
