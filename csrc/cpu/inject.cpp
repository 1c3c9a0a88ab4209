// Injection CPU kernels: SIMD main loop + scalar tail, both through the shared expressions of inject.h.
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include "../inject.h"
#include "../mode.h"

namespace mmh_ext {
namespace inject {
namespace {

using at::vec::Vectorized;

// SIMD relu: at::vec::maximum propagates NaN, like the scalar mmh_max.
template <typename scalar_t>
Vectorized<scalar_t> relu_vec(const Vectorized<scalar_t>& g) {
  return at::vec::maximum(g, Vectorized<scalar_t>(scalar_t(0)));
}

constexpr int64_t kGrain = 32768;

at::Tensor forward_cpu(const at::Tensor& x_in, const at::Tensor& gate_in) {
  at::Tensor x, gate;
  std::tie(x, gate) = prepare(x_in, gate_in);
  at::Tensor out = at::empty_like(x);
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "inject_forward_cpu", [&] {
    using V = Vectorized<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *gp = gate.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    const bool device = emulate_device_kernels();  // the CUDA kernel's per-element path: no SIMD
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      int64_t i = begin;
      for (; !device && i + V::size() <= end; i += V::size())
        (V::loadu(xp + i) * relu_vec(V::loadu(gp + i))).store(op + i);
      for (; i < end; ++i) op[i] = inject::forward(xp[i], gp[i]);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                const at::Tensor& gate_in) {
  at::Tensor grad, x, gate;
  std::tie(grad, x, gate) = prepare_backward(grad_in, x_in, gate_in);
  at::Tensor dx = at::empty_like(x), dgate = at::empty_like(x);
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "inject_backward_cpu", [&] {
    using V = Vectorized<scalar_t>;
    const scalar_t *dp = grad.const_data_ptr<scalar_t>(), *xp = x.const_data_ptr<scalar_t>(),
                   *gp = gate.const_data_ptr<scalar_t>();
    scalar_t *dxp = dx.mutable_data_ptr<scalar_t>(), *dgp = dgate.mutable_data_ptr<scalar_t>();
    const V zero(scalar_t(0));
    const bool device = emulate_device_kernels();
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      int64_t i = begin;
      for (; !device && i + V::size() <= end; i += V::size()) {
        const V d = V::loadu(dp + i), xv = V::loadu(xp + i), g = V::loadu(gp + i);
        (d * relu_vec(g)).store(dxp + i);
        V::blendv(d * xv, zero, g <= zero).store(dgp + i);
      }
      for (; i < end; ++i) inject::backward(dp[i], xp[i], gp[i], dxp[i], dgp[i]);
    });
  });
  return {dx, dgate};
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, CPU, m) {
  m.impl("cross_stream_inject", &forward_cpu);
  m.impl("cross_stream_inject_backward", &backward_cpu);
}

}  // namespace inject
}  // namespace mmh_ext
