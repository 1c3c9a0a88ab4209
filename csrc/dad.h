// Discrepancy-aware distillation (DAD), host API: validation, the Gram GEMMs G = H H^T and dH = (dG + dG^T) H through
// ATen (dad.cpp); the device-specific kernels (cpu/dad.cpp, cuda/dad.cu) fill a Kernels table with the per-row math
// of dad_math.h.
#pragma once

#include "dad_math.h"

#include <ATen/ATen.h>

#include <string>
#include <tuple>
#include <vector>

namespace mmh_ext {
namespace dad {

struct Kernels {
  // G (B, B) acc contiguous -> M (B, B), norm (B,) (preallocated).
  void (*matrix)(const at::Tensor& G, int64_t form, double eps, at::Tensor& M, at::Tensor& norm);
  // dM, M (B, B), norm (B,) -> dG (B, B) (preallocated).
  void (*gram_grad)(const at::Tensor& dM, const at::Tensor& M, const at::Tensor& norm, int64_t form, double eps,
                    at::Tensor& dG);
};

int64_t parse_form(const std::string& form);

std::tuple<at::Tensor, at::Tensor> cosine_forward(const at::Tensor& feat, double eps, const Kernels& k);
at::Tensor cosine_backward(const at::Tensor& grad, const at::Tensor& feat, const at::Tensor& D, const at::Tensor& norm,
                           double eps, const Kernels& k);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> loss_forward(const at::Tensor& hs,
                                                                                     const at::Tensor& ht,
                                                                                     const std::string& form,
                                                                                     double eps, const Kernels& k);
std::vector<at::Tensor> loss_backward(const at::Tensor& grad, const at::Tensor& hs, const at::Tensor& ht,
                                      const at::Tensor& Ms, const at::Tensor& Mt, const at::Tensor& ns,
                                      const at::Tensor& nt, const at::Tensor& loss, const std::string& form, double eps,
                                      bool need_student, bool need_teacher, const Kernels& k);

}  // namespace dad
}  // namespace mmh_ext
