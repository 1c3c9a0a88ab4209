// DAD CUDA kernels: one thread per row of the B x B math, calling the shared MMH_HD functions of dad_math.h (the same
// the CPU kernels call). The Gram GEMMs and dH = (dG + dG^T) H go through ATen (cuBLAS) in dad.cpp.
#include <torch/library.h>

#include "../dad.h"
#include "launch.cuh"

namespace mmh_ext {
namespace dad {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

template <typename acc>
__global__ void norm_kernel(const acc* G, int64_t B, int64_t form, acc eps, acc* norm) {
  MMH_GRID_STRIDE(i, B) { norm[i] = row_norm(G, B, i, form, eps); }
}

template <typename acc>
__global__ void matrix_kernel(const acc* G, const acc* norm, int64_t B, int64_t form, acc* M) {
  MMH_GRID_STRIDE(i, B) { matrix_row(G, norm, B, i, form, M + i * B); }
}

template <typename acc>
__global__ void gram_grad_kernel(const acc* dM, const acc* M, const acc* norm, int64_t B, int64_t form, acc eps,
                                 acc* dG) {
  MMH_GRID_STRIDE(i, B) { gram_grad_row(dM, M, norm, B, i, form, eps, dG + i * B); }
}

void matrix_cuda(const at::Tensor& G, int64_t form, double eps, at::Tensor& M, at::Tensor& norm) {
  const int64_t B = G.size(0);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "dad_matrix_cuda", [&] {
    norm_kernel<scalar_t><<<blocks_for(B), kThreads, 0, stream>>>(G.const_data_ptr<scalar_t>(), B, form,
                                                                   static_cast<scalar_t>(eps),
                                                                   norm.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    matrix_kernel<scalar_t><<<blocks_for(B), kThreads, 0, stream>>>(
        G.const_data_ptr<scalar_t>(), norm.const_data_ptr<scalar_t>(), B, form, M.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void gram_grad_cuda(const at::Tensor& dM, const at::Tensor& M, const at::Tensor& norm, int64_t form, double eps,
                    at::Tensor& dG) {
  const int64_t B = M.size(0);
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "dad_gram_grad_cuda", [&] {
    gram_grad_kernel<scalar_t><<<blocks_for(B), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        dM.const_data_ptr<scalar_t>(), M.const_data_ptr<scalar_t>(), norm.const_data_ptr<scalar_t>(), B, form,
        static_cast<scalar_t>(eps), dG.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

const Kernels kCuda{matrix_cuda, gram_grad_cuda};

std::tuple<at::Tensor, at::Tensor> cosine_forward_cuda(const at::Tensor& feat, double eps) {
  const c10::cuda::CUDAGuard guard(feat.device());
  return cosine_forward(feat, eps, kCuda);
}
at::Tensor cosine_backward_cuda(const at::Tensor& grad, const at::Tensor& feat, const at::Tensor& D,
                                const at::Tensor& norm, double eps) {
  const c10::cuda::CUDAGuard guard(feat.device());
  return cosine_backward(grad, feat, D, norm, eps, kCuda);
}
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> loss_forward_cuda(const at::Tensor& hs,
                                                                                          const at::Tensor& ht,
                                                                                          c10::string_view form,
                                                                                          double eps) {
  const c10::cuda::CUDAGuard guard(hs.device());
  return loss_forward(hs, ht, std::string(form), eps, kCuda);
}
std::vector<at::Tensor> loss_backward_cuda(const at::Tensor& grad, const at::Tensor& hs, const at::Tensor& ht,
                                           const at::Tensor& Ms, const at::Tensor& Mt, const at::Tensor& ns,
                                           const at::Tensor& nt, const at::Tensor& loss, c10::string_view form,
                                           double eps, bool need_s, bool need_t) {
  const c10::cuda::CUDAGuard guard(hs.device());
  return loss_backward(grad, hs, ht, Ms, Mt, ns, nt, loss, std::string(form), eps, need_s, need_t, kCuda);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, CUDA, m) {
  m.impl("cosine_discrepancy_forward", &cosine_forward_cuda);
  m.impl("cosine_discrepancy_backward", &cosine_backward_cuda);
  m.impl("dad_forward", &loss_forward_cuda);
  m.impl("dad_backward", &loss_backward_cuda);
}

}  // namespace dad
}  // namespace mmh_ext
