// DAD: the operators' schemas, the argument checks (the only ones: the Python API calls the op as it is), the
// device-independent part (GEMMs via ATen) and the autograd kernels; the B x B kernels come from cpu/ or cuda/.
#include "dad.h"

#include "checks.h"
#include "library.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>

#include <string>

namespace mmh_ext {
namespace dad {

namespace {

// (B, ...) -> (B, D) in the accumulation dtype `acc`; a view when the input is contiguous and already of that dtype.
// float16/bfloat16 features are converted to float32 here (the Gram GEMM then runs in float32; ATen has no CPU GEMM
// with a float32 output from half inputs).
at::Tensor flat(const at::Tensor& f, const char* name, at::ScalarType acc) {
  TORCH_CHECK_VALUE(f.dim() >= 2, name, " must have a batch dimension and at least one feature dimension, got shape ",
                    f.sizes());
  TORCH_CHECK_VALUE(f.size(0) > 0, name, " has an empty batch (B = 0)");
  TORCH_CHECK_VALUE(f.numel() > 0, name, " has no features: shape ", f.sizes());
  return as_dtype(f.dim() == 2 ? f : f.reshape({f.size(0), -1}), acc);
}

// M (B, B) and the norms (B,) of H (B, D): one GEMM and one kernel.
std::tuple<at::Tensor, at::Tensor> matrix(const at::Tensor& H, int64_t form, double eps, const Kernels& k) {
  const int64_t B = H.size(0);
  at::Tensor G = at::mm(H, H.t());
  at::Tensor M = at::empty({B, B}, H.options());
  at::Tensor n = at::empty({B}, H.options());
  k.matrix(G, form, eps, M, n);
  return {M, n};
}

// dH = S H with S = dG + dG^T (written by the kernel), returned in the dtype/shape of `like`.
at::Tensor feat_grad(const GradSource& src, const at::Tensor& M, const at::Tensor& n, const at::Tensor& like,
                     int64_t form, double eps, const Kernels& k) {
  const int64_t B = M.size(0);
  at::Tensor S = at::empty({B, B}, M.options());
  k.gram_grad(src, M, n, form, eps, S);
  at::Tensor dH = at::mm(S, flat(like, "feat", M.scalar_type()));
  return as_dtype(like.dim() == 2 ? dH : dH.view(like.sizes()), like.scalar_type());
}

void check_eps(double eps) { TORCH_CHECK_VALUE(eps > 0, "eps must be positive, got ", eps); }

// The saved matrices and norms of a backward call, as the kernels read them (contiguous() returns the tensor itself,
// without a dispatcher call, when it already is).
void check_saved(const at::Tensor& M, const at::Tensor& n, const char* name) {
  TORCH_CHECK_VALUE(M.dim() == 2 && M.size(0) == M.size(1) && n.dim() == 1 && n.size(0) == M.size(0), name,
                    ": expected a (B, B) matrix and (B,) norms, got ", M.sizes(), " and ", n.sizes());
  TORCH_CHECK_VALUE(M.is_contiguous() && n.is_contiguous() && n.scalar_type() == M.scalar_type(), name,
                    ": the matrix and norms must be contiguous and of one dtype (the forward's outputs)");
}

}  // namespace

int64_t parse_form(c10::string_view form) {
  if (form == "paper") return kPaper;
  if (form == "sp") return kSp;
  TORCH_CHECK_VALUE(false, "form must be \"paper\" or \"sp\", got \"", std::string(form), "\"");
}

std::tuple<at::Tensor, at::Tensor> cosine_forward(const at::Tensor& feat, double eps, const Kernels& k) {
  check_float_same_device({{&feat, "feat"}});
  check_eps(eps);
  return matrix(flat(feat, "feat", acc_dtype({&feat})), kPaper, eps, k);
}

at::Tensor cosine_backward(const at::Tensor& grad, const at::Tensor& feat, const at::Tensor& D, const at::Tensor& norm,
                           double eps, const Kernels& k) {
  check_saved(D, norm, "discrepancy");
  TORCH_CHECK_VALUE(grad.sizes() == D.sizes(), "grad has shape ", grad.sizes(), " but discrepancy has ", D.sizes());
  GradSource src;
  src.dM = as_dtype(grad, D.scalar_type()).contiguous();
  return feat_grad(src, D, norm, feat, kPaper, eps, k);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> loss_forward(const at::Tensor& hs,
                                                                                    const at::Tensor& ht,
                                                                                    c10::string_view form_name,
                                                                                    double eps, const Kernels& k) {
  // Student and teacher may differ in dtype (a student under autocast against a float32 teacher): both sides are
  // computed in one accumulation dtype (float64 when either is float64, float32 otherwise).
  check_float_same_device({{&hs, "student_feat"}, {&ht, "teacher_feat"}});
  check_eps(eps);
  const int64_t form = parse_form(form_name);
  const auto acc = acc_dtype({&hs, &ht});
  at::Tensor Hs = flat(hs, "student_feat", acc), Ht = flat(ht, "teacher_feat", acc);
  TORCH_CHECK_VALUE(Hs.size(0) == Ht.size(0), "student_feat has batch size ", Hs.size(0), " but teacher_feat has ",
                    Ht.size(0));
  auto [Ms, ns] = matrix(Hs, form, eps, k);
  auto [Mt, nt] = matrix(Ht, form, eps, k);
  at::Tensor loss = at::empty({}, Ms.options());
  k.loss(Ms, Mt, form, loss);  // one kernel: no difference matrix, no separate square / sum / sqrt
  return {loss, Ms, Mt, ns, nt};
}

std::vector<at::Tensor> loss_backward(const at::Tensor& grad, const at::Tensor& hs, const at::Tensor& ht,
                                      const at::Tensor& Ms, const at::Tensor& Mt, const at::Tensor& ns,
                                      const at::Tensor& nt, const at::Tensor& loss, c10::string_view form_name,
                                      double eps, bool need_student, bool need_teacher, const Kernels& k) {
  const int64_t form = parse_form(form_name);
  check_saved(Ms, ns, "student_matrix");
  check_saved(Mt, nt, "teacher_matrix");
  TORCH_CHECK_VALUE(Mt.sizes() == Ms.sizes() && Mt.scalar_type() == Ms.scalar_type(),
                    "student_matrix and teacher_matrix differ in shape or dtype: ", Ms.sizes(), " ", Ms.scalar_type(),
                    " and ", Mt.sizes(), " ", Mt.scalar_type());
  TORCH_CHECK_VALUE(grad.numel() == 1 && loss.numel() == 1, "grad and loss must have one element each, got shapes ",
                    grad.sizes(), " and ", loss.sizes());
  TORCH_CHECK_VALUE(grad.device() == Ms.device() && loss.device() == Ms.device(), "grad (on ", grad.device(),
                    ") and loss (on ", loss.device(), ") must be on the matrices' device, ", Ms.device());
  // dL/dM = +-scale (Ms - Mt) is made inside the gradient kernel from grad and the loss (dad_math.h: LossGrad).
  GradSource src;
  src.Ms = Ms;
  src.Mt = Mt;
  src.grad = as_dtype(grad, Ms.scalar_type());
  src.loss = as_dtype(loss, Ms.scalar_type());
  std::vector<at::Tensor> out(2);
  if (need_student) out[0] = feat_grad(src, Ms, ns, hs, form, eps, k);
  src.sign = -1;
  if (need_teacher) out[1] = feat_grad(src, Mt, nt, ht, form, eps, k);
  for (int side = 0; side < 2; ++side)
    if (!out[side].defined()) out[side] = at::empty({0}, hs.options());  // the side not asked for: a placeholder
  return out;
}

TORCH_LIBRARY_FRAGMENT(mmh_ext, m) {
  define_op(m, "cosine_discrepancy_forward(Tensor feat, float eps) -> (Tensor discrepancy, Tensor norm)");
  define_op(m,
            "cosine_discrepancy_backward(Tensor grad, Tensor feat, Tensor discrepancy, Tensor norm, float eps) -> "
            "Tensor");
  define_op(m,
            "dad_forward(Tensor student_feat, Tensor teacher_feat, str form, float eps) -> "
            "(Tensor loss, Tensor student_matrix, Tensor teacher_matrix, Tensor student_norm, Tensor teacher_norm)");
  define_op(m,
            "dad_backward(Tensor grad, Tensor student_feat, Tensor teacher_feat, Tensor student_matrix, "
            "Tensor teacher_matrix, Tensor student_norm, Tensor teacher_norm, Tensor loss, str form, float eps, "
            "bool need_student, bool need_teacher) -> Tensor[]");
}

// Autograd of dad_forward and cosine_discrepancy_forward, in C++ (as RAD's in csrc/rad.cpp): one dispatcher call per
// forward and one per backward, no Python in between. (The Python torch.library.register_autograd wrapper cost tens
// of microseconds per call, more than all the kernels at benchmark sizes.) torch.compile traces through them like any
// C++ autograd kernel; dad_backward and cosine_discrepancy_backward have fake implementations for that
// (mmh_ext/dad.py).
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using CosForwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double);
using CosBackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, double);
using LossForwardSig = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&,
                                                                                              const at::Tensor&,
                                                                                              c10::string_view, double);
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
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // no autograd of its own: straight to its kernel
    out[0] = op.call(grads[0], saved[0], saved[1], saved[2], ctx->saved_data["eps"].toDouble());
    return out;
  }
};

class LossFunction : public torch::autograd::Function<LossFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hs, const at::Tensor& ht, c10::string_view form,
                               double eps) {
    static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mmh_ext::dad_forward", "").typed<LossForwardSig>();
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
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // no autograd of its own: straight to its kernel
    std::vector<at::Tensor> g =
        op.call(grads[0], s[0], s[1], s[2], s[3], s[4], s[5], s[6], ctx->saved_data["form"].toStringRef(),
                ctx->saved_data["eps"].toDouble(), need_s, need_t);
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
