// Region-aware distillation (RAD), host API: validation and the device-independent orchestration (GEMMs through ATen)
// in rad.cpp; the device-specific kernels (cpu/rad*.cpp, cuda/rad.cu) fill a Kernels table. The per-item math the
// kernels run is rad_math.h.
#pragma once

#include "rad_math.h"

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace mmh_ext {
namespace rad {

// One GEMM, out = a @ b (out preallocated, contiguous).
struct Gemm {
  at::Tensor out, a, b;
};

// The device-specific pieces. Each CPU/CUDA translation unit fills one table; the CUDA kernels call the MMH_HD
// functions of rad_math.h, the CPU kernels call them or compute the same with GEMMs (see rad_math.h).
struct Kernels {
  // feat (B, C, H, W) any strides, any float dtype whose acc_t is out's dtype -> out (B, grid*grid, C) contiguous
  // (preallocated).
  void (*pool)(const at::Tensor& feat, int64_t grid, at::Tensor& out);
  // cells (B, grid*grid, K) acc; bias (K,) acc -> loss (B, N), logp (B, N, K) for each network.
  void (*forward)(const at::Tensor& cells_s, const at::Tensor& cells_t, const at::Tensor& bias_s,
                  const at::Tensor& bias_t, const Pyramid& p, double temperature, at::Tensor& loss, at::Tensor& logp_s,
                  at::Tensor& logp_t);
  // grad (B, N) acc, any strides -> d cell logits (B, grid*grid, K) for each side (an undefined tensor when that side
  // is not needed): through the softmax/KL of every region and the region means, in one pass. kl: KL(p_t || p_s) per
  // (B, N) row, contiguous; defined when the teacher side is needed (its gradient uses it).
  void (*cell_grads)(const at::Tensor& grad, const at::Tensor& logp_s, const at::Tensor& logp_t, const at::Tensor& kl,
                     const Pyramid& p, double temperature, at::Tensor& dcells_s, at::Tensor& dcells_t);
  // dg (B, grid*grid, C) acc -> dfeat (B, C, H, W) contiguous, a dtype whose acc_t is acc (preallocated).
  void (*unpool)(const at::Tensor& dg, int64_t grid, at::Tensor& dfeat);
  // A pass's independent GEMMs (forward: both networks' cell logits; backward: d weight and d pooled of each side
  // that needs them), for K = classes. CUDA: one cuBLAS call each. CPU: side by side over the threads from 16
  // classes on (see cpu/rad_parallel.cpp).
  void (*gemms)(std::vector<Gemm>& jobs, int64_t classes);
  // The cell logits' GEMM for K classes: false -> pooled (B*G2, C) @ W^T, contiguous (B, G2, K); true -> W @ pooled^T,
  // row-major (K, B*G2), which `forward` then gets as a (B, G2, K) view with strides (G2, 1, B*G2) (on one thread MKL
  // runs this orientation up to 1.3x faster at K = 60; the CPU kernels read either layout).
  bool (*kmajor_cells)(int64_t K);
  // Optional (nullptr: not used). The whole forward in one pass over chunks of samples — each chunk pooled, its cell
  // logits' GEMMs and its region math run while its rows are in cache — writing gs / gt (B, G2, C) and the outputs
  // of `forward`. Returns false, having written nothing, where it does not apply to these inputs; the separate kernels
  // above run then.
  bool (*fused_forward)(const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs,
                        const at::Tensor& wt, const at::Tensor& bt, const Pyramid& p, double temperature,
                        at::Tensor& loss, at::Tensor& gs, at::Tensor& gt, at::Tensor& ls, at::Tensor& lt);
  // Optional, likewise: the student side of the backward in one pass over chunks of samples (cell gradients, d
  // pooled and its unpooling into dfeat, d weight and d bias summed per chunk). gs (B, G2, C) or empty (no d
  // weight: dw stays undefined); dfeat preallocated; dw (K, C) and db (K,) acc, preallocated.
  bool (*fused_backward)(const at::Tensor& grad, const at::Tensor& gs, const at::Tensor& ls, const at::Tensor& lt,
                         const at::Tensor& w, const Pyramid& p, double temperature, at::Tensor& dfeat, at::Tensor& dw,
                         at::Tensor& db);
};

Pyramid make_pyramid(int64_t grid, at::IntArrayRef levels);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& student_feat, const at::Tensor& teacher_feat, const at::Tensor& student_weight,
    const at::Tensor& student_bias, const at::Tensor& teacher_weight, const at::Tensor& teacher_bias, int64_t grid,
    at::IntArrayRef levels, double temperature, const Kernels& k);

std::vector<at::Tensor> backward(const at::Tensor& grad, const at::Tensor& student_pooled,
                                 const at::Tensor& teacher_pooled, const at::Tensor& student_logp,
                                 const at::Tensor& teacher_logp, const at::Tensor& student_weight,
                                 const at::Tensor& teacher_weight, at::IntArrayRef student_hw,
                                 at::IntArrayRef teacher_hw, at::ScalarType student_dtype, at::ScalarType teacher_dtype,
                                 int64_t grid, at::IntArrayRef levels, double temperature, bool need_student,
                                 bool need_teacher, const Kernels& k);

}  // namespace rad
}  // namespace mmh_ext
