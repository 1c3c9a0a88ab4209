// Injection CUDA kernels: elementwise over the (dense) storage, in the accumulation type, through the shared
// expressions of inject.h (the same the CPU kernels' loops evaluate); 16-byte vector loads where aligned.
#include <torch/library.h>

#include "../inject.h"
#include "launch.cuh"

#include <cstdint>

namespace mmh_ext {
namespace inject {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

// 16-byte vectors (4 floats, 8 halves, 2 doubles) where every pointer is 16-byte aligned: one load per operand
// and thread instead of 4-8 (the operator is memory-bound); the n % V tail elements go to the first threads of block 0.
template <typename scalar_t>
struct alignas(16) Vec {
  static constexpr int kSize = 16 / sizeof(scalar_t);
  scalar_t v[kSize];
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename scalar_t>
__device__ __forceinline__ scalar_t forward_one(scalar_t x, scalar_t g) {
  using acc = acc_t<scalar_t>;
  return static_cast<scalar_t>(inject::forward(static_cast<acc>(x), static_cast<acc>(g)));
}

template <typename scalar_t>
__device__ __forceinline__ void backward_one(scalar_t d, scalar_t x, scalar_t g, scalar_t& dx, scalar_t& dg) {
  using acc = acc_t<scalar_t>;
  acc a, b;
  inject::backward(static_cast<acc>(d), static_cast<acc>(x), static_cast<acc>(g), a, b);
  dx = static_cast<scalar_t>(a);
  dg = static_cast<scalar_t>(b);
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* x, const scalar_t* g, int64_t n, scalar_t* out) {
  MMH_GRID_STRIDE(i, n) { out[i] = forward_one(x[i], g[i]); }
}

template <typename scalar_t>
__global__ void forward_vec_kernel(const scalar_t* x, const scalar_t* g, int64_t n, scalar_t* out) {
  using V = Vec<scalar_t>;
  const int64_t nv = n / V::kSize;
  MMH_GRID_STRIDE(i, nv) {
    const V a = reinterpret_cast<const V*>(x)[i], b = reinterpret_cast<const V*>(g)[i];
    V o;
#pragma unroll
    for (int j = 0; j < V::kSize; ++j) o.v[j] = forward_one(a.v[j], b.v[j]);
    reinterpret_cast<V*>(out)[i] = o;
  }
  const int64_t tail = nv * V::kSize + threadIdx.x;
  if (blockIdx.x == 0 && tail < n) out[tail] = forward_one(x[tail], g[tail]);
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* d, const scalar_t* x, const scalar_t* g, int64_t n, scalar_t* dx,
                                scalar_t* dg) {
  MMH_GRID_STRIDE(i, n) { backward_one(d[i], x[i], g[i], dx[i], dg[i]); }
}

template <typename scalar_t>
__global__ void backward_vec_kernel(const scalar_t* d, const scalar_t* x, const scalar_t* g, int64_t n, scalar_t* dx,
                                    scalar_t* dg) {
  using V = Vec<scalar_t>;
  const int64_t nv = n / V::kSize;
  MMH_GRID_STRIDE(i, nv) {
    const V a = reinterpret_cast<const V*>(d)[i], b = reinterpret_cast<const V*>(x)[i],
            c = reinterpret_cast<const V*>(g)[i];
    V ox, og;
#pragma unroll
    for (int j = 0; j < V::kSize; ++j) backward_one(a.v[j], b.v[j], c.v[j], ox.v[j], og.v[j]);
    reinterpret_cast<V*>(dx)[i] = ox;
    reinterpret_cast<V*>(dg)[i] = og;
  }
  const int64_t tail = nv * V::kSize + threadIdx.x;
  if (blockIdx.x == 0 && tail < n) backward_one(d[tail], x[tail], g[tail], dx[tail], dg[tail]);
}

at::Tensor forward_cuda(const at::Tensor& x_in, const at::Tensor& gate_in) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x, gate;
  std::tie(x, gate) = prepare(x_in, gate_in);
  at::Tensor out = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "inject_forward_cuda", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *gp = gate.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    auto stream = at::cuda::getCurrentCUDAStream();
    if (aligned16(xp) && aligned16(gp) && aligned16(op))  // (the tail needs fewer threads than one block has)
      forward_vec_kernel<scalar_t><<<blocks_for(n / Vec<scalar_t>::kSize), kThreads, 0, stream>>>(xp, gp, n, op);
    else
      forward_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(xp, gp, n, op);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                 const at::Tensor& gate_in) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor grad, x, gate;
  std::tie(grad, x, gate) = prepare_backward(grad_in, x_in, gate_in);
  at::Tensor dx = at::empty_like(x), dgate = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return finish_backward(dx, dgate, x_in, gate_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "inject_backward_cuda", [&] {
    const scalar_t *dp = grad.const_data_ptr<scalar_t>(), *xp = x.const_data_ptr<scalar_t>(),
                   *gp = gate.const_data_ptr<scalar_t>();
    scalar_t *dxp = dx.mutable_data_ptr<scalar_t>(), *dgp = dgate.mutable_data_ptr<scalar_t>();
    auto stream = at::cuda::getCurrentCUDAStream();
    if (aligned16(dp) && aligned16(xp) && aligned16(gp) && aligned16(dxp) && aligned16(dgp))
      backward_vec_kernel<scalar_t>
          <<<blocks_for(n / Vec<scalar_t>::kSize), kThreads, 0, stream>>>(dp, xp, gp, n, dxp, dgp);
    else
      backward_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(dp, xp, gp, n, dxp, dgp);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return finish_backward(dx, dgate, x_in, gate_in);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, CUDA, m) {
  m.impl("cross_stream_inject", &forward_cuda);
  m.impl("cross_stream_inject_backward", &backward_cuda);
}

}  // namespace inject
}  // namespace mmh_ext
