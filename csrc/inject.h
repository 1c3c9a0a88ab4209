// Cross-stream multiplicative injection, out = x * relu(gate): the per-element math that the CPU and the CUDA kernels
// both run, and the host API (validation, dtype promotion and layout, in inject.cpp).
#pragma once

#include "common.h"

#include <ATen/ATen.h>

#include <tuple>

namespace mmh_ext {
namespace inject {

// Per-element math, __host__ __device__ (MMH_HD): the CPU kernels' plain loops (cpu/inject.cpp, vectorised by the
// compiler) and the CUDA kernels (cuda/inject.cu) both evaluate exactly these, in the accumulation type, over the dense
// storage. Backward in one pass: dx = dout * relu(gate), dgate = 0 where gate <= 0, dout * x elsewhere (NaN gates pass
// the gradient, exactly as torch.relu's threshold_backward).
template <typename T>
MMH_HD T relu(T g) {
  return mmh_max(g, T(0));
}

template <typename T>
MMH_HD T forward(T x, T gate) {
  return x * relu(gate);
}

template <typename T>
MMH_HD void backward(T dout, T x, T gate, T& dx, T& dgate) {
  dx = dout * relu(gate);
  dgate = gate <= T(0) ? T(0) : dout * x;
}

// Validation + layout: x and gate must match in shape and device; their dtypes may differ (any of float64, float32,
// float16, bfloat16): both are then taken in the promoted dtype, which is the output's dtype (as x * relu(gate) in
// eager mode). float16/bfloat16 are computed in float32 and rounded once. When both have the same dense,
// non-overlapping strides (contiguous, channels_last, ...) the kernels run over the storage as a flat array and the
// outputs keep those strides; otherwise both are made contiguous.
std::tuple<at::Tensor, at::Tensor> prepare(const at::Tensor& x, const at::Tensor& gate);

// The same for the backward: (grad, x, gate), all three with one common dense layout.
std::tuple<at::Tensor, at::Tensor, at::Tensor> prepare_backward(const at::Tensor& grad, const at::Tensor& x,
                                                                const at::Tensor& gate);

// Each gradient in its own input's dtype (computed in the promoted dtype).
std::tuple<at::Tensor, at::Tensor> finish_backward(at::Tensor dx, at::Tensor dgate, const at::Tensor& x,
                                                   const at::Tensor& gate);

}  // namespace inject
}  // namespace mmh_ext
