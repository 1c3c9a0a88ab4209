// Autograd of cross_stream_inject, in C++ (as rad_autograd.cpp): one dispatcher call per forward and one per backward,
// no Python in between. (The Python torch.library.register_autograd wrapper cost more than the two elementwise
// kernels at small and medium sizes.) torch.compile traces through it like any C++ autograd kernel;
// cross_stream_inject_backward has a fake implementation for that (mmh_ext/inject.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "checks.h"

namespace mmh_ext {
namespace inject {
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
