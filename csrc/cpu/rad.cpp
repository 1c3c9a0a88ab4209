// RAD CPU kernels: the entry points (the Kernels table of rad.h, the CPU registration). Three modes (mode.h):
// - "separate" — the grid pooling and its adjoint vectorised across channels with AVX for NCHW
//   float32/float16/bfloat16 maps of >= 8 channels (rad_pool_avx.h), otherwise as GEMMs with the pooling matrix; the
//   per-(sample, region) softmax/KL math fused per sample with AVX2 for float32 from 16 classes on
//   (rad_region_avx.h), otherwise as ATen ops over whole (B, N, K) blocks; a pass's GEMMs side by side over the
//   threads from 16 classes on (gemms_cpu); each kernel a pass over the whole batch;
// - "fast" (default) — where the AVX kernels apply, each pass as one parallel loop over chunks of samples (the fused
//   passes); elsewhere the same as "separate";
// - "device" — every kernel runs the MMH_HD per-item functions of rad_math.h over the same flat index space as the
//   CUDA kernels.
// The GEMM and ATen forms are the portable fast path: the only one (besides device emulation) for float64, for CPUs
// without AVX2 + FMA or not x86-64, and for float32 maps the AVX pooling does not take (channels_last, < 8 channels).
// Where each kernel is: rad_cpu.h (pooling: rad_pool.cpp; region math: rad_region.cpp; fused passes: rad_fused.cpp;
// threading: rad_parallel.h / rad_parallel.cpp).
#include <torch/library.h>

#include "rad_cpu.h"

namespace mmh_ext {
namespace rad {
namespace {

using namespace cpu;

#if !MMH_EXT_RAD_AVX
constexpr auto fused_forward_cpu = nullptr;
constexpr auto fused_backward_cpu = nullptr;
#endif

const Kernels kCpu{pool_cpu,  forward_cpu,  cell_grads_cpu,    unpool_cpu,
                   gemms_cpu, many_classes, fused_forward_cpu, fused_backward_cpu};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rad_forward_cpu(
    const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs, const at::Tensor& wt,
    const at::Tensor& bt, int64_t grid, at::IntArrayRef levels, double temperature) {
  return forward(fs, ft, ws, bs, wt, bt, grid, levels, temperature, kCpu);
}

std::vector<at::Tensor> rad_backward_cpu(const at::Tensor& grad, const at::Tensor& gs, const at::Tensor& gt,
                                         const at::Tensor& ls, const at::Tensor& lt, const at::Tensor& ws,
                                         const at::Tensor& wt, at::IntArrayRef shw, at::IntArrayRef thw,
                                         at::ScalarType sdt, at::ScalarType tdt, int64_t grid, at::IntArrayRef levels,
                                         double temperature, bool need_s, bool need_t) {
  return backward(grad, gs, gt, ls, lt, ws, wt, shw, thw, sdt, tdt, grid, levels, temperature, need_s, need_t, kCpu);
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, CPU, m) {
  m.impl("rad_forward", &rad_forward_cpu);
  m.impl("rad_backward", &rad_backward_cpu);
}

}  // namespace rad
}  // namespace mmh_ext
