// Autograd of dad_forward and cosine_discrepancy_forward, in C++ (as rad_autograd.cpp): one dispatcher call per
// forward and one per backward, no Python in between. (The Python torch.library.register_autograd wrapper cost tens
// of microseconds per call, more than all the kernels at benchmark sizes.) torch.compile traces through them like any
// C++ autograd kernel; dad_backward and cosine_discrepancy_backward have fake implementations for that
// (mmh_ext/dad.py).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "checks.h"

#include <string>

namespace mmh_ext {
namespace dad {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using CosForwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double);
using CosBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double);
using LossForwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, c10::string_view, double);
using LossBackwardSig = std::vector<at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, const at::Tensor&, c10::string_view, double, bool,
                                                bool);

class CosineFunction : public torch::autograd::Function<CosineFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& feat, double eps) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mmh_ext::cosine_discrepancy_forward", "")
                         .typed<CosForwardSig>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [d, norm] = op.call(feat, eps);
    ctx->mark_non_differentiable({norm});
    ctx->set_materialize_grads(false);  // the norm gets no gradient: no zeros are made for it
    ctx->save_for_backward({feat, d, norm});
    ctx->saved_data["eps"] = eps;
    return {d, norm};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("mmh_ext::cosine_discrepancy_backward", "")
                         .typed<CosBackwardSig>();
    variable_list out(2);  // inputs: feat, eps
    if (!grads[0].defined() || !ctx->needs_input_grad(0)) return out;
    const auto saved = ctx->get_saved_variables();
    check_no_double_backward(grads, saved, "mmh_ext.cosine_discrepancy", "mmh_ext.reference.cosine_discrepancy");
    out[0] = op.call(grads[0], saved[0], saved[1], saved[2], ctx->saved_data["eps"].toDouble());
    return out;
  }
};

class LossFunction : public torch::autograd::Function<LossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hs, const at::Tensor& ht, c10::string_view form,
                               double eps) {
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mmh_ext::dad_forward", "").typed<LossForwardSig>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, ms, mt, ns, nt] = op.call(hs, ht, form, eps);
    ctx->mark_non_differentiable({ms, mt, ns, nt});
    ctx->set_materialize_grads(false);  // the matrices and norms get no gradient: no zeros are made for them
    // a side's features serve only its own gradient: not kept when they need none (a frozen teacher's feature map)
    const auto keep = [](const at::Tensor& h) { return h.requires_grad() ? h : at::empty({0}, h.options()); };
    ctx->save_for_backward({keep(hs), keep(ht), ms, mt, ns, nt, loss});
    ctx->saved_data["form"] = std::string(form);
    ctx->saved_data["eps"] = eps;
    return {loss, ms, mt, ns, nt};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mmh_ext::dad_backward", "").typed<LossBackwardSig>();
    variable_list out(4);  // inputs: student_feat, teacher_feat, form, eps
    const bool need_s = ctx->needs_input_grad(0), need_t = ctx->needs_input_grad(1);
    if (!grads[0].defined() || !(need_s || need_t)) return out;
    const auto s = ctx->get_saved_variables();
    check_no_double_backward(grads, s, "mmh_ext.dad_loss", "mmh_ext.reference.dad_loss");
    std::vector<at::Tensor> g = op.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6],
                                        ctx->saved_data["form"].toStringRef(), ctx->saved_data["eps"].toDouble(),
                                        need_s, need_t);
    if (need_s) out[0] = g[0];  // the side not asked for is an empty placeholder
    if (need_t) out[1] = g[1];
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> cosine_autograd(const at::Tensor& feat, double eps) {
  auto out = CosineFunction::apply(feat, eps);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> loss_autograd(const at::Tensor& hs,
                                                                                     const at::Tensor& ht,
                                                                                     c10::string_view form,
                                                                                     double eps) {
  auto out = LossFunction::apply(hs, ht, form, eps);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, Autograd, m) {
  m.impl("cosine_discrepancy_forward", &cosine_autograd);
  m.impl("dad_forward", &loss_autograd);
}

}  // namespace dad
}  // namespace mmh_ext
