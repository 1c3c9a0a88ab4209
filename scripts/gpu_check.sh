#!/usr/bin/env bash
# The GPU check: bash scripts/gpu_check.sh [OUT_DIR]. Finds the python with torch (PYTHON, else python3 or python)
# and runs `python -m benchmarks.gpu_check` from the checkout root; sections, budget, exit status: see
# benchmarks/gpu_check/__init__.py.
set -u
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import torch' >/dev/null 2>&1; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || { echo "gpu_check: no python with torch found (set PYTHON)" >&2; exit 2; }
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
exec "$PY" -m benchmarks.gpu_check "$@"
