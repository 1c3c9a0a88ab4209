// Injection CUDA kernels: elementwise over the (dense) storage, in the accumulation type, through the shared
// expressions of inject_math.h (the same the CPU kernels' loops evaluate).
#include <torch/library.h>

#include "../inject.h"
#include "launch.cuh"

namespace mmh_ext {
namespace inject {
namespace {

using cuda::blocks_for;
using cuda::kThreads;

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* x, const scalar_t* g, int64_t n, scalar_t* out) {
  using acc = acc_t<scalar_t>;
  MMH_GRID_STRIDE(i, n) { out[i] = static_cast<scalar_t>(inject::forward(static_cast<acc>(x[i]), static_cast<acc>(g[i]))); }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* d, const scalar_t* x, const scalar_t* g, int64_t n, scalar_t* dx,
                                scalar_t* dg) {
  using acc = acc_t<scalar_t>;
  MMH_GRID_STRIDE(i, n) {
    acc a, b;
    inject::backward(static_cast<acc>(d[i]), static_cast<acc>(x[i]), static_cast<acc>(g[i]), a, b);
    dx[i] = static_cast<scalar_t>(a);
    dg[i] = static_cast<scalar_t>(b);
  }
}

at::Tensor forward_cuda(const at::Tensor& x_in, const at::Tensor& gate_in) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor x, gate;
  std::tie(x, gate) = prepare(x_in, gate_in);
  at::Tensor out = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "inject_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(), n, out.mutable_data_ptr<scalar_t>());
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
    backward_kernel<scalar_t><<<blocks_for(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), gate.const_data_ptr<scalar_t>(), n,
        dx.mutable_data_ptr<scalar_t>(), dgate.mutable_data_ptr<scalar_t>());
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
