#include "inject.h"

#include "checks.h"

namespace mmh_ext {
namespace inject {

std::tuple<at::Tensor, at::Tensor> prepare(const at::Tensor& x, const at::Tensor& gate) {
  check_same_float({{&x, "x"}, {&gate, "gate"}});
  TORCH_CHECK_VALUE(x.sizes() == gate.sizes(), "x has shape ", x.sizes(), " but gate has shape ", gate.sizes(),
                    " (they must match; no broadcasting)");
  if (x.strides() == gate.strides() && x.is_non_overlapping_and_dense()) return {x, gate};
  return {x.contiguous(), gate.contiguous()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> prepare_backward(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                                const at::Tensor& gate_in) {
  at::Tensor x, gate;
  std::tie(x, gate) = prepare(x_in, gate_in);
  TORCH_CHECK_VALUE(grad_in.sizes() == x.sizes(), "grad has shape ", grad_in.sizes(), " but x has shape ", x.sizes());
  at::Tensor grad = grad_in.to(x.scalar_type());
  if (grad.strides() != x.strides()) return {grad.contiguous(), x.contiguous(), gate.contiguous()};
  return {grad, x, gate};
}

}  // namespace inject
}  // namespace mmh_ext
