#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), builds the C++ library with CMake and runs its ctest smoke test, then runs
# the whole Python test suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
bash scripts/setup.sh

echo "== C++ library (CMake, LibTorch) + ctest"
prefix=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build/cmake -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCUDA_TOOLKIT_ROOT_DIR="${CUDA_HOME:-/usr/local/cuda}" -DCAFFE2_USE_CUDNN=OFF > build/cmake.log 2>&1 \
  || { cat build/cmake.log; exit 1; }
cmake --build build/cmake -j "$(nproc)" > build/cmake-build.log 2>&1 || { tail -50 build/cmake-build.log; exit 1; }
ctest --test-dir build/cmake --output-on-failure

echo "== Python tests"
$PY -m pytest -q -p no:cacheprovider tests "$@"
