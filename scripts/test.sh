#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh: the active virtualenv/conda environment, else .venv in the checkout), builds
# the C++ library with CMake and runs its ctest smoke test, runs the whole Python test suite, then builds the docs
# site (mkdocs --strict) when the docs extra is installed. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
t0=$SECONDS
bash scripts/setup.sh
echo "== setup: $(( SECONDS - t0 )) s"

# Lint and format, first (seconds, and nothing else needs to run when the tree is not clean): ruff (pyproject.toml) and
# clang-format (.clang-format). Required when MMH_EXTRAS asks for the lint extra (CI); otherwise run when installed.
if [[ ",${MMH_EXTRAS:-test}," == *,lint,* ]] || { [ -x "$MMH_ENV/bin/ruff" ] && [ -x "$MMH_ENV/bin/clang-format" ]; }; then
  echo "== lint (ruff check, ruff format --check, clang-format --dry-run --Werror)"
  t0=$SECONDS
  "$MMH_ENV/bin/ruff" check .
  "$MMH_ENV/bin/ruff" format --check .
  git ls-files -co --exclude-standard -- 'csrc/*' 'tests/cpp/*' 'examples/cpp/*' | grep -E '\.(cpp|h|cu|cuh)$' | \
    xargs "$MMH_ENV/bin/clang-format" --dry-run --Werror
  echo "== lint: $(( SECONDS - t0 )) s"
else
  echo "== lint: skipped (the lint extra is not installed: MMH_EXTRAS=test,lint bash scripts/setup.sh)"
fi

echo "== C++ library (CMake, LibTorch) + ctest"
t0=$SECONDS
if ! command -v cmake >/dev/null 2>&1 || ! command -v ctest >/dev/null 2>&1; then  # no system CMake: the wheel
  echo "== no cmake/ctest on PATH: pip install cmake into $MMH_ENV"
  $PY -m pip install -q "cmake>=3.18"
fi
prefix=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
cuda_args=()
if $PY -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)'; then
  # A CUDA build of LibTorch wants a CUDA toolkit even for CPU code: point it at the toolkit, skip GPU detection
  # (no GPU here) and take libnvrtc from the nvidia wheels when the toolkit lacks it.
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}
  nvrtc=$($PY -c 'import glob, os, nvidia; print(next(iter(sorted(glob.glob(os.path.join(nvidia.__path__[0], "*", "lib", "libnvrtc.so.*")))), ""))' 2>/dev/null || true)
  cuda_args=(-DCUDA_TOOLKIT_ROOT_DIR="${CUDA_HOME:-/usr/local/cuda}" -DCAFFE2_USE_CUDNN=OFF)
  [ -n "$nvrtc" ] && cuda_args+=(-DCUDA_nvrtc_LIBRARY="$nvrtc")
fi
mkdir -p build
cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release "${cuda_args[@]}" \
  > build/cmake.log 2>&1 || { cat build/cmake.log; exit 1; }
cmake --build build/cmake -j "$(nproc)" > build/cmake-build.log 2>&1 || { tail -50 build/cmake-build.log; exit 1; }
ctest --test-dir build/cmake --output-on-failure
echo "== cmake + ctest: $(( SECONDS - t0 )) s"

# The documentation site, warnings as errors (a broken link or anchor, a page left out of mkdocs.yml's nav, an API page
# naming something that is gone). Required when MMH_EXTRAS asks for the docs extra (CI); otherwise run when installed.
if [[ ",${MMH_EXTRAS:-test}," == *,docs,* ]] || $PY -c 'import mkdocs, mkdocstrings' 2>/dev/null; then
  echo "== docs (mkdocs build --strict)"
  t0=$SECONDS
  NO_MKDOCS_2_WARNING=1 $PY -m mkdocs build --strict -d build/site  # not --quiet: it would hide the warnings
  echo "== docs: $(( SECONDS - t0 )) s (build/site)"
else
  echo "== docs: skipped (the docs extra is not installed: MMH_EXTRAS=test,docs bash scripts/setup.sh)"
fi

echo "== Python tests"
t0=$SECONDS
$PY -m pytest -q -p no:cacheprovider tests "$@"
echo "== Python tests: $(( SECONDS - t0 )) s"

