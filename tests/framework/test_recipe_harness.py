"""The recipe harness's process handling (:func:`_recipes.run_all`), on fake jobs that sleep, hang or crash.

A fake job (``Job.call``) runs one of the functions below in a child of the fork server instead of ``mmh train``,
and the server imports nothing first, so each batch takes well under a second. Checked:

* a job still running after its timeout (``MMH_RECIPE_TIMEOUT``) is killed, its run fails naming it with its log's
  tail, the jobs after it are not run, and the others go on;
* a child holds no pipe end of the harness (fd 0 on ``/dev/null``), so the server dying ends the batch at once
  with an error, and the children it left are killed;
* an error in the test process while children run kills them all and is the error raised;
* jobs that could never start (an unknown ``after`` id, a cycle) are refused before anything runs, naming them;
* a ``model.pt`` other jobs fine-tune from stays until the last of them ended, and not longer (its sha256 as each of
  them started is in their runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _recipes  # noqa: E402

MODULE = Path(__file__).stem


# ------------------------------------------------------------------------------ what the fake jobs' children run
def sleeper(argv: list[str]) -> int:
    """argv: pid file, seconds, a line to print first."""
    Path(argv[0]).write_text(str(os.getpid()))
    print(argv[2], flush=True)
    time.sleep(float(argv[1]))
    return 0


def fd_probe(argv: list[str]) -> int:
    """argv: a JSON file to write the child's open file descriptors to (fd -> what it points at)."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            pass
    Path(argv[0]).write_text(json.dumps(fds))
    return 0


def server_killer(argv: list[str]) -> int:
    """argv: pid file. Kills the fork server (this child's parent), then sleeps on."""
    Path(argv[0]).write_text(str(os.getpid()))
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(30)
    return 0


def waiter(argv: list[str]) -> int:
    """argv: a file to wait for (at most 10 s)."""
    deadline = time.monotonic() + 10
    while not Path(argv[0]).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return 0


def touch(argv: list[str]) -> int:
    """argv: files to create."""
    for path in argv:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(b"weights")
    return 0


def needs_init_file(argv: list[str]) -> int:
    """argv: ``stages.streams.init_from=PATH``; exit 0 when PATH exists, 3 when not."""
    (path,) = [a.removeprefix("stages.streams.init_from=") for a in argv]
    return 0 if Path(path).is_file() else 3


def lacks_file(argv: list[str]) -> int:
    """argv: a file; exit 0 when it is gone, 4 when it is still there."""
    return 4 if Path(argv[0]).exists() else 0


# ---------------------------------------------------------------------------------------------------- helpers
def job(root: Path, name: str, call: str, *args: str, after: tuple[str, ...] = ()) -> _recipes.Job:
    recipe = _recipes.Recipe(f"fake/{name}", "fake", "fake", name, {})
    return _recipes.Job(
        f"fake/{name}",
        recipe,
        root / "data",
        root / "cache" / name,
        root / "runs" / name,
        list(args),
        [f"fake/{a}" for a in after],
        call=f"{MODULE}:{call}",
    )


def gone(pid: int, within: float = 5.0) -> bool:
    """The process has ended (no longer there, or a zombie no one reaped yet) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def read_pid(path: Path, within: float = 5.0) -> int:
    deadline = time.monotonic() + within
    while not (path.is_file() and path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return int(path.read_text())


@pytest.fixture
def two_at_a_time(monkeypatch):
    monkeypatch.setattr(_recipes, "PARALLEL", 2)


# ------------------------------------------------------------------------------------------------------ tests
def test_a_job_past_its_timeout_is_killed_and_fails_naming_it(tmp_path, monkeypatch, two_at_a_time):
    monkeypatch.setenv("MMH_RECIPE_TIMEOUT", "2")
    pid_file = tmp_path / "hang.pid"
    jobs = [
        job(tmp_path, "hang", "sleeper", str(pid_file), "30", "the hung job's last line"),
        job(tmp_path, "quick", "touch", str(tmp_path / "quick.done")),
        job(tmp_path, "after_hang", "touch", str(tmp_path / "after_hang.done"), after=("hang",)),
    ]
    t0 = time.perf_counter()
    runs = _recipes.run_all(tmp_path, jobs, imports=())
    elapsed = time.perf_counter() - t0
    assert 2 <= elapsed < 12, elapsed  # the 2 s timeout, not the 30 s sleep
    hung = runs["fake/hang"]
    assert hung.rc == -signal.SIGKILL
    assert hung.log.startswith("fake/hang: timed out after 2 s (MMH_RECIPE_TIMEOUT), killed")
    assert "the hung job's last line" in hung.log  # the log's tail
    with pytest.raises(AssertionError, match=r"fake/hang: exit -9\nfake/hang: timed out"):
        hung.ok()
    assert gone(int(pid_file.read_text()))
    assert runs["fake/quick"].rc == 0 and (tmp_path / "quick.done").is_file()  # the other job went on
    assert runs["fake/after_hang"].rc == -1 and "not run: ['fake/hang'] failed" in runs["fake/after_hang"].log
    assert not (tmp_path / "after_hang.done").exists()


def test_the_timeout_comes_from_mmh_recipe_timeout(monkeypatch):
    monkeypatch.delenv("MMH_RECIPE_TIMEOUT", raising=False)
    assert _recipes.job_timeout() == 600
    monkeypatch.setenv("MMH_RECIPE_TIMEOUT", "45.5")
    assert _recipes.job_timeout() == 45.5
    for bad in ("soon", "0", "-3", "inf", "nan", ""):
        monkeypatch.setenv("MMH_RECIPE_TIMEOUT", bad)
        with pytest.raises(ValueError, match=f"MMH_RECIPE_TIMEOUT must be a positive number of seconds, got {bad!r}"):
            _recipes.job_timeout()


def test_a_child_holds_no_pipe_of_the_harness(tmp_path):
    out = tmp_path / "fds.json"
    runs = _recipes.run_all(tmp_path, [job(tmp_path, "probe", "fd_probe", str(out))], timeout=60, imports=())
    assert runs["fake/probe"].rc == 0, runs["fake/probe"].log
    fds = json.loads(out.read_text())
    assert fds["0"] == os.devnull
    log = str(tmp_path / "logs" / "fake_probe.log")
    assert fds["1"] == fds["2"] == log
    assert not [target for target in fds.values() if target.startswith("pipe:")], fds


def test_the_server_dying_ends_the_batch_at_once_and_kills_its_children(tmp_path):
    pid_file = tmp_path / "orphan.pid"
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"the recipe fork server died \(exit -9\) while running \['fake/orphan'\]"):
        _recipes.run_all(tmp_path, [job(tmp_path, "orphan", "server_killer", str(pid_file))], timeout=60, imports=())
    assert time.perf_counter() - t0 < 10  # not when the orphaned child ends (30 s)
    assert gone(read_pid(pid_file))


def test_an_error_in_the_test_process_kills_the_children_and_is_raised(tmp_path, monkeypatch, two_at_a_time):
    pid_file = tmp_path / "sleeper.pid"

    def read_back(run: _recipes.Run) -> None:
        raise OSError(f"cannot read {run.job.id}'s records")

    monkeypatch.setattr(_recipes, "_read_back", read_back)
    jobs = [
        job(tmp_path, "sleeper", "sleeper", str(pid_file), "30", "sleeping"),
        job(tmp_path, "first", "waiter", str(pid_file)),  # ends once the sleeper runs
    ]
    t0 = time.perf_counter()
    with pytest.raises(OSError, match="cannot read fake/first's records"):
        _recipes.run_all(tmp_path, jobs, timeout=60, imports=())
    assert time.perf_counter() - t0 < 10  # not after the sleeper (30 s)
    assert gone(read_pid(pid_file))


def test_jobs_that_can_never_start_are_refused_before_anything_runs(tmp_path):
    jobs = [
        job(tmp_path, "a", "touch", str(tmp_path / "a"), after=("missing",)),
        job(tmp_path, "b", "touch", str(tmp_path / "b"), after=("c",)),
        job(tmp_path, "c", "touch", str(tmp_path / "c"), after=("b",)),
        job(tmp_path, "d", "touch", str(tmp_path / "d")),
        job(tmp_path, "e", "touch", str(tmp_path / "e"), after=("d", "a")),
    ]
    with pytest.raises(ValueError, match="would never start") as err:
        _recipes.run_all(tmp_path, jobs, timeout=60, imports=())
    msg = str(err.value)
    assert "unknown job ids ['fake/missing']" in msg
    for stuck in (
        "fake/a waits for ['fake/missing']",
        "fake/b waits for ['fake/c']",
        "fake/c waits for ['fake/b']",
        "fake/e waits for ['fake/a']",
    ):
        assert stuck in msg
    assert "fake/d " not in msg
    assert not (tmp_path / "logs").exists() and not (tmp_path / "d").exists()
    with pytest.raises(ValueError, match=r"duplicate job ids \['fake/d'\]"):
        _recipes.check_order(jobs[3:4] * 2)


def test_a_fine_tuning_source_stays_until_its_last_user_ended(tmp_path, two_at_a_time):
    init = tmp_path / "runs" / "source" / "init.pt"
    scratch = tmp_path / "runs" / "source" / "scratch.pt"
    use = f"stages.streams.init_from={init}"
    jobs = [
        job(tmp_path, "source", "touch", str(init), str(scratch)),
        job(tmp_path, "user1", "needs_init_file", use, after=("source",)),
        job(tmp_path, "user2", "needs_init_file", use, after=("source", "user1")),
        job(tmp_path, "later", "lacks_file", str(init), after=("user1", "user2")),
    ]
    runs = _recipes.run_all(tmp_path, jobs, timeout=60, imports=())
    assert {i: r.rc for i, r in runs.items()} == {i: 0 for i in runs}, {i: r.log for i, r in runs.items()}
    assert not init.exists() and not scratch.exists()
    digest = hashlib.sha256(b"weights").hexdigest()  # what touch wrote
    assert runs["fake/user1"].init_sha256 == runs["fake/user2"].init_sha256 == {str(init): digest}
    assert runs["fake/source"].init_sha256 == {}
