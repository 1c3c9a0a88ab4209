// DAD CPU kernels: rows of the B x B math in parallel, via the shared MMH_HD functions of dad_math.h (the same the
// CUDA kernels call per warp or per entry).
#include <ATen/Parallel.h>

#include <algorithm>
#include <torch/library.h>
#include <vector>

#include "../dad.h"

namespace mmh_ext {
namespace dad {
namespace {

// Rows per task: about 8192 entries of B x B work each.
int64_t row_grain(int64_t B) { return std::max<int64_t>(1, 8192 / B); }

void matrix_cpu(const at::Tensor& G, int64_t form, double eps, at::Tensor& M, at::Tensor& norm) {
  const int64_t B = G.size(0);
  AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "dad_matrix_cpu", [&] {
    const scalar_t* g = G.const_data_ptr<scalar_t>();
    scalar_t *m = M.mutable_data_ptr<scalar_t>(), *n = norm.mutable_data_ptr<scalar_t>();
    const scalar_t e = static_cast<scalar_t>(eps);
    if (form == kPaper) {  // the norms are O(B): no task for them
      for (int64_t i = 0; i < B; ++i) n[i] = row_norm(g, B, i, form, e);
    } else {
      at::parallel_for(0, B, row_grain(B), [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) n[i] = row_norm(g, B, i, form, e);
      });
    }
    at::parallel_for(0, B, row_grain(B), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        for (int64_t j = 0; j < B; ++j) m[i * B + j] = matrix_entry(g[i * B + j], n[i], n[j], form);
    });
  });
}

void loss_cpu(const at::Tensor& Ms, const at::Tensor& Mt, int64_t form, at::Tensor& loss) {
  const int64_t B = Ms.size(0);
  AT_DISPATCH_FLOATING_TYPES(Ms.scalar_type(), "dad_loss_cpu", [&] {
    const scalar_t *s = Ms.const_data_ptr<scalar_t>(), *t = Mt.const_data_ptr<scalar_t>();
    // Row sums in parallel, then their sum in order: the same result for any number of threads.
    std::vector<scalar_t> rows(B);
    at::parallel_for(0, B, row_grain(B), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        scalar_t r = 0;
        for (int64_t j = 0; j < B; ++j) r += loss_term(s[i * B + j], t[i * B + j]);
        rows[i] = r;
      }
    });
    scalar_t sum = 0;
    for (int64_t i = 0; i < B; ++i) sum += rows[i];
    *loss.mutable_data_ptr<scalar_t>() = loss_from(sum, B, form);
  });
}

template <typename scalar_t, typename Src>
void gram_grad_impl(const Src& src, const at::Tensor& M, const at::Tensor& norm, int64_t form, double eps,
                    at::Tensor& S) {
  const int64_t B = M.size(0);
  const scalar_t *m = M.const_data_ptr<scalar_t>(), *n = norm.const_data_ptr<scalar_t>();
  scalar_t* o = S.mutable_data_ptr<scalar_t>();
  const scalar_t e = static_cast<scalar_t>(eps);
  const auto dM = grad_accessor(src, B, form, e);
  std::vector<scalar_t> red(B);  // the row reductions, all of them first (sp's entry (i, j) needs rows i and j)
  at::parallel_for(0, B, row_grain(B), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) red[i] = grad_row(dM, m, n, B, i, form, e);
  });
  at::parallel_for(0, B, row_grain(B), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t j = 0; j < B; ++j)
        o[i * B + j] = sym_grad_entry(dM, m, B, i, j, n[i], n[j], red[i], red[j], form, e);
  });
}

void gram_grad_cpu(const GradSource& src, const at::Tensor& M, const at::Tensor& norm, int64_t form, double eps,
                   at::Tensor& S) {
  const int64_t B = M.size(0);
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "dad_gram_grad_cpu", [&] {
    with_grad_source<scalar_t>(src, B, [&](const auto& s) { gram_grad_impl<scalar_t>(s, M, norm, form, eps, S); });
  });
}

const Kernels kCpu{matrix_cpu, loss_cpu, gram_grad_cpu};

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
  return loss_forward(hs, ht, form, eps, kCpu);
}
std::vector<at::Tensor> loss_backward_cpu(const at::Tensor& grad, const at::Tensor& hs, const at::Tensor& ht,
                                          const at::Tensor& Ms, const at::Tensor& Mt, const at::Tensor& ns,
                                          const at::Tensor& nt, const at::Tensor& loss, c10::string_view form,
                                          double eps, bool need_s, bool need_t) {
  return loss_backward(grad, hs, ht, Ms, Mt, ns, nt, loss, form, eps, need_s, need_t, kCpu);
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
