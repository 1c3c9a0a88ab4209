"""The machine facts of the GPU check (OUT/machine.txt) and the CUDA tools it uses: the toolkit root that nvcc
really runs (nvcc may be a wrapper script, as on our machines) and compute-sanitizer."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import time

TORCH_SNIPPET = """import torch
print(f"torch: {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu:", p.name, f"(compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB,",
          p.multi_processor_count, "SMs)", "x", torch.cuda.device_count())"""


def _executable(path: str) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def cuda_home(env: dict[str, str]) -> str:
    """$CUDA_HOME, else the root of the toolkit that ``nvcc`` on PATH runs (the nvcc a wrapper script execs), else
    /usr/local/cuda if it has nvcc; empty when there is none."""
    if env.get("CUDA_HOME"):
        return env["CUDA_HOME"]
    nv = shutil.which("nvcc", path=env.get("PATH"))
    if not nv:
        return "/usr/local/cuda" if _executable("/usr/local/cuda/bin/nvcc") else ""
    real = ""
    try:
        with open(nv, "rb") as fh:
            text = fh.read(1 << 20).decode(errors="replace")
        if text.startswith("#!"):  # a script: the nvcc it execs
            m = re.search(r'/[^" ]+/bin/nvcc', text)
            real = m.group(0) if m else ""
    except OSError:
        pass
    if not _executable(real):
        real = os.path.realpath(nv)
    return real[: -len("/bin/nvcc")] if real.endswith("/bin/nvcc") else real


def find_sanitizer(home: str, env: dict[str, str]) -> str:
    """The first compute-sanitizer found on PATH, in the toolkit, in /usr/local/cuda or /opt/nvidia; empty: none."""
    candidates = [
        shutil.which("compute-sanitizer", path=env.get("PATH")) or "",
        f"{home}/bin/compute-sanitizer",
        f"{home}/compute-sanitizer/compute-sanitizer",
        "/usr/local/cuda/bin/compute-sanitizer",
        "/usr/local/cuda/compute-sanitizer/compute-sanitizer",
        *sorted(glob.glob("/opt/nvidia/*/compute-sanitizer/compute-sanitizer")),
        "/opt/nvidia/compute-sanitizer/compute-sanitizer",
    ]
    return next((c for c in candidates if _executable(c)), "")


def _output(argv: list[str], env: dict[str, str], stderr: bool = True) -> tuple[int, str]:
    """(exit status, stdout (and stderr)) of a short command; 127 with the error when it cannot be run."""
    try:
        res = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if stderr else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            errors="replace",
            timeout=120,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return res.returncode, res.stdout


def _first_matching(text: str, pattern: str) -> str:
    return next((line for line in text.splitlines() if re.search(pattern, line, re.IGNORECASE)), "")


def facts(py: str, cores: int, home: str, sanitizer: str, env: dict[str, str]) -> str:
    """machine.txt: date, host, cores, python, torch and the GPU, driver, nvcc, compute-sanitizer, cupy."""
    u = os.uname()
    version = _output([py, "-c", "import sys; print(sys.version.split()[0], sys.executable)"], env)[1].strip()
    lines = [
        f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"host: {u.sysname} {u.release} {u.machine}",
        f"cpu cores: {cores}",
        f"python: {version}",
    ]
    lines += _output([py, "-c", TORCH_SNIPPET], env)[1].rstrip("\n").splitlines()
    if shutil.which("nvidia-smi", path=env.get("PATH")):
        out = _output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], env)[1]
        lines.append(f"driver: {(out.splitlines() or [''])[0]}")
    else:
        lines.append("driver: (no nvidia-smi)")
    release = _first_matching(_output([f"{home}/bin/nvcc", "--version"], env)[1], "release") if home else ""
    lines.append(f"nvcc: {release or 'not found'} (CUDA_HOME={home or 'none'})")
    version = _first_matching(_output([sanitizer, "--version"], env)[1], "version") if sanitizer else ""
    lines.append(f"compute-sanitizer: {sanitizer or 'not found'}{f' — {version}' if version else ''}")
    rc, cupy = _output([py, "-c", "import cupy; print(cupy.__version__)"], env, stderr=False)
    lines.append(f"cupy: {cupy.strip() if rc == 0 else 'not installed'}")
    return "\n".join(lines) + "\n"
