// DAD CPU kernels: one row of the B x B math per task, via the shared MMH_HD functions of dad_math.h.
#include <ATen/Parallel.h>

#include <algorithm>
#include <torch/library.h>

#include "../dad.h"

namespace mmh_ext {
namespace dad {
namespace {

void matrix_cpu(const at::Tensor& G, int64_t form, double eps, at::Tensor& M, at::Tensor& norm) {
  const int64_t B = G.size(0);
  AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "dad_matrix_cpu", [&] {
    const scalar_t* g = G.const_data_ptr<scalar_t>();
    scalar_t *m = M.mutable_data_ptr<scalar_t>(), *n = norm.mutable_data_ptr<scalar_t>();
    const scalar_t e = static_cast<scalar_t>(eps);
    for (int64_t i = 0; i < B; ++i) n[i] = row_norm(g, B, i, form, e);
    at::parallel_for(0, B, std::max<int64_t>(1, 8192 / B), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) matrix_row(g, n, B, i, form, m + i * B);
    });
  });
}

void gram_grad_cpu(const at::Tensor& dM, const at::Tensor& M, const at::Tensor& norm, int64_t form, double eps,
                   at::Tensor& dG) {
  const int64_t B = M.size(0);
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "dad_gram_grad_cpu", [&] {
    const scalar_t *d = dM.const_data_ptr<scalar_t>(), *m = M.const_data_ptr<scalar_t>(),
                   *n = norm.const_data_ptr<scalar_t>();
    scalar_t* o = dG.mutable_data_ptr<scalar_t>();
    const scalar_t e = static_cast<scalar_t>(eps);
    at::parallel_for(0, B, std::max<int64_t>(1, 8192 / B), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) gram_grad_row(d, m, n, B, i, form, e, o + i * B);
    });
  });
}

const Kernels kCpu{matrix_cpu, gram_grad_cpu};

std::tuple<at::Tensor, at::Tensor> cosine_forward_cpu(const at::Tensor& feat, double eps) {
  return cosine_forward(feat, eps, kCpu);
}
at::Tensor cosine_backward_cpu(const at::Tensor& grad, const at::Tensor& feat, const at::Tensor& D,
                               const at::Tensor& norm, double eps) {
  return cosine_backward(grad, feat, D, norm, eps, kCpu);
}
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> loss_forward_cpu(const at::Tensor& hs,
                                                                                         const at::Tensor& ht,
                                                                                         c10::string_view form,
                                                                                         double eps) {
  return loss_forward(hs, ht, std::string(form), eps, kCpu);
}
std::vector<at::Tensor> loss_backward_cpu(const at::Tensor& grad, const at::Tensor& hs, const at::Tensor& ht,
                                          const at::Tensor& Ms, const at::Tensor& Mt, const at::Tensor& ns,
                                          const at::Tensor& nt, const at::Tensor& loss, c10::string_view form,
                                          double eps, bool need_s, bool need_t) {
  return loss_backward(grad, hs, ht, Ms, Mt, ns, nt, loss, std::string(form), eps, need_s, need_t, kCpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, CPU, m) {
  m.impl("cosine_discrepancy_forward", &cosine_forward_cpu);
  m.impl("cosine_discrepancy_backward", &cosine_backward_cpu);
  m.impl("dad_forward", &loss_forward_cpu);
  m.impl("dad_backward", &loss_backward_cpu);
}

}  // namespace dad
}  // namespace mmh_ext
