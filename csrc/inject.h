// Cross-stream multiplicative injection, host API: validation, dtype promotion and layout (inject.cpp); the kernels
// (cpu/inject.cpp, cuda/inject.cu) run the per-element math of inject_math.h over the dense storage.
#pragma once

#include "inject_math.h"

#include <ATen/ATen.h>

#include <tuple>

namespace mmh_ext {
namespace inject {

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
