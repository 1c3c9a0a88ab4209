// Injection: the operators' schemas, the argument checks (the only ones: the Python API calls the op as it is),
// dtype promotion and layout, and the autograd kernel; the kernels come from cpu/ or cuda/.
#include "inject.h"

#include "checks.h"
#include "library.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>

namespace mmh_ext {
namespace inject {

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

TORCH_LIBRARY_FRAGMENT(mmh_ext, m) {
  define_op(m, "cross_stream_inject(Tensor x, Tensor gate) -> Tensor");
  define_op(m, "cross_stream_inject_backward(Tensor grad, Tensor x, Tensor gate) -> (Tensor grad_x, Tensor grad_gate)");
}

// Autograd of cross_stream_inject, in C++ (as RAD's in csrc/rad.cpp): one dispatcher call per forward and one per
// backward, no Python in between. (The Python torch.library.register_autograd wrapper cost more than the two
// elementwise kernels at small and medium sizes.) torch.compile traces through it like any C++ autograd kernel;
// cross_stream_inject_backward has a fake implementation for that (mmh_ext/inject.py).
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSig = at::Tensor(const at::Tensor&, const at::Tensor&);
using BackwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&);

class InjectFunction : public torch::autograd::Function<InjectFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& gate) {
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mmh_ext::cross_stream_inject", "").typed<ForwardSig>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({x, gate});  // the inputs only: the output is not needed by the backward
    return op.call(x, gate);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mmh_ext::cross_stream_inject_backward", "")
                         .typed<BackwardSig>();
    variable_list out(2);
    if (!grads[0].defined()) return out;
    const auto saved = ctx->get_saved_variables();
    check_no_double_backward(grads, saved, "mmh_ext.cross_stream_inject", "mmh_ext.reference.cross_stream_inject");
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // no autograd of its own: straight to its kernel
    if (!ctx->needs_input_grad(1)) {
      // A frozen gate (a frozen stream's signal, thesis step 3): dx = grad * relu(gate) is the forward's own one-pass
      // kernel; the full backward would also compute the gate's gradient only to drop it (about 1.4x the time).
      static auto fwd =
          c10::Dispatcher::singleton().findSchemaOrThrow("mmh_ext::cross_stream_inject", "").typed<ForwardSig>();
      if (ctx->needs_input_grad(0)) out[0] = as_dtype(fwd.call(grads[0], saved[1]), saved[0].scalar_type());
      return out;
    }
    auto [dx, dgate] = op.call(grads[0], saved[0], saved[1]);  // one pass computes both
    if (ctx->needs_input_grad(0)) out[0] = dx;
    if (ctx->needs_input_grad(1)) out[1] = dgate;
    return out;
  }
};

at::Tensor inject_autograd(const at::Tensor& x, const at::Tensor& gate) { return InjectFunction::apply(x, gate); }

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, Autograd, m) { m.impl("cross_stream_inject", &inject_autograd); }

}  // namespace inject
}  // namespace mmh_ext
