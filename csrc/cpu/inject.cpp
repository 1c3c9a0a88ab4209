// Injection CPU kernels: plain loops over the shared expressions of inject.h (the CUDA kernels' math), which GCC
// vectorises at -O3. (at::vec::Vectorized without a CPU_CAPABILITY build falls back to a generic emulation that was
// several times slower here, so it is not used.)
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../inject.h"

namespace mmh_ext {
namespace inject {
namespace {

constexpr int64_t kGrain = 32768;

// float16/bfloat16 are computed in float32 (acc_t) and rounded once; for float32/float64 the casts are no-ops.
template <typename scalar_t>
void forward_range(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g, scalar_t* __restrict__ out,
                   int64_t n) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<scalar_t>(inject::forward(static_cast<acc>(x[i]), static_cast<acc>(g[i])));
}

template <typename scalar_t>
void backward_range(const scalar_t* __restrict__ d, const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                    scalar_t* __restrict__ dx, scalar_t* __restrict__ dg, int64_t n) {
  using acc = acc_t<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    acc a, b;
    inject::backward(static_cast<acc>(d[i]), static_cast<acc>(x[i]), static_cast<acc>(g[i]), a, b);
    dx[i] = static_cast<scalar_t>(a);
    dg[i] = static_cast<scalar_t>(b);
  }
}

at::Tensor forward_cpu(const at::Tensor& x_in, const at::Tensor& gate_in) {
  at::Tensor x, gate;
  std::tie(x, gate) = prepare(x_in, gate_in);
  at::Tensor out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "inject_forward_cpu", [&] {
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *gp = gate.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      forward_range(xp + begin, gp + begin, op + begin, end - begin);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in,
                                                const at::Tensor& gate_in) {
  at::Tensor grad, x, gate;
  std::tie(grad, x, gate) = prepare_backward(grad_in, x_in, gate_in);
  at::Tensor dx = at::empty_like(x), dgate = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "inject_backward_cpu", [&] {
    const scalar_t *dp = grad.const_data_ptr<scalar_t>(), *xp = x.const_data_ptr<scalar_t>(),
                   *gp = gate.const_data_ptr<scalar_t>();
    scalar_t *dxp = dx.mutable_data_ptr<scalar_t>(), *dgp = dgate.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      backward_range(dp + begin, xp + begin, gp + begin, dxp + begin, dgp + begin, end - begin);
    });
  });
  return finish_backward(dx, dgate, x_in, gate_in);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, CPU, m) {
  m.impl("cross_stream_inject", &forward_cpu);
  m.impl("cross_stream_inject_backward", &backward_cpu);
}

}  // namespace inject
}  // namespace mmh_ext
