// Shared helpers for the mmh_ext operators.
//
// Everything marked MMH_HD is compiled for the host (CPU kernels) and, when nvcc compiles a .cu file, for the device
// (CUDA kernels). The per-item math of each operator (csrc/<op>_math.h) is written with them once for both: DAD's and
// the injection's CPU kernels call it always, RAD's in device-emulation mode (mode.h), so the CPU tests exercise the
// math the CUDA kernels run.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MMH_HD __host__ __device__ __forceinline__
#else
#define MMH_HD inline
#endif

namespace mmh_ext {

// Accumulation type: float for half/bfloat16/float, double for double.
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

// The bins of adaptive average pooling along one axis (PyTorch semantics): output index i of `out` bins over an input
// axis of length `in` covers [start, end).
// Templated on the index type: the CUDA (un)pooling kernels use 32-bit indices where they fit (64-bit integer division
// is several times slower on a GPU).
template <typename I>
MMH_HD I adaptive_start(I i, I out, I in) {
  return (i * in) / out;  // floor
}
template <typename I>
MMH_HD I adaptive_end(I i, I out, I in) {
  return ((i + 1) * in + out - 1) / out;  // ceil
}

template <typename T>
MMH_HD T mmh_max(T a, T b) {
  // NaN in `a` propagates (like torch.relu / torch.maximum).
  return (a != a) ? a : (a > b ? a : b);
}

MMH_HD float mmh_exp(float x) { return expf(x); }
MMH_HD double mmh_exp(double x) { return exp(x); }
MMH_HD float mmh_log(float x) { return logf(x); }
MMH_HD double mmh_log(double x) { return log(x); }
MMH_HD float mmh_sqrt(float x) { return sqrtf(x); }
MMH_HD double mmh_sqrt(double x) { return sqrt(x); }

}  // namespace mmh_ext
