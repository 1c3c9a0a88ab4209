// DAD: validation and the device-independent part (GEMMs via ATen); the B x B kernels come from cpu/ or cuda/.
#include "dad.h"

#include "checks.h"

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
  return f.reshape({f.size(0), -1}).to(acc);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> matrix(const at::Tensor& H, int64_t form, double eps,
                                                      const Kernels& k) {
  const int64_t B = H.size(0);
  at::Tensor G = at::mm(H, H.t());
  at::Tensor M = at::empty({B, B}, H.options());
  at::Tensor n = at::empty({B}, H.options());
  k.matrix(G, form, eps, M, n);
  return {M, n, G};
}

// dH = (dG + dG^T) H, returned in the dtype/shape of `like`.
at::Tensor feat_grad(const at::Tensor& dM, const at::Tensor& M, const at::Tensor& n, const at::Tensor& like,
                     int64_t form, double eps, const Kernels& k) {
  const int64_t B = M.size(0);
  at::Tensor dG = at::empty({B, B}, M.options());
  k.gram_grad(dM.contiguous(), M, n, form, eps, dG);
  at::Tensor H = flat(like, "feat", M.scalar_type());
  return at::mm(dG + dG.t(), H).view(like.sizes()).to(like.scalar_type());
}

void check_eps(double eps) { TORCH_CHECK_VALUE(eps > 0, "eps must be positive, got ", eps); }

}  // namespace

int64_t parse_form(const std::string& form) {
  if (form == "paper") return kPaper;
  if (form == "sp") return kSp;
  TORCH_CHECK_VALUE(false, "form must be \"paper\" or \"sp\", got \"", form, "\"");
}

std::tuple<at::Tensor, at::Tensor> cosine_forward(const at::Tensor& feat, double eps, const Kernels& k) {
  check_float_same_device({{&feat, "feat"}});
  check_eps(eps);
  at::Tensor M, n, G;
  std::tie(M, n, G) = matrix(flat(feat, "feat", acc_dtype({&feat})), kPaper, eps, k);
  return {M, n};
}

at::Tensor cosine_backward(const at::Tensor& grad, const at::Tensor& feat, const at::Tensor& D, const at::Tensor& norm,
                           double eps, const Kernels& k) {
  return feat_grad(grad.to(D.scalar_type()), D, norm, feat, kPaper, eps, k);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> loss_forward(const at::Tensor& hs,
                                                                                     const at::Tensor& ht,
                                                                                     const std::string& form_name,
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
  at::Tensor Ms, ns, Gs, Mt, nt, Gt;
  std::tie(Ms, ns, Gs) = matrix(Hs, form, eps, k);
  std::tie(Mt, nt, Gt) = matrix(Ht, form, eps, k);
  at::Tensor diff = Ms - Mt;
  at::Tensor loss = form == kPaper ? diff.square().sum().sqrt() : diff.square().mean();
  return {loss, Ms, Mt, ns, nt};
}

std::vector<at::Tensor> loss_backward(const at::Tensor& grad, const at::Tensor& hs, const at::Tensor& ht,
                                      const at::Tensor& Ms, const at::Tensor& Mt, const at::Tensor& ns,
                                      const at::Tensor& nt, const at::Tensor& loss, const std::string& form_name,
                                      double eps, bool need_student, bool need_teacher, const Kernels& k) {
  const int64_t form = parse_form(form_name);
  const int64_t B = Ms.size(0);
  at::Tensor g = grad.to(Ms.scalar_type());
  at::Tensor diff = Ms - Mt;
  at::Tensor dMs;
  if (form == kPaper) {
    // d||X||_F / dX = X / ||X||, taken as 0 where the norm is 0 (the two matrices agree: B = 1, identical features).
    at::Tensor l = loss.to(Ms.scalar_type());
    dMs = at::where(l > 0, diff * (g / l.clamp_min(eps)), at::zeros_like(diff));
  } else {
    dMs = diff * (g * 2.0 / static_cast<double>(B * B));
  }
  at::Tensor none = at::empty({0}, hs.options());
  std::vector<at::Tensor> out{none, none};
  if (need_student) out[0] = feat_grad(dMs, Ms, ns, hs, form, eps, k);
  if (need_teacher) out[1] = feat_grad(-dMs, Mt, nt, ht, form, eps, k);
  return out;
}

}  // namespace dad
}  // namespace mmh_ext
