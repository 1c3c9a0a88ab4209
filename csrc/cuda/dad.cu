// DAD CUDA kernels: the B x B math of dad_math.h (the same MMH_HD functions the CPU kernels call), parallel over the
// entries: a warp per row where a row reduction is needed (the norms, the backward's row sums; the lanes stride over
// the row and combine with shuffles), a thread per entry otherwise, one block for the loss. The Gram GEMMs and
// dH = S H go through ATen (cuBLAS) in dad.cpp. Each forward side is one launch, the loss one; each backward side one
// launch for "paper" (only the diagonal needs its row's reduction) and two for "sp" (entry (i, j) needs rows i and j).
#include <torch/library.h>

#include "../dad.h"
#include "launch.cuh"

namespace mmh_ext {
namespace dad {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

constexpr int kWarp = 32;
constexpr int kLossThreads = 1024;

// The sum over the warp, the same value in every lane (a butterfly: lanes l and l^o add the same two numbers).
template <typename acc>
__device__ __forceinline__ acc warp_sum(acc v) {
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Blocks of kThreads threads for one warp per row.
dim3 row_blocks(int64_t B) { return blocks_for(B * kWarp); }

// Rows over the warps of the grid, one row per warp at a time (`i` is the same in all lanes of a warp: kThreads is a
// multiple of the warp size, so the whole warp leaves the loop together and the shuffles see every lane).
#define MMH_WARP_ROWS(i, lane, B)                                                                  \
  const int lane = threadIdx.x % kWarp;                                                            \
  for (int64_t i = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / kWarp; i < (B); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x / kWarp)

template <typename acc>
__global__ void matrix_kernel(const acc* G, int64_t B, int64_t form, acc eps, acc* M, acc* norm) {
  MMH_WARP_ROWS(i, lane, B) {
    acc ni;
    if (form == kPaper) {
      ni = norm_from(G[i * B + i], eps);
    } else {
      acc s = acc(0);
      for (int64_t j = lane; j < B; j += kWarp) s += norm_term(G[i * B + j]);
      ni = norm_from(warp_sum(s), eps);
    }
    if (lane == 0) norm[i] = ni;
    for (int64_t j = lane; j < B; j += kWarp) {
      // paper: row j's norm from the diagonal again (the same expression as row j's warp: the same value), sp: unused.
      const acc nj = form == kPaper ? norm_from(G[j * B + j], eps) : ni;
      M[i * B + j] = matrix_entry(G[i * B + j], ni, nj, form);
    }
  }
}

template <typename acc>
__global__ void loss_kernel(const acc* Ms, const acc* Mt, int64_t B, int64_t form, acc* loss) {
  __shared__ acc part[kLossThreads / kWarp];
  acc s = acc(0);
  for (int64_t k = threadIdx.x; k < B * B; k += blockDim.x) s += loss_term(Ms[k], Mt[k]);
  s = warp_sum(s);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (lane == 0) part[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = warp_sum(lane < blockDim.x / kWarp ? part[lane] : acc(0));
    if (lane == 0) *loss = loss_from(s, B, form);
  }
}

// Row i's reduction; for "paper" also row i of S (only its diagonal entry needs a reduction, its own row's).
template <typename acc, typename Src>
__global__ void grad_row_kernel(const Src src, const acc* M, const acc* norm, int64_t B, int64_t form, acc eps,
                                acc* red, acc* S) {
  const auto dM = grad_accessor(src, B, form, eps);
  MMH_WARP_ROWS(i, lane, B) {
    acc s = acc(0);
    for (int64_t j = lane; j < B; j += kWarp) s += grad_row_term(dM, M, B, i, j, form);
    const acc ni = norm[i], ri = grad_row_from(warp_sum(s), ni, form, eps);
    if (form == kPaper) {
      for (int64_t j = lane; j < B; j += kWarp)
        S[i * B + j] = sym_grad_entry(dM, M, B, i, j, ni, norm[j], ri, acc(0), form, eps);
    } else if (lane == 0) {
      red[i] = ri;
    }
  }
}

// "sp": entry (i, j) of S from the reductions of rows i and j.
template <typename acc, typename Src>
__global__ void sym_grad_kernel(const Src src, const acc* M, const acc* norm, const acc* red, int64_t B, int64_t form,
                                acc eps, acc* S) {
  const auto dM = grad_accessor(src, B, form, eps);
  MMH_GRID_STRIDE(k, B * B) {
    const int64_t i = k / B, j = k - i * B;
    S[k] = sym_grad_entry(dM, M, B, i, j, norm[i], norm[j], red[i], red[j], form, eps);
  }
}

void matrix_cuda(const at::Tensor& G, int64_t form, double eps, at::Tensor& M, at::Tensor& norm) {
  const int64_t B = G.size(0);
  AT_DISPATCH_FLOATING_TYPES(G.scalar_type(), "dad_matrix_cuda", [&] {
    matrix_kernel<scalar_t><<<row_blocks(B), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        G.const_data_ptr<scalar_t>(), B, form, static_cast<scalar_t>(eps), M.mutable_data_ptr<scalar_t>(),
        norm.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void loss_cuda(const at::Tensor& Ms, const at::Tensor& Mt, int64_t form, at::Tensor& loss) {
  const int64_t B = Ms.size(0);
  AT_DISPATCH_FLOATING_TYPES(Ms.scalar_type(), "dad_loss_cuda", [&] {
    loss_kernel<scalar_t><<<1, kLossThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        Ms.const_data_ptr<scalar_t>(), Mt.const_data_ptr<scalar_t>(), B, form, loss.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

template <typename scalar_t, typename Src>
void gram_grad_launch(const Src& src, const at::Tensor& M, const at::Tensor& norm, int64_t form, double eps,
                      at::Tensor& S) {
  const int64_t B = M.size(0);
  auto stream = at::cuda::getCurrentCUDAStream();
  const scalar_t e = static_cast<scalar_t>(eps);
  const scalar_t *m = M.const_data_ptr<scalar_t>(), *n = norm.const_data_ptr<scalar_t>();
  scalar_t* s = S.mutable_data_ptr<scalar_t>();
  at::Tensor red;
  if (form == kSp) red = at::empty({B}, M.options());
  scalar_t* r = form == kSp ? red.mutable_data_ptr<scalar_t>() : nullptr;
  grad_row_kernel<scalar_t, Src><<<row_blocks(B), kThreads, 0, stream>>>(src, m, n, B, form, e, r, s);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (form == kSp) {
    sym_grad_kernel<scalar_t, Src><<<blocks_for(B * B), kThreads, 0, stream>>>(src, m, n, r, B, form, e, s);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void gram_grad_cuda(const GradSource& src, const at::Tensor& M, const at::Tensor& norm, int64_t form, double eps,
                    at::Tensor& S) {
  const int64_t B = M.size(0);
  AT_DISPATCH_FLOATING_TYPES(M.scalar_type(), "dad_gram_grad_cuda", [&] {
    with_grad_source<scalar_t>(src, B, [&](const auto& s) { gram_grad_launch<scalar_t>(s, M, norm, form, eps, S); });
  });
}

const Kernels kCuda{matrix_cuda, loss_cuda, gram_grad_cuda};

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
  return loss_forward(hs, ht, form, eps, kCuda);
}
std::vector<at::Tensor> loss_backward_cuda(const at::Tensor& grad, const at::Tensor& hs, const at::Tensor& ht,
                                           const at::Tensor& Ms, const at::Tensor& Mt, const at::Tensor& ns,
                                           const at::Tensor& nt, const at::Tensor& loss, c10::string_view form,
                                           double eps, bool need_s, bool need_t) {
  const c10::cuda::CUDAGuard guard(hs.device());
  return loss_backward(grad, hs, ht, Ms, Mt, ns, nt, loss, form, eps, need_s, need_t, kCuda);
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
