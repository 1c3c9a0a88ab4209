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

}  // namespace inject
}  // namespace mmh_ext
