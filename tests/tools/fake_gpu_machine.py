"""A pretend CUDA machine for the GPU check's tests: a ``python`` that records every command line (with the
environment variables the sections set) and plays each command's part (a CUDA device, a build, tests with a junit
report, training runs with results.json, a benchmark CSV), a compute-sanitizer, nvcc and nvidia-smi. Nothing runs on
a GPU; the real interpreter only renders the benchmark's CSV."""
from __future__ import annotations

import os
import sys
from pathlib import Path

#: The variables whose values the fake python records with each command (unset: "-").
RECORDED_ENV = ["TORCH_CUDA_ARCH_LIST", "MMH_EXT_FORCE_CUDA", "MMH_EXT_NO_CUDA", "MAX_JOBS", "CUDA_HOME", "PYTHONPATH",
                "MMH_CUDA_TESTS_ON_CPU", "PYTORCH_NO_CUDA_MEMORY_CACHING"]

FAKE_PY = r'''#!/usr/bin/env bash
# every call: one line "cwd|argv...|VAR=value..." (arguments separated by \x1f)
{ printf '%s' "$PWD"; for a in "$@"; do printf '\x1f%s' "$a"; done
  for v in __VARS__; do printf '|%s=%s' "$v" "${!v--}"; done; echo; } >> "$FAKE_LOG"
case "$1" in
  -c)
    case "$2" in
      *"torch.cuda.is_available() and torch.cuda.device_count()"*) exit "${FAKE_NO_CUDA:-0}" ;;
      *get_device_capability*) echo 9.0 ;;
      *"sys.version.split()[0], sys.executable"*) echo "3.11.7 $0" ;;
      *"torch.backends.cudnn.version()"*) echo "torch: 2.14.1 (CUDA 13.0, cuDNN 91000)"; echo "gpu: Fake GPU (compute capability 9.0, 80 GiB, 132 SMs) x 1" ;;
      *"import cupy"*) exit 1 ;;
      *BUILD_INFO*) echo "CUDA kernels for 9.0 (wanted $3): yes" ;;
    esac ;;
  -)  exec "$REAL_PY" "$@" ;;
  -m)
    case "$2" in
      pip) echo "Successfully installed mmh"; exit "${FAKE_PIP_RC:-0}" ;;
      mmh_ext.info) echo "mmh_ext 0.1.0" ;;
      pytest) for a in "$@"; do case "$a" in --junitxml=*) xml=${a#--junitxml=} ;; esac; done
        echo "<testsuites><testsuite tests='3' failures='0' errors='0' skipped='${FAKE_SKIPPED:-0}'/></testsuites>" > "$xml"
        sleep "${FAKE_TEST_SLEEP:-0}"; echo "3 passed" ;;
      mmh.cli) prev=""; for a in "$@"; do
          case "$prev" in --out|--run-dir) mkdir -p "$a"; echo '{"status": "done", "final": {}}' > "$a/results.json"
            echo "| metric |" > "$a/results.md" ;; esac; prev=$a; done ;;
    esac ;;
  scripts/gpu_summary.py) exec "$REAL_PY" "$@" ;;
  scripts/gpu_ops_smoke.py) echo "gpu_ops_smoke: 40 passed, 0 failed (cuda)" ;;
  benchmarks/bench_ops.py)
    if [ "$2" = --from-csv ]; then exec "$REAL_PY" "$@"; fi
    prev=""; for a in "$@"; do [ "$prev" = --csv ] && csv=$a; prev=$a; done
    printf 'op,shape,pass_,x_eager,device\ndad_loss,S,forward+backward,%s,cuda\n' "${FAKE_X_EAGER:-2.5}" > "$csv" ;;
esac
exit 0
'''

FAKE_SANITIZER = r'''#!/usr/bin/env bash
[ "$1" = --version ] && { echo "Compute Sanitizer"; echo "Version 2025.3.0"; exit 0; }
{ printf 'SANITIZER'; for a in "$@"; do printf '\x1f%s' "$a"; done; echo; } >> "$FAKE_LOG"
while [ "$#" -gt 0 ] && [ "${1#--}" != "$1" ]; do shift 2; done
exec "$@"
'''


def make(tmp: Path) -> dict[str, str]:
    """Write the fakes under ``tmp``; the environment (PATH, FAKE_LOG, REAL_PY) and the fake python's path as PY."""
    bin_, cuda = tmp / "bin", tmp / "cuda" / "bin"
    bin_.mkdir(parents=True)
    cuda.mkdir(parents=True)
    files = {bin_ / "python": FAKE_PY.replace("__VARS__", " ".join(RECORDED_ENV)),
             cuda / "nvcc": "#!/usr/bin/env bash\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n",
             cuda / "compute-sanitizer": FAKE_SANITIZER,
             bin_ / "nvidia-smi": "#!/usr/bin/env bash\necho 580.95\n"}
    for path, text in files.items():
        path.write_text(text)
        path.chmod(0o755)
    (bin_ / "nvcc").symlink_to(cuda / "nvcc")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "PYTHONPATH", "GPU_CHECK_BUDGET_S",
                                                              "GPU_CHECK_SKIP_BUILD", "GPU_CHECK_ALLOW_NO_CUDA")}
    env.update(PATH=f"{bin_}:{os.environ.get('PATH', '')}", FAKE_LOG=str(tmp / "calls.log"), REAL_PY=sys.executable,
               PY=str(bin_ / "python"))
    return env


def calls(env: dict[str, str], out: str, root: str) -> list[str]:
    """The recorded command lines, with OUT, the checkout and the fake python's path as placeholders."""
    path = Path(env["FAKE_LOG"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.replace(out, "OUT").replace(env["PY"], "PY").replace(root, "ROOT").replace("\x1f", " ")
            for line in lines]
