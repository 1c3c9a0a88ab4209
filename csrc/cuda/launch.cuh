// Launch helpers shared by the CUDA kernels: 1-D grid-stride launches on the current stream.
#pragma once

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace mmh_ext {
namespace cuda {

constexpr int kThreads = 256;

inline dim3 blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(b, 65535 * 32))));
}

#define MMH_GRID_STRIDE(i, n)                                                            \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

}  // namespace cuda
}  // namespace mmh_ext
