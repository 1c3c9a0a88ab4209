// Cross-stream multiplicative injection, per-element math: out = x * relu(gate).
// Backward in one pass: dx = dout * relu(gate), dgate = 0 where gate <= 0, dout * x elsewhere (NaN gates pass the
// gradient, exactly as torch.relu's threshold_backward).
// This header: the per-element __host__ __device__ expressions (MMH_HD), no ATen. The CPU kernels' plain loops
// (cpu/inject.cpp, vectorised by the compiler) and the CUDA kernels (cuda/inject.cu) both evaluate exactly these, in
// the accumulation type. The host API (validation, dtype and layout handling) is inject.h.
#pragma once

#include "common.h"

namespace mmh_ext {
namespace inject {

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

}  // namespace inject
}  // namespace mmh_ext
