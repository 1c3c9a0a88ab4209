// RAD CUDA kernels: one thread per output item, each calling the shared MMH_HD math of rad_math.h (the same functions
// the CPU kernels run in device-emulation mode, mode.h). GEMMs go through ATen (cuBLAS), one call each. Per pass:
// forward pool x2, region logits, softmax rows + KL; backward cell gradients (both sides), unpool per side.
#include <torch/library.h>

#include "../rad.h"
#include "launch.cuh"

#include <algorithm>
#include <cstdint>
#include <limits>

namespace mmh_ext {
namespace rad {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

// Index type of the (un)pooling kernels: 32-bit where every offset fits (64-bit integer division, several per item, is
// several times slower on a GPU), else 64-bit.
// Half the range: a grid-stride step (at most 65535 * 32 * 256 = 2^29 threads) past the end does not overflow either.
bool fits_int32(int64_t n) { return n <= std::numeric_limits<int32_t>::max() / 2; }

template <typename scalar_t, typename I>
__global__ void pool_kernel(const scalar_t* f, I sb, I sc, I sh, I sw, I H, I W, I C, I grid, I total,
                            acc_t<scalar_t>* out) {
  // consecutive threads take consecutive channels: coalesced writes, and coalesced reads for channels_last input
  for (I i = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<I>(blockDim.x) * gridDim.x)
    pool_item(i, f, sb, sc, sh, sw, H, W, C, grid, out);
}

template <typename acc>
__global__ void logits_kernel(const acc* cs, const acc* ct, const acc* bs, const acc* bt, Pyramid p, int64_t K,
                              acc inv_t, int64_t total, acc* zs, acc* zt) {
  MMH_GRID_STRIDE(i, total) { logits_item(i, cs, ct, bs, bt, p, K, inv_t, zs, zt); }
}

template <typename acc>
__global__ void row_kernel(int64_t K, acc t2, int64_t total, acc* ls, acc* lt, acc* loss) {
  MMH_GRID_STRIDE(i, total) { row_item(i, K, t2, ls, lt, loss); }
}

template <typename acc>
__global__ void cell_grad_kernel(const acc* g, int64_t gb, int64_t gn, const acc* ls, const acc* lt, const acc* kl,
                                 Pyramid p, int64_t K, acc t, int64_t total, acc* ds, acc* dt) {
  MMH_GRID_STRIDE(i, total) { cell_grad_item(i, g, gb, gn, ls, lt, kl, p, K, t, ds, dt); }
}

template <typename scalar_t, typename I>
__global__ void unpool_kernel(const acc_t<scalar_t>* dg, I C, I H, I W, I grid, I total, scalar_t* out) {
  for (I i = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<I>(blockDim.x) * gridDim.x)
    unpool_item(i, dg, C, H, W, grid, out);
}

void pool_cuda(const at::Tensor& feat, int64_t grid, at::Tensor& out) {
  const int64_t total = out.numel();
  int64_t span = 1;  // one past the largest offset read
  for (int64_t d = 0; d < feat.dim(); ++d) span += (feat.size(d) - 1) * feat.stride(d);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(), "rad_pool_cuda", [&] {
    const auto launch = [&](auto zero) {
      using I = decltype(zero);
      pool_kernel<scalar_t, I><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          feat.const_data_ptr<scalar_t>(), I(feat.stride(0)), I(feat.stride(1)), I(feat.stride(2)), I(feat.stride(3)),
          I(feat.size(2)), I(feat.size(3)), I(feat.size(1)), I(grid), I(total),
          out.mutable_data_ptr<acc_t<scalar_t>>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    // the bin arithmetic forms (cell + 1) * H + grid and (cell + 1) * W + grid
    const int64_t bins = (grid + 1) * std::max(feat.size(2), feat.size(3)) + grid;
    if (fits_int32(total) && fits_int32(span) && fits_int32(bins))
      launch(int32_t(0));
    else
      launch(int64_t(0));
  });
}

void forward_cuda(const at::Tensor& cs, const at::Tensor& ct, const at::Tensor& bs, const at::Tensor& bt,
                  const Pyramid& p, double temperature, at::Tensor& loss, at::Tensor& ls, at::Tensor& lt) {
  const int64_t rows = loss.numel(), K = cs.size(2);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(cs.scalar_type(), "rad_forward_cuda", [&] {
    // region logits / T into ls and lt, one thread per (sample, region, class) ...
    logits_kernel<scalar_t><<<blocks_for(rows * K), kThreads, 0, stream>>>(
        cs.const_data_ptr<scalar_t>(), ct.const_data_ptr<scalar_t>(), bs.const_data_ptr<scalar_t>(),
        bt.const_data_ptr<scalar_t>(), p, K, scalar_t(1) / static_cast<scalar_t>(temperature), rows * K,
        ls.mutable_data_ptr<scalar_t>(), lt.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // ... then log-softmax in place and the KL, one thread per (sample, region)
    row_kernel<scalar_t><<<blocks_for(rows), kThreads, 0, stream>>>(
        K, static_cast<scalar_t>(temperature * temperature), rows, ls.mutable_data_ptr<scalar_t>(),
        lt.mutable_data_ptr<scalar_t>(), loss.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void cell_grads_cuda(const at::Tensor& grad, const at::Tensor& ls, const at::Tensor& lt, const at::Tensor& kl,
                     const Pyramid& p, double temperature, at::Tensor& dcs, at::Tensor& dct) {
  const int64_t K = ls.size(2), total = ls.size(0) * p.grid * p.grid * K;
  AT_DISPATCH_FLOATING_TYPES(ls.scalar_type(), "rad_cell_grads_cuda", [&] {
    cell_grad_kernel<scalar_t><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<scalar_t>(), grad.stride(0), grad.stride(1), ls.const_data_ptr<scalar_t>(),
        lt.const_data_ptr<scalar_t>(), kl.defined() ? kl.const_data_ptr<scalar_t>() : nullptr, p, K,
        static_cast<scalar_t>(temperature), total, dcs.defined() ? dcs.mutable_data_ptr<scalar_t>() : nullptr,
        dct.defined() ? dct.mutable_data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void unpool_cuda(const at::Tensor& dg, int64_t grid, at::Tensor& dfeat) {
  const int64_t total = dfeat.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dfeat.scalar_type(), "rad_unpool_cuda", [&] {
    const auto launch = [&](auto zero) {
      using I = decltype(zero);
      unpool_kernel<scalar_t, I><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
          dg.const_data_ptr<acc_t<scalar_t>>(), I(dfeat.size(1)), I(dfeat.size(2)), I(dfeat.size(3)), I(grid), I(total),
          dfeat.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    // the bin arithmetic forms (y + 1) * grid and (x + 1) * grid
    const int64_t bins = (std::max(dfeat.size(2), dfeat.size(3)) + 1) * grid;
    if (fits_int32(total) && fits_int32(dg.numel()) && fits_int32(bins))
      launch(int32_t(0));
    else
      launch(int64_t(0));
  });
}

void gemms_cuda(std::vector<Gemm>& jobs, int64_t /*classes*/) {
  for (Gemm& j : jobs) at::mm_out(j.out, j.a, j.b);
}

bool row_major_cells(int64_t) { return false; }

const Kernels kCuda{pool_cuda,  forward_cuda,    cell_grads_cuda, unpool_cuda,
                    gemms_cuda, row_major_cells, nullptr,         nullptr};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rad_forward_cuda(
    const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs, const at::Tensor& wt,
    const at::Tensor& bt, int64_t grid, at::IntArrayRef levels, double temperature) {
  const c10::cuda::CUDAGuard guard(fs.device());
  return forward(fs, ft, ws, bs, wt, bt, grid, levels, temperature, kCuda);
}

std::vector<at::Tensor> rad_backward_cuda(const at::Tensor& grad, const at::Tensor& gs, const at::Tensor& gt,
                                          const at::Tensor& ls, const at::Tensor& lt, const at::Tensor& ws,
                                          const at::Tensor& wt, at::IntArrayRef shw, at::IntArrayRef thw,
                                          at::ScalarType sdt, at::ScalarType tdt, int64_t grid, at::IntArrayRef levels,
                                          double temperature, bool need_s, bool need_t) {
  const c10::cuda::CUDAGuard guard(gs.device());
  return backward(grad, gs, gt, ls, lt, ws, wt, shw, thw, sdt, tdt, grid, levels, temperature, need_s, need_t, kCuda);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, CUDA, m) {
  m.impl("rad_forward", &rad_forward_cuda);
  m.impl("rad_backward", &rad_backward_cuda);
}

}  // namespace rad
}  // namespace mmh_ext
