// RAD CUDA kernels: one thread per output item, each calling the shared MMH_HD math of rad_math.h (the same functions
// the CPU kernels run in device-emulation mode, mode.h). GEMMs go through ATen (cuBLAS) in rad.cpp.
#include <torch/library.h>

#include "../rad.h"
#include "launch.cuh"

namespace mmh_ext {
namespace rad {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

template <typename scalar_t>
__global__ void pool_kernel(const scalar_t* f, int64_t sb, int64_t sc, int64_t sh, int64_t sw, int64_t H, int64_t W,
                            int64_t C, int64_t grid, int64_t total, acc_t<scalar_t>* out) {
  // consecutive threads take consecutive channels: coalesced reads for channels_last input
  MMH_GRID_STRIDE(i, total) { pool_item(i, f, sb, sc, sh, sw, H, W, C, grid, out); }
}

template <typename acc>
__global__ void forward_kernel(const acc* cs, const acc* ct, const acc* bs, const acc* bt, Pyramid p, int64_t K,
                               acc inv_t, acc t2, int64_t total, acc* loss, acc* ls, acc* lt) {
  MMH_GRID_STRIDE(i, total) { forward_item(i, cs, ct, bs, bt, p, K, inv_t, t2, loss, ls, lt); }
}

template <typename acc>
__global__ void backward_kernel(const acc* g, const acc* ls, const acc* lt, int64_t K, acc t, int64_t total, acc* ds,
                                acc* dt) {
  MMH_GRID_STRIDE(i, total) { backward_item(i, g, ls, lt, K, t, ds, dt); }
}

template <typename acc>
__global__ void cells_kernel(const acc* dz, Pyramid p, int64_t K, int64_t total, acc* out) {
  MMH_GRID_STRIDE(i, total) { cells_item(i, dz, p, K, out); }
}

template <typename scalar_t>
__global__ void unpool_kernel(const acc_t<scalar_t>* dg, int64_t C, int64_t H, int64_t W, int64_t grid, int64_t total,
                              scalar_t* out) {
  MMH_GRID_STRIDE(i, total) { unpool_item(i, dg, C, H, W, grid, out); }
}

void pool_cuda(const at::Tensor& feat, int64_t grid, at::Tensor& out) {
  const int64_t total = out.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(), "rad_pool_cuda", [&] {
    pool_kernel<scalar_t><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        feat.const_data_ptr<scalar_t>(), feat.stride(0), feat.stride(1), feat.stride(2), feat.stride(3), feat.size(2),
        feat.size(3), feat.size(1), grid, total, out.mutable_data_ptr<acc_t<scalar_t>>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void forward_cuda(const at::Tensor& cs, const at::Tensor& ct, const at::Tensor& bs, const at::Tensor& bt,
                  const Pyramid& p, double temperature, at::Tensor& loss, at::Tensor& ls, at::Tensor& lt) {
  const int64_t total = loss.numel(), K = cs.size(2);
  AT_DISPATCH_FLOATING_TYPES(cs.scalar_type(), "rad_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        cs.const_data_ptr<scalar_t>(), ct.const_data_ptr<scalar_t>(), bs.const_data_ptr<scalar_t>(),
        bt.const_data_ptr<scalar_t>(), p, K, scalar_t(1) / static_cast<scalar_t>(temperature),
        static_cast<scalar_t>(temperature * temperature), total, loss.mutable_data_ptr<scalar_t>(),
        ls.mutable_data_ptr<scalar_t>(), lt.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void backward_cuda(const at::Tensor& grad, const at::Tensor& ls, const at::Tensor& lt, double temperature,
                   at::Tensor& dzs, at::Tensor& dzt) {
  const int64_t total = ls.size(0) * ls.size(1), K = ls.size(2);
  AT_DISPATCH_FLOATING_TYPES(ls.scalar_type(), "rad_backward_cuda", [&] {
    backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<scalar_t>(), ls.const_data_ptr<scalar_t>(), lt.const_data_ptr<scalar_t>(), K,
        static_cast<scalar_t>(temperature), total, dzs.defined() ? dzs.mutable_data_ptr<scalar_t>() : nullptr,
        dzt.defined() ? dzt.mutable_data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void cells_cuda(const at::Tensor& dz, const Pyramid& p, at::Tensor& dcells) {
  const int64_t total = dz.size(0) * p.grid * p.grid, K = dz.size(2);
  AT_DISPATCH_FLOATING_TYPES(dz.scalar_type(), "rad_cells_cuda", [&] {
    cells_kernel<scalar_t><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        dz.const_data_ptr<scalar_t>(), p, K, total, dcells.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void unpool_cuda(const at::Tensor& dg, int64_t grid, at::Tensor& dfeat) {
  const int64_t total = dfeat.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dfeat.scalar_type(), "rad_unpool_cuda", [&] {
    unpool_kernel<scalar_t><<<blocks_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        dg.const_data_ptr<acc_t<scalar_t>>(), dfeat.size(1), dfeat.size(2), dfeat.size(3), grid, total,
        dfeat.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

const Kernels kCuda{pool_cuda, forward_cuda, backward_cuda, cells_cuda, unpool_cuda};

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
