// RAD's CPU kernels: what their files share. rad.cpp fills the Kernels table (rad.h) with the functions declared
// here and registers the CPU entry points; each concern has its file:
// - rad_pool.cpp: the grid pooling and its adjoint (the AVX forms of rad_pool_avx.h, the GEMM with the pooling
//   matrix, the per-item functions of rad_math.h);
// - rad_region.cpp: the per-(sample, region) math, forward and cell-logit gradients (the AVX2 forms of
//   rad_region_avx.h, ATen ops over whole (B, N, K) blocks, the per-item functions);
// - rad_fused.cpp: "fast" mode's passes as one loop over chunks of samples;
// - rad_parallel.h / rad_parallel.cpp: threading (per-item and chunk loops, the GEMMs side by side).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "../rad.h"
#include "rad_parallel.h"
#include "rad_pool_avx.h"
#include "rad_region_avx.h"

namespace mmh_ext {
namespace rad {
namespace cpu {

// ------------------------------------------------------------------------------------------------ pooling
// Kernels::pool and Kernels::unpool.
void pool_cpu(const at::Tensor& feat, int64_t grid, at::Tensor& out);
void unpool_cpu(const at::Tensor& dg, int64_t grid, at::Tensor& dfeat);

#if MMH_EXT_RAD_AVX
// A feature map (or its gradient) as the worker threads see it: the data pointer, taken on the calling thread, and
// the sizes.
struct Map {
  void* data;
  at::ScalarType dtype;
  int64_t B, C;
  explicit Map(const at::Tensor& t) : data(t.data_ptr()), dtype(t.scalar_type()), B(t.size(0)), C(t.size(1)) {}
};

// Pool samples [b0, b1) of feat (B, C, H, W; NCHW float32/float16/bfloat16, C >= 8) into out (B, G2, C), on this
// thread.
void pool_samples(const Map& feat, const CellPixels& cp, int64_t b0, int64_t b1, float* out);

// Unpool dg (the (b1 - b0) * G2 rows of samples [b0, b1), C floats each) into samples [b0, b1) of dfeat, on this
// thread.
void unpool_samples(const float* dg, const CellPixels& cp, int64_t b0, int64_t b1, const Map& dfeat);
#endif

// ------------------------------------------------------------------------------------------------ region math
// Kernels::forward and Kernels::cell_grads.
void forward_cpu(const at::Tensor& cs, const at::Tensor& ct, const at::Tensor& bs, const at::Tensor& bt,
                 const Pyramid& p, double temperature, at::Tensor& loss, at::Tensor& ls, at::Tensor& lt);
void cell_grads_cpu(const at::Tensor& grad, const at::Tensor& ls, const at::Tensor& lt, const at::Tensor& kl,
                    const Pyramid& p, double temperature, at::Tensor& dcs, at::Tensor& dct);

#if MMH_EXT_RAD_AVX
// The AVX forward region math of one sample at a time from k-major cell logits (rad_region_avx.h), for the separate
// kernels and the chunked passes alike: the biases zero-padded to whole vectors once; per sample, each network's
// cell logits copied into cell-major rows, then region_forward_sample.
struct RegionForward {
  const Pyramid& p;
  int64_t K, G2, N, ldc;
  float inv_t, t2;
  std::vector<float> bias;  // student then teacher, ldc floats each
  RegionForward(const Pyramid& p, const at::Tensor& bs, const at::Tensor& bt, double temperature);
  // cells_s / cells_t: 2 * G2 * ldc floats; row: 3 * ldc floats
  int64_t scratch_floats() const { return 2 * G2 * ldc + 3 * ldc; }
  // Sample b: s / t point at its first cell's logit in the (K, ld) k-major results; writes its ls / lt rows and loss.
  void sample(const float* s, const float* t, int64_t ld, int64_t b, float* ls, float* lt, float* loss,
              float* scratch) const {
    float *cs = scratch, *ct = scratch + G2 * ldc, *row = scratch + 2 * G2 * ldc;
    cells_from_kmajor(s, ld, G2, K, cs, ldc);
    cells_from_kmajor(t, ld, G2, K, ct, ldc);
    region_forward_sample(cs, ct, ldc, bias.data(), bias.data() + ldc, p, K, inv_t, t2, ls + b * N * K, lt + b * N * K,
                          loss + b * N, row);
  }
};

// ------------------------------------------------------------------------------------------------ fused passes
// Kernels::fused_forward and Kernels::fused_backward (rad_fused.cpp).
bool fused_forward_cpu(const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs,
                       const at::Tensor& wt, const at::Tensor& bt, const Pyramid& p, double temperature,
                       at::Tensor& loss, at::Tensor& gs, at::Tensor& gt, at::Tensor& ls, at::Tensor& lt);
bool fused_backward_cpu(const at::Tensor& grad, const at::Tensor& gs, const at::Tensor& ls, const at::Tensor& lt,
                        const at::Tensor& w, const Pyramid& p, double temperature, at::Tensor& dfeat, at::Tensor& dw,
                        at::Tensor& db);
#endif

}  // namespace cpu
}  // namespace rad
}  // namespace mmh_ext
