// RAD's CPU kernels, region math: from the cell logits (B, grid*grid, K) of both networks, each pyramid region's
// logits (box means of its cells' logits plus the bias), both log-softmax rows and the KL (forward), and the
// cell-logit gradients through all of them (backward). Three forms, chosen per call:
// - float32 on a CPU with AVX2 + FMA: one pass per sample, vectorised over the classes (rad_region_avx.h) — the
//   forward where the cell logits are k-major (from kFusedMinClasses classes on), the backward from as many classes;
// - float32 below that, float64, any CPU without AVX2: a few ATen ops over the whole (B, N, K) block, with the
//   cached region matrix;
// - device emulation: the per-item functions of rad_math.h, as the CUDA kernels.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../mode.h"
#include "rad_cpu.h"

namespace mmh_ext {
namespace rad {
namespace cpu {
namespace {

// The region matrix R (N, grid*grid): R[n, cell] = 1 / area(n) where the cell lies in region n — region logits are
// R @ cell logits. Kept per thread for the last pyramid and dtype asked for.
at::Tensor region_matrix(const Pyramid& p, at::ScalarType dtype) {
  struct Entry {
    int64_t grid = -1;
    std::vector<int64_t> levels;
    at::ScalarType dtype = at::kFloat;
    at::Tensor R;
  };
  thread_local Entry cache;
  const std::vector<int64_t> levels(p.levels, p.levels + p.num_levels);
  if (cache.grid == p.grid && cache.levels == levels && cache.dtype == dtype) return cache.R;
  const int64_t G2 = p.grid * p.grid;
  at::Tensor R = at::zeros({p.num_regions, G2}, at::dtype(at::kDouble));
  double* r = R.mutable_data_ptr<double>();
  for (int64_t n = 0; n < p.num_regions; ++n) {
    const Rect rect = region_rect(p, n);
    const double inv = 1.0 / static_cast<double>((rect.y1 - rect.y0) * (rect.x1 - rect.x0));
    for (int64_t y = rect.y0; y < rect.y1; ++y)
      for (int64_t x = rect.x0; x < rect.x1; ++x) r[n * G2 + y * p.grid + x] = inv;
  }
  cache = Entry{p.grid, levels, dtype, R.to(dtype)};
  return cache.R;
}

// Cell logits (B, G2, K) that are a view of a row-major (K, B * G2) GEMM result (Kernels::kmajor_cells).
bool kmajor(const at::Tensor& cells) {
  return cells.stride(2) == cells.size(0) * cells.size(1) && (cells.size(1) == 1 || cells.stride(1) == 1) &&
         (cells.size(0) == 1 || cells.stride(0) == cells.size(1));
}

// Fast mode: the per-(sample, region) math as a few ATen ops over the whole (B, N, K) block — ATen's exp, log_softmax
// and reductions are vectorised (the per-item functions call scalar exp, which was a third of a K = 60 step).
bool fast_region_math(const at::Tensor& t) {
  return !emulate_device_kernels() && (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

}  // namespace

#if MMH_EXT_RAD_AVX
RegionForward::RegionForward(const Pyramid& p, const at::Tensor& bs, const at::Tensor& bt, double temperature)
    : p(p),
      K(bs.size(0)),
      G2(p.grid * p.grid),
      N(p.num_regions),
      ldc((K + 7) / 8 * 8),
      inv_t(static_cast<float>(1.0 / temperature)),
      t2(static_cast<float>(temperature * temperature)),
      bias(2 * ldc, 0.f) {
  const at::Tensor b_s = bs.to(at::kFloat).contiguous(), b_t = bt.to(at::kFloat).contiguous();
  std::copy(b_s.const_data_ptr<float>(), b_s.const_data_ptr<float>() + K, bias.begin());
  std::copy(b_t.const_data_ptr<float>(), b_t.const_data_ptr<float>() + K, bias.begin() + ldc);
}
#endif

void forward_cpu(const at::Tensor& cs, const at::Tensor& ct, const at::Tensor& bs, const at::Tensor& bt,
                 const Pyramid& p, double temperature, at::Tensor& loss, at::Tensor& ls, at::Tensor& lt) {
  const int64_t K = cs.size(2);
#if MMH_EXT_RAD_AVX
  if (fast_region_math(cs) && cs.scalar_type() == at::kFloat && cpu_has_avx2_fma() && kmajor(cs) && kmajor(ct)) {
    const RegionForward rf(p, bs, bt, temperature);
    const int64_t B = cs.size(0), ldk = B * rf.G2;
    const float *s = cs.const_data_ptr<float>(), *t = ct.const_data_ptr<float>();
    float *l = loss.mutable_data_ptr<float>(), *os = ls.mutable_data_ptr<float>(), *ot = lt.mutable_data_ptr<float>();
    at::parallel_for(0, B, grain(40 * rf.N * K), [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(rf.scratch_floats());
      for (int64_t b = begin; b < end; ++b) rf.sample(s + b * rf.G2, t + b * rf.G2, ldk, b, os, ot, l, scratch.data());
    });
    return;
  }
#endif
  if (fast_region_math(cs)) {
    const int64_t B = cs.size(0), N = p.num_regions, G2 = p.grid * p.grid;
    const at::Tensor R = region_matrix(p, cs.scalar_type()).expand({B, N, G2});
    const double inv_t = 1.0 / temperature;
    // log_softmax((R @ cells + bias) / T), each network
    at::_log_softmax_out(ls, at::baddbmm(bs.mul(inv_t).expand({B, N, K}), R, cs, 1.0, inv_t), -1, false);
    at::_log_softmax_out(lt, at::baddbmm(bt.mul(inv_t).expand({B, N, K}), R, ct, 1.0, inv_t), -1, false);
    at::sum_out(loss, at::sub(lt, ls).mul_(lt.exp()), -1).mul_(temperature * temperature);
    return;
  }
  const at::Tensor csc = cs.contiguous(), ctc = ct.contiguous();  // the per-item functions read (B, G2, K) rows
  AT_DISPATCH_FLOATING_TYPES(cs.scalar_type(), "rad_forward_cpu", [&] {
    const scalar_t inv_t = scalar_t(1) / static_cast<scalar_t>(temperature);
    const scalar_t t2 = static_cast<scalar_t>(temperature * temperature);
    const scalar_t *s = csc.const_data_ptr<scalar_t>(), *t = ctc.const_data_ptr<scalar_t>();
    const scalar_t *b_s = bs.const_data_ptr<scalar_t>(), *b_t = bt.const_data_ptr<scalar_t>();
    scalar_t *l = loss.mutable_data_ptr<scalar_t>(), *os = ls.mutable_data_ptr<scalar_t>(),
             *ot = lt.mutable_data_ptr<scalar_t>();
    // the two CUDA launches: region logits per (sample, region, class), then softmax rows and KL per (sample, region)
    for_items(ls.numel(), 2 * p.grid * p.grid, [&](int64_t i) { logits_item(i, s, t, b_s, b_t, p, K, inv_t, os, ot); });
    for_items(loss.numel(), 8 * K, [&](int64_t i) { row_item(i, K, t2, os, ot, l); });
  });
}

void cell_grads_cpu(const at::Tensor& grad, const at::Tensor& ls, const at::Tensor& lt, const at::Tensor& kl,
                    const Pyramid& p, double temperature, at::Tensor& dcs, at::Tensor& dct) {
  const int64_t B = ls.size(0), N = ls.size(1), K = ls.size(2), G2 = p.grid * p.grid;
#if MMH_EXT_RAD_AVX
  if (fast_region_math(ls) && ls.scalar_type() == at::kFloat && cpu_has_avx2_fma() && many_classes(K)) {
    const float* g = grad.const_data_ptr<float>();
    const int64_t gb = grad.stride(0), gn = grad.stride(1);
    // rows of K contiguous floats (what the forward saves; a direct caller of rad_backward may pass other strides)
    const at::Tensor lsc = ls.contiguous(), ltc = lt.contiguous();
    const float *s = lsc.const_data_ptr<float>(), *t = ltc.const_data_ptr<float>();
    const float* r = kl.defined() ? kl.const_data_ptr<float>() : nullptr;
    float* ds = dcs.defined() ? dcs.mutable_data_ptr<float>() : nullptr;
    float* dt = dct.defined() ? dct.mutable_data_ptr<float>() : nullptr;
    at::parallel_for(0, B, grain(40 * N * K), [&](int64_t begin, int64_t end) {
      std::vector<float> acc(2 * G2 * ((K + 7) / 8 * 8));
      for (int64_t b = begin; b < end; ++b)
        cell_grads_sample(g + b * gb, gn, s + b * N * K, t + b * N * K, r ? r + b * N : nullptr, p, K,
                          static_cast<float>(temperature), ds ? ds + b * G2 * K : nullptr,
                          dt ? dt + b * G2 * K : nullptr, acc.data());
    });
    return;
  }
#endif
  if (fast_region_math(ls)) {
    // d region logits: d/dz_s = g T (p_s - p_t),  d/dz_t = g T p_t (log p_t - log p_s - KL); then d cells = R^T @ dz,
    // per sample
    const at::Tensor pt = lt.exp(), gT = grad.mul(temperature).unsqueeze(-1);
    const at::Tensor Rt = region_matrix(p, ls.scalar_type()).t().expand({B, G2, N});
    if (dcs.defined()) at::bmm_out(dcs, Rt, at::sub(ls.exp(), pt).mul_(gT));
    if (dct.defined()) {
      at::Tensor dz = at::sub(lt, ls);
      dz.sub_(kl.unsqueeze(-1)).mul_(pt).mul_(gT);
      at::bmm_out(dct, Rt, dz);
    }
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(ls.scalar_type(), "rad_cell_grads_cpu", [&] {
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t *s = ls.const_data_ptr<scalar_t>(), *t = lt.const_data_ptr<scalar_t>();
    scalar_t* ds = dcs.defined() ? dcs.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* dt = dct.defined() ? dct.mutable_data_ptr<scalar_t>() : nullptr;
    const scalar_t temp = static_cast<scalar_t>(temperature);
    const scalar_t* r = kl.defined() ? kl.const_data_ptr<scalar_t>() : nullptr;
    const int64_t gb = grad.stride(0), gn = grad.stride(1);
    for_items(B * G2 * K, 4 * p.num_levels,
              [&](int64_t i) { cell_grad_item(i, g, gb, gn, s, t, r, p, K, temp, ds, dt); });
  });
}

}  // namespace cpu
}  // namespace rad
}  // namespace mmh_ext
