// Discrepancy-aware distillation (DAD), host API: validation, the Gram GEMMs G = H H^T and dH = (dG + dG^T) H through
// ATen (dad.cpp); the device-specific kernels (cpu/dad.cpp, cuda/dad.cu) fill a Kernels table with the B x B math of
// dad_math.h.
#pragma once

#include "dad_math.h"

#include <ATen/ATen.h>

#include <string>
#include <tuple>
#include <vector>

namespace mmh_ext {
namespace dad {

// Where dL/dM comes from in the backward: given (cosine_discrepancy: `dM`, (B, B) contiguous, in the accumulation
// dtype) or, when `dM` is undefined, the DAD loss's +-scale (Ms - Mt) (dad_math.h: LossGrad), made inside the kernel
// from `grad` and `loss` (one element each, accumulation dtype, on the kernel's device: no host sync).
struct GradSource {
  at::Tensor dM;
  at::Tensor Ms, Mt, grad, loss;
  double sign = 1;  // +1 for the student's matrix, -1 for the teacher's
};

// Calls f with src's typed dL/dM accessor source (dad_math.h): GivenGrad, or LossGradSource. B: the matrix side.
template <typename scalar_t, typename F>
void with_grad_source(const GradSource& src, int64_t B, const F& f) {
  if (src.dM.defined()) return f(GivenGrad<scalar_t>{src.dM.const_data_ptr<scalar_t>(), B});
  f(LossGradSource<scalar_t>{src.Ms.const_data_ptr<scalar_t>(), src.Mt.const_data_ptr<scalar_t>(),
                             src.grad.const_data_ptr<scalar_t>(), src.loss.const_data_ptr<scalar_t>(),
                             static_cast<scalar_t>(src.sign)});
}

struct Kernels {
  // G (B, B) acc contiguous -> M (B, B), norm (B,) (preallocated).
  void (*matrix)(const at::Tensor& G, int64_t form, double eps, at::Tensor& M, at::Tensor& norm);
  // Ms, Mt (B, B) -> loss (0-dim, preallocated).
  void (*loss)(const at::Tensor& Ms, const at::Tensor& Mt, int64_t form, at::Tensor& loss);
  // dL/dM (src), M (B, B), norm (B,) -> S = dG + dG^T (B, B, preallocated), dG = dL/dG.
  void (*gram_grad)(const GradSource& src, const at::Tensor& M, const at::Tensor& norm, int64_t form, double eps,
                    at::Tensor& S);
};

int64_t parse_form(c10::string_view form);

std::tuple<at::Tensor, at::Tensor> cosine_forward(const at::Tensor& feat, double eps, const Kernels& k);
at::Tensor cosine_backward(const at::Tensor& grad, const at::Tensor& feat, const at::Tensor& D, const at::Tensor& norm,
                           double eps, const Kernels& k);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> loss_forward(const at::Tensor& hs,
                                                                                    const at::Tensor& ht,
                                                                                    c10::string_view form, double eps,
                                                                                    const Kernels& k);
std::vector<at::Tensor> loss_backward(const at::Tensor& grad, const at::Tensor& hs, const at::Tensor& ht,
                                      const at::Tensor& Ms, const at::Tensor& Mt, const at::Tensor& ns,
                                      const at::Tensor& nt, const at::Tensor& loss, c10::string_view form, double eps,
                                      bool need_student, bool need_teacher, const Kernels& k);

}  // namespace dad
}  // namespace mmh_ext
