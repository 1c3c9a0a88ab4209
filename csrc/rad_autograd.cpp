// Autograd of rad_forward, in C++ (as torchvision's csrc/ops/autograd/): one dispatcher call per forward and one per
// backward, no Python in between. (A Python torch.library.register_autograd formula costs more than the whole
// kernel at small and medium sizes: the generic wrapper rebuilds the schema's defaults and re-enters Python twice.)
// torch.compile traces through it like any C++ autograd kernel; rad_backward has a fake implementation for that.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "checks.h"

namespace mmh_ext {
namespace rad {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    int64_t, at::IntArrayRef, double);
using BackwardSig = std::vector<at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                            const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                            const at::Tensor&, c10::SymIntArrayRef, c10::SymIntArrayRef, at::ScalarType,
                                            at::ScalarType, int64_t, at::IntArrayRef, double, bool, bool);

class RadFunction : public torch::autograd::Function<RadFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& fs, const at::Tensor& ft,
                               const at::Tensor& ws, const at::Tensor& bs, const at::Tensor& wt,
                               const at::Tensor& bt, int64_t grid, at::IntArrayRef levels, double temperature) {
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mmh_ext::rad_forward", "").typed<ForwardSig>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, gs, gt, ls, lt] = op.call(fs, ft, ws, bs, wt, bt, grid, levels, temperature);
    ctx->mark_non_differentiable({gs, gt, ls, lt});
    ctx->set_materialize_grads(false);  // the auxiliary outputs get no gradient: no zeros are made for them
    // a network's pooled cells serve only its weight's gradient: not kept when that weight needs none (a frozen
    // teacher's 2 MiB at B = 64, C = 512, grid 4)
    const auto keep_pooled = [](const at::Tensor& pooled, const at::Tensor& w) {
      return w.requires_grad() ? pooled : at::empty({0}, pooled.options());
    };
    ctx->save_for_backward({keep_pooled(gs, ws), keep_pooled(gt, wt), ls, lt, ws, wt});
    ctx->saved_data["grid"] = grid;
    ctx->saved_data["levels"] = levels.vec();
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["shw"] = fs.sym_sizes().slice(2).vec();  // symbolic under torch.compile(dynamic=True)
    ctx->saved_data["thw"] = ft.sym_sizes().slice(2).vec();
    ctx->saved_data["dtypes"] = std::vector<int64_t>{static_cast<int64_t>(fs.scalar_type()),
                                                     static_cast<int64_t>(ft.scalar_type()),
                                                     static_cast<int64_t>(bs.scalar_type()),
                                                     static_cast<int64_t>(bt.scalar_type())};
    return {loss, gs, gt, ls, lt};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        c10::Dispatcher::singleton().findSchemaOrThrow("mmh_ext::rad_backward", "").typed<BackwardSig>();
    // inputs: student_feat, teacher_feat, student_w, student_b, teacher_w, teacher_b, grid, levels, temperature
    variable_list out(9);
    const bool need_s = ctx->needs_input_grad(0) || ctx->needs_input_grad(2) || ctx->needs_input_grad(3);
    const bool need_t = ctx->needs_input_grad(1) || ctx->needs_input_grad(4) || ctx->needs_input_grad(5);
    if (!grads[0].defined() || !(need_s || need_t)) return out;
    const auto saved = ctx->get_saved_variables();
    check_no_double_backward(grads, saved, "mmh_ext.rad_loss", "mmh_ext.reference.rad_loss");
    const auto dtypes = ctx->saved_data["dtypes"].toIntVector();
    const auto dt = [&](int i) { return static_cast<at::ScalarType>(dtypes[i]); };
    const auto shw = ctx->saved_data["shw"].toSymIntVector(), thw = ctx->saved_data["thw"].toSymIntVector();
    const auto levels = ctx->saved_data["levels"].toIntVector();
    std::vector<at::Tensor> g = op.call(grads[0], saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], shw, thw,
                                        dt(0), dt(1), ctx->saved_data["grid"].toInt(), levels,
                                        ctx->saved_data["temperature"].toDouble(), need_s, need_t);
    // g: d student_feat, d student_w, d student_b (acc dtype), d teacher_feat, d teacher_w, d teacher_b (acc dtype)
    const auto keep = [&](int input, const at::Tensor& t) { return ctx->needs_input_grad(input) ? t : at::Tensor(); };
    out[0] = keep(0, g[0]);
    out[2] = keep(2, g[1]);
    if (ctx->needs_input_grad(3)) out[3] = g[2].to(dt(2));  // d bias: from the acc dtype to the bias's
    out[1] = keep(1, g[3]);
    out[4] = keep(4, g[4]);
    if (ctx->needs_input_grad(5)) out[5] = g[5].to(dt(3));
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rad_forward_autograd(
    const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs, const at::Tensor& wt,
    const at::Tensor& bt, int64_t grid, at::IntArrayRef levels, double temperature) {
  auto out = RadFunction::apply(fs, ft, ws, bs, wt, bt, grid, levels, temperature);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, Autograd, m) { m.impl("rad_forward", &rad_forward_autograd); }

}  // namespace rad
}  // namespace mmh_ext
