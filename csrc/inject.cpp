// Injection: validation, dtype promotion and layout; the kernels come from cpu/ or cuda/.
#include "inject.h"

#include "checks.h"

namespace mmh_ext {
namespace inject {

namespace {

// t in `dtype` (itself when it already is: no dispatcher call on the common, single-dtype path).
at::Tensor as_dtype(const at::Tensor& t, at::ScalarType dtype) { return t.scalar_type() == dtype ? t : t.to(dtype); }

}  // namespace

std::tuple<at::Tensor, at::Tensor> prepare(const at::Tensor& x_in, const at::Tensor& gate_in) {
  check_float_same_device({{&x_in, "x"}, {&gate_in, "gate"}});
  TORCH_CHECK_VALUE(x_in.sizes() == gate_in.sizes(), "x has shape ", x_in.sizes(), " but gate has shape ",
                    gate_in.sizes(), " (they must match; no broadcasting)");
  // Mixed dtypes: both in the promoted dtype (what x * relu(gate) gives in eager mode); .to() keeps dense strides.
  const auto dtype = at::promote_types(x_in.scalar_type(), gate_in.scalar_type());
  const at::Tensor x = as_dtype(x_in, dtype), gate = as_dtype(gate_in, dtype);
  if (x.strides() == gate.strides() && x.is_non_overlapping_and_dense()) return {x, gate};
  return {x.contiguous(), gate.contiguous()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> prepare_backward(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                const at::Tensor& gate_in) {
  at::Tensor x, gate;
  std::tie(x, gate) = prepare(x_in, gate_in);
  TORCH_CHECK_VALUE(grad_in.sizes() == x.sizes(), "grad has shape ", grad_in.sizes(), " but x has shape ", x.sizes());
  at::Tensor grad = as_dtype(grad_in, x.scalar_type());
  if (grad.strides() != x.strides()) return {grad.contiguous(), x.contiguous(), gate.contiguous()};
  return {grad, x, gate};
}

std::tuple<at::Tensor, at::Tensor> finish_backward(at::Tensor dx, at::Tensor dgate, const at::Tensor& x_in,
                                                   const at::Tensor& gate_in) {
  return {as_dtype(dx, x_in.scalar_type()), as_dtype(dgate, gate_in.scalar_type())};
}

}  // namespace inject
}  // namespace mmh_ext
