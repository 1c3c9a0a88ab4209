// RAD CPU kernels. Three modes (mode.h):
// - "separate" — the grid pooling and its adjoint vectorised across channels with AVX for NCHW
//   float32/float16/bfloat16 maps (rad_pool_avx.h), otherwise as GEMMs with the pooling matrix; the per-(sample,
//   region) softmax/KL math fused per sample with AVX2 for float32 from 16 classes on (rad_region_avx.h), otherwise as
//   ATen ops over whole (B, N, K) blocks; a pass's GEMMs side by side over the threads from 16 classes on (gemms_cpu);
//   each kernel a pass over the whole batch;
// - "fast" (default) — where the AVX kernels apply, each pass as one parallel loop over chunks of samples ("fused
//   passes" below); elsewhere the same as "separate";
// - "device" — every kernel runs the MMH_HD per-item functions of rad_math.h over the same flat index space as the
//   CUDA kernels.
#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "../mode.h"
#include "../rad.h"
#include "rad_pool_avx.h"
#include "rad_region_avx.h"

namespace mmh_ext {
namespace rad {
namespace {

// Items per task so that one task holds ~16k scalar operations: tiny problems run inline, without waking threads.
int64_t grain(int64_t work_per_item) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work_per_item)); }

// Run `item(i)` for i in [0, total), in parallel.
template <typename F>
void for_items(int64_t total, int64_t work_per_item, const F& item) {
  at::parallel_for(0, total, grain(work_per_item), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) item(i);
  });
}

// Bins of adaptive pooling along one axis: [start, end) of each of the `out` bins over `in`.
struct Bins {
  std::vector<int64_t> start, end;
  Bins(int64_t out, int64_t in) : start(out), end(out) {
    for (int64_t i = 0; i < out; ++i) start[i] = adaptive_start(i, out, in), end[i] = adaptive_end(i, out, in);
  }
};

// The adaptive-pooling matrix P (H*W, grid*grid): P[pixel, cell] = 1 / area(cell) where the pixel lies in the cell.
// Kept per thread for the last (H, W, grid, dtype) asked for: a training loop asks for the same few every step.
at::Tensor pooling_matrix(int64_t H, int64_t W, int64_t grid, at::ScalarType dtype) {
  struct Entry {
    int64_t H = -1, W = -1, grid = -1;
    at::ScalarType dtype = at::kFloat;
    at::Tensor P;
  };
  thread_local Entry cache[2];  // the student's and the teacher's map sizes
  for (Entry& e : cache)
    if (e.H == H && e.W == W && e.grid == grid && e.dtype == dtype) return e.P;
  const Bins by(grid, H), bx(grid, W);
  at::Tensor P = at::zeros({H * W, grid * grid}, at::dtype(at::kDouble));
  double* p = P.mutable_data_ptr<double>();
  for (int64_t iy = 0; iy < grid; ++iy)
    for (int64_t ix = 0; ix < grid; ++ix) {
      const double inv = 1.0 / static_cast<double>((by.end[iy] - by.start[iy]) * (bx.end[ix] - bx.start[ix]));
      for (int64_t y = by.start[iy]; y < by.end[iy]; ++y)
        for (int64_t x = bx.start[ix]; x < bx.end[ix]; ++x) p[(y * W + x) * grid * grid + iy * grid + ix] = inv;
    }
  cache[1] = cache[0];
  cache[0] = Entry{H, W, grid, dtype, P.to(dtype)};
  return cache[0].P;
}

}  // namespace

CellPixels::CellPixels(int64_t H, int64_t W, int64_t grid) : offset{0}, cell_offset{0}, H(H), W(W), grid(grid) {
  const Bins by(grid, H), bx(grid, W);
  y_start = by.start, y_end = by.end, x_start = bx.start, x_end = bx.end;
  for (int64_t iy = 0; iy < grid; ++iy)
    for (int64_t ix = 0; ix < grid; ++ix) {
      for (int64_t y = by.start[iy]; y < by.end[iy]; ++y)
        for (int64_t x = bx.start[ix]; x < bx.end[ix]; ++x) pixels.push_back(y * W + x);
      offset.push_back(static_cast<int64_t>(pixels.size()));
      inv_area.push_back(1.0f / static_cast<float>((by.end[iy] - by.start[iy]) * (bx.end[ix] - bx.start[ix])));
    }
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      for (int64_t iy = 0; iy < grid; ++iy)
        for (int64_t ix = 0; ix < grid; ++ix)
          if (y >= by.start[iy] && y < by.end[iy] && x >= bx.start[ix] && x < bx.end[ix]) cells_of.push_back(iy * grid + ix);
      cell_offset.push_back(static_cast<int64_t>(cells_of.size()));
    }
}

namespace {

#if MMH_EXT_RAD_AVX
// The dtypes simd_pooling admits (float32, float16, bfloat16): no float64 instantiation of the AVX code.
#define MMH_DISPATCH_SIMD_TYPES(TYPE, NAME, ...)                                                          \
  AT_DISPATCH_SWITCH(TYPE, NAME, AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) \
                                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

// NCHW float32/float16/bfloat16 features (sums in float32), C >= 8, on a CPU with AVX: the channel-vectorised pooling
// of rad_pool_avx.h; channels past the last multiple of 8 are summed one plane at a time, in the same order.
bool simd_pooling(const at::Tensor& feat_or_dfeat, const at::Tensor& cells) {
  const auto t = feat_or_dfeat.scalar_type();
  return (t == at::kFloat || t == at::kHalf || t == at::kBFloat16) && cells.scalar_type() == at::kFloat &&
         feat_or_dfeat.is_contiguous() && cells.is_contiguous() && feat_or_dfeat.size(1) >= 8 && cpu_has_avx();
}

// The pooling of feat's channel blocks [begin, end) (of its B * (C / 8) 8-channel blocks, sample-major) into out
// (B, G2, C), on this thread. feat, out: the first sample of the blocks' range may be any sample of the map, as long
// as `blocks_to_end` counts the blocks from feat's first to the map's end (the narrow pooling masks the map's last
// block's reads).
template <typename scalar_t>
void pool_range(const scalar_t* f, const CellPixels& cp, int64_t C, int64_t begin, int64_t end, int64_t blocks_to_end,
                float* o) {
  const int64_t HW = cp.H * cp.W;
  // maps at most 8 wide with more pixels than 8 per cell row (7x7, 6x6, 8x8 at grid 4): fewer transposes
  if constexpr (std::is_same<scalar_t, float>::value) {
    if (cp.W <= 8 && cp.grid * 8 <= HW) return pool_blocks_narrow(f, cp, C, begin, end, blocks_to_end, o);
  }
  pool_blocks(f, cp, C, HW, begin, end, o);
}

// The channels c >= C8 (past the last multiple of 8) of sample b, one plane at a time, in the same order as the
// blocks' sums.
template <typename scalar_t>
void pool_tail(const scalar_t* f, const CellPixels& cp, int64_t C, int64_t b, int64_t c, float* o) {
  const int64_t HW = cp.H * cp.W, G2 = cp.grid * cp.grid;
  const scalar_t* plane = f + (b * C + c) * HW;
  for (int64_t j = 0; j < G2; ++j) {
    float acc = 0.f;
    for (int64_t k = cp.offset[j]; k < cp.offset[j + 1]; ++k) acc += static_cast<float>(plane[cp.pixels[k]]);
    o[(b * G2 + j) * C + c] = acc * cp.inv_area[j];
  }
}

template <typename scalar_t>
void unpool_tail(const float* g, const CellPixels& cp, int64_t C, int64_t b, int64_t c, scalar_t* o) {
  const int64_t HW = cp.H * cp.W, G2 = cp.grid * cp.grid;
  scalar_t* plane = o + (b * C + c) * HW;
  for (int64_t p = 0; p < HW; ++p) {
    float acc = 0.f;
    for (int64_t k = cp.cell_offset[p]; k < cp.cell_offset[p + 1]; ++k) {
      const int64_t j = cp.cells_of[k];
      acc += g[(b * G2 + j) * C + c] * cp.inv_area[j];
    }
    plane[p] = static_cast<scalar_t>(acc);
  }
}

void pool_simd(const at::Tensor& feat, int64_t grid, at::Tensor& out) {
  const int64_t B = feat.size(0), C = feat.size(1), HW = feat.size(2) * feat.size(3);
  const int64_t nblk = C / 8, C8 = nblk * 8;
  const CellPixels cp(feat.size(2), feat.size(3), grid);
  float* o = out.mutable_data_ptr<float>();
  MMH_DISPATCH_SIMD_TYPES(feat.scalar_type(), "rad_pool_simd", [&] {
    const scalar_t* f = feat.const_data_ptr<scalar_t>();
    at::parallel_for(0, B * nblk, grain(16 * HW), [&](int64_t begin, int64_t end) {
      pool_range(f, cp, C, begin, end, B * nblk, o);
    });
    if (C8 == C) return;
    for_items(B * (C - C8), 2 * HW, [&](int64_t i) { pool_tail(f, cp, C, i / (C - C8), C8 + i % (C - C8), o); });
  });
}

void unpool_simd(const at::Tensor& dg, int64_t grid, at::Tensor& dfeat) {
  const int64_t B = dfeat.size(0), C = dfeat.size(1), HW = dfeat.size(2) * dfeat.size(3);
  const int64_t nblk = C / 8, C8 = nblk * 8;
  const CellPixels cp(dfeat.size(2), dfeat.size(3), grid);
  const float* g = dg.const_data_ptr<float>();
  MMH_DISPATCH_SIMD_TYPES(dfeat.scalar_type(), "rad_unpool_simd", [&] {
    scalar_t* o = dfeat.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B * nblk, grain(16 * HW), [&](int64_t begin, int64_t end) {
      unpool_blocks(g, cp, C, HW, begin, end, o);
    });
    if (C8 == C) return;
    for_items(B * (C - C8), 2 * HW, [&](int64_t i) { unpool_tail(g, cp, C, i / (C - C8), C8 + i % (C - C8), o); });
  });
}
#endif

void pool_cpu(const at::Tensor& feat, int64_t grid, at::Tensor& out) {
  const int64_t B = feat.size(0), C = feat.size(1), H = feat.size(2), W = feat.size(3), G2 = grid * grid;
#if MMH_EXT_RAD_AVX
  if (!emulate_device_kernels()) {
    // float16/bfloat16 maps in another layout (e.g. channels_last under autocast): a contiguous copy (half the
    // size of a float32 one) and the AVX pooling beat the per-item path, their only other way.
    const bool half = feat.scalar_type() == at::kHalf || feat.scalar_type() == at::kBFloat16;
    const at::Tensor f = half && !feat.is_contiguous() ? feat.contiguous() : feat;
    if (simd_pooling(f, out)) return pool_simd(f, grid, out);
  }
#endif
  if (!emulate_device_kernels() && feat.scalar_type() == out.scalar_type()) {
    // Fast path: pooling is linear, so per sample it is one GEMM with the pooling matrix, written straight into
    // out[b] (G2, C) = P^T (G2, HW) @ feat[b] (HW, C) — feat[b] read in place (NCHW: a transposed operand).
    if (H == grid && W == grid) {  // the pooling is the identity: only the layout changes
      out.copy_(feat.reshape({B, C, G2}).transpose(1, 2));
      return;
    }
    const bool nchw = feat.is_contiguous(), nhwc = !nchw && feat.is_contiguous(at::MemoryFormat::ChannelsLast);
    if (nchw || nhwc) {
      const at::Tensor Pt = pooling_matrix(H, W, grid, out.scalar_type()).t().expand({B, G2, H * W});
      const at::Tensor f = nchw ? feat.view({B, C, H * W}).transpose(1, 2)
                                : feat.permute({0, 2, 3, 1}).reshape({B, H * W, C});  // a view
      at::bmm_out(out, Pt, f);
      return;
    }
  }
  // The CUDA kernel's items: device emulation, float16/bfloat16 features (read as they are, summed in float32),
  // and any other strides.
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, feat.scalar_type(), "rad_pool_cpu", [&] {
    using acc = acc_t<scalar_t>;
    const scalar_t* f = feat.const_data_ptr<scalar_t>();
    acc* o = out.mutable_data_ptr<acc>();
    const int64_t sb = feat.stride(0), sc = feat.stride(1), sh = feat.stride(2), sw = feat.stride(3);
    for_items(B * G2 * C, H * W / G2 + 1, [&](int64_t i) { pool_item(i, f, sb, sc, sh, sw, H, W, C, grid, o); });
  });
}

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

// From how many classes on the separate kernels take the k-major GEMM with the GEMMs side by side, and the fused
// region math. Below (K = 2 in the benchmark) the earlier path — MKL splitting each GEMM, the region math as ATen ops —
// was as fast or faster in repeated runs of bench_ops.py on this 2-core machine. (The chunked passes below run the
// AVX region math at every class count.)
constexpr int64_t kFusedMinClasses = 16;
bool many_classes(int64_t K) { return K >= kFusedMinClasses; }

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

#if MMH_EXT_RAD_AVX
// The AVX forward region math of one sample at a time from k-major cell logits (rad_region_avx.h), for the separate
// kernels and the chunked passes alike: the biases zero-padded to whole vectors once; per sample, each network's
// cell logits copied into cell-major rows, then region_forward_sample.
struct RegionForward {
  const Pyramid& p;
  int64_t K, G2, N, ldc;
  float inv_t, t2;
  std::vector<float> bias;  // student then teacher, ldc floats each
  RegionForward(const Pyramid& p, const at::Tensor& bs, const at::Tensor& bt, double temperature)
      : p(p), K(bs.size(0)), G2(p.grid * p.grid), N(p.num_regions), ldc((K + 7) / 8 * 8),
        inv_t(static_cast<float>(1.0 / temperature)), t2(static_cast<float>(temperature * temperature)),
        bias(2 * ldc, 0.f) {
    const at::Tensor b_s = bs.to(at::kFloat).contiguous(), b_t = bt.to(at::kFloat).contiguous();
    std::copy(b_s.const_data_ptr<float>(), b_s.const_data_ptr<float>() + K, bias.begin());
    std::copy(b_t.const_data_ptr<float>(), b_t.const_data_ptr<float>() + K, bias.begin() + ldc);
  }
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
    for_items(B * G2 * K, 4 * p.num_levels, [&](int64_t i) { cell_grad_item(i, g, gb, gn, s, t, r, p, K, temp, ds, dt); });
  });
}

void unpool_cpu(const at::Tensor& dg, int64_t grid, at::Tensor& dfeat) {
  const bool fast = !emulate_device_kernels();
#if MMH_EXT_RAD_AVX
  if (fast && simd_pooling(dfeat, dg)) return unpool_simd(dg, grid, dfeat);
#endif
  const int64_t B = dfeat.size(0), C = dfeat.size(1), H = dfeat.size(2), W = dfeat.size(3), G2 = grid * grid;
  if (fast && dfeat.scalar_type() == dg.scalar_type()) {
    if (H == grid && W == grid) {  // adjoint of the identity pooling: a transpose
      dfeat.view({B, C, G2}).copy_(dg.transpose(1, 2));
      return;
    }
    // The adjoint of the pooling GEMM, per sample, into dfeat: dfeat[b] (C, HW) = dg[b]^T (C, G2) @ P^T (G2, HW).
    const at::Tensor Pt = pooling_matrix(H, W, grid, dg.scalar_type()).t().expand({B, G2, H * W});
    at::Tensor out = dfeat.view({B, C, H * W});
    at::bmm_out(out, dg.transpose(1, 2), Pt);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dfeat.scalar_type(), "rad_unpool_cpu", [&] {
    using acc = acc_t<scalar_t>;
    const acc* g = dg.const_data_ptr<acc>();
    scalar_t* o = dfeat.mutable_data_ptr<scalar_t>();
    for_items(dfeat.numel(), 8, [&](int64_t i) { unpool_item(i, g, C, H, W, grid, o); });
  });
}

// A pass's independent GEMMs run side by side: each thread takes whole GEMMs when there are at least as many as
// threads, otherwise each GEMM is cut into blocks of output rows, one per thread. RAD's GEMMs are small (at B = 64,
// C = 512, K = 60 each is 1024 x 512 x 60, 63 MFLOP): MKL splitting one over 2 threads takes 0.34-0.43 ms, while two
// whole ones on one thread each take 0.65-0.69 ms together (this machine, torch.utils.benchmark). Inside the parallel
// region MKL runs single-threaded (nested OpenMP), and at::cpu::mm_out calls the CPU kernel directly (no dispatcher,
// no autograd: the worker threads do not share the caller's dispatch state).
void gemms_cpu(std::vector<Gemm>& jobs, int64_t classes) {
  const int64_t threads = at::get_num_threads();
  if (threads < 2 || !many_classes(classes) || at::in_parallel_region()) {
    for (Gemm& j : jobs) at::cpu::mm_out(j.out, j.a, j.b);  // MKL splits each over the threads
    return;
  }
  // The row blocks' views are made here, on the calling thread (a view goes through the dispatcher, whose state the
  // worker threads do not share); the workers only call the CPU kernel.
  std::vector<Gemm> pieces;
  const int64_t per_job = (threads + static_cast<int64_t>(jobs.size()) - 1) / static_cast<int64_t>(jobs.size());
  for (Gemm& j : jobs) {
    const int64_t M = j.out.size(0), n = std::max<int64_t>(1, std::min(per_job, M));
    for (int64_t c = 0; c < n; ++c) {
      const int64_t r0 = M * c / n, r1 = M * (c + 1) / n;
      pieces.push_back(n == 1 ? j : Gemm{j.out.narrow(0, r0, r1 - r0), j.a.narrow(0, r0, r1 - r0), j.b});
    }
  }
  at::parallel_for(0, static_cast<int64_t>(pieces.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) at::cpu::mm_out(pieces[i].out, pieces[i].a, pieces[i].b);
  });
}

#if MMH_EXT_RAD_AVX
// ------------------------------------------------------------------------------------------------ fused passes
// Where the AVX kernels apply (float32 computation, NCHW float32/float16/bfloat16 maps of >= 8 channels, AVX2 + FMA)
// and there are at least as many samples as threads, each pass runs as one parallel loop over chunks of samples:
// forward, a chunk's two maps are pooled, its cell logits computed (two small GEMMs, k-major) and its region math
// run while its rows are in cache; backward (student side), a chunk's cell gradients, d pooled (a GEMM) and its
// unpooling into d feat, with d weight and d bias summed per chunk. The separate kernels above each make a pass
// over the whole batch with a barrier between: at B = 64, C = 512, 7x7, K = 60, on 2 threads, their pooled, cell and
// d pooled buffers (2 MiB each) went to memory and back between passes, and the memory-bound passes (pooling,
// unpooling) left a core's FMA units idle while the compute-bound GEMMs waited for them. Here the threads run their
// chunks independently, so one thread's GEMM overlaps the other's pooling.

// Samples per chunk: about 128 GEMM rows (G2 rows a sample), and about 4 chunks per thread where the batch allows.
int64_t chunk_samples(int64_t B, int64_t G2, int64_t threads) {
  const int64_t by_rows = std::max<int64_t>(1, 128 / G2);
  const int64_t by_threads = std::max<int64_t>(1, B / (4 * threads));
  return std::min(by_rows, by_threads);
}

// The most memory the chunked backward's per-chunk d weight partial sums may take together.
constexpr int64_t kMaxPartialBytes = int64_t{64} << 20;

// A pass touching fewer values than this runs on the calling thread (waking a sleeping OpenMP thread costs tens of
// microseconds on a VM, more than such a pass).
constexpr int64_t kParallelWork = int64_t{1} << 17;

// Run body(c, state) for every chunk c in [0, chunks): each thread makes its state (scratch buffers) once, then
// takes the next chunk not yet taken until none is left, so a thread slowed down (another process on its core, a
// chunk whose maps are not in cache) takes fewer chunks instead of holding the others at the loop's end. Which thread
// runs a chunk does not change what the chunk computes: every chunk writes its own rows and partial sums. work: about
// how many values the pass reads and writes.

template <typename MakeState, typename Body>
void for_chunks(int64_t chunks, int64_t work, const MakeState& make_state, const Body& body) {
  std::atomic<int64_t> next{0};
  const int64_t threads = work < kParallelWork ? 1 : std::min<int64_t>(at::get_num_threads(), chunks);
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    auto state = make_state();
    for (int64_t c = next++; c < chunks; c = next++) body(c, state);
  });
}

bool fused_applies(const at::Tensor& feat, int64_t B) {
  if (cpu_kernel_mode() != CpuKernelMode::kFast || !cpu_has_avx2_fma() || at::in_parallel_region()) return false;
  const auto t = feat.scalar_type();
  return (t == at::kFloat || t == at::kHalf || t == at::kBFloat16) && feat.is_contiguous() && feat.size(1) >= 8 &&
         B >= at::get_num_threads();
}

// A float matrix over memory this thread owns, made without the dispatcher (at::from_blob builds the TensorImpl
// directly): the workers of a parallel loop do not share the caller's dispatch state, and the GEMMs below are called
// through at::cpu::, straight to the CPU kernel.
at::Tensor matrix(const float* data, int64_t rows, int64_t cols, int64_t row_stride, int64_t col_stride) {
  return at::from_blob(const_cast<float*>(data), {rows, cols}, {row_stride, col_stride}, at::dtype(at::kFloat));
}

// A feature map (or its gradient) as the worker threads see it: the data pointer, taken on the calling thread, and
// the sizes.
struct Map {
  void* data;
  at::ScalarType dtype;
  int64_t B, C;
  explicit Map(const at::Tensor& t) : data(t.data_ptr()), dtype(t.scalar_type()), B(t.size(0)), C(t.size(1)) {}
};

// Scratch floats from the CPU allocator (64-byte aligned, as ATen's tensors: MKL's results can depend on its
// operands' alignment, and std::vector's differs from thread to thread), uninitialised.
struct Floats {
  at::DataPtr mem;
  explicit Floats(int64_t n) : mem(c10::GetCPUAllocator()->allocate(n * sizeof(float))) {}
  float* data() const { return static_cast<float*>(mem.get()); }
};

// Pool samples [b0, b1) of feat (B, C, H, W) into out (B, G2, C), on this thread.
void pool_samples(const Map& feat, const CellPixels& cp, int64_t b0, int64_t b1, float* out) {
  const int64_t B = feat.B, C = feat.C, HW = cp.H * cp.W, nblk = C / 8, C8 = nblk * 8;
  MMH_DISPATCH_SIMD_TYPES(feat.dtype, "rad_pool_samples", [&] {
    const scalar_t* f = static_cast<const scalar_t*>(feat.data);
    pool_range(f + b0 * C * HW, cp, C, 0, (b1 - b0) * nblk, (B - b0) * nblk, out + b0 * cp.grid * cp.grid * C);
    for (int64_t b = b0; b < b1; ++b)
      for (int64_t c = C8; c < C; ++c) pool_tail(f, cp, C, b, c, out);
  });
}

// Unpool dg (the (b1 - b0) * G2 rows of samples [b0, b1), C floats each) into samples [b0, b1) of dfeat.
void unpool_samples(const float* dg, const CellPixels& cp, int64_t b0, int64_t b1, const Map& dfeat) {
  const int64_t C = dfeat.C, HW = cp.H * cp.W, nblk = C / 8, C8 = nblk * 8;
  MMH_DISPATCH_SIMD_TYPES(dfeat.dtype, "rad_unpool_samples", [&] {
    scalar_t* o = static_cast<scalar_t*>(dfeat.data) + b0 * C * HW;
    unpool_blocks(dg, cp, C, HW, 0, (b1 - b0) * nblk, o);
    for (int64_t b = 0; b < b1 - b0; ++b)
      for (int64_t c = C8; c < C; ++c) unpool_tail(dg, cp, C, b, c, o);
  });
}

bool fused_forward_cpu(const at::Tensor& fs, const at::Tensor& ft, const at::Tensor& ws, const at::Tensor& bs,
                       const at::Tensor& wt, const at::Tensor& bt, const Pyramid& p, double temperature,
                       at::Tensor& loss, at::Tensor& gs, at::Tensor& gt, at::Tensor& ls, at::Tensor& lt) {
  const int64_t B = fs.size(0);
  if (loss.scalar_type() != at::kFloat || !fused_applies(fs, B) || !fused_applies(ft, B)) return false;
  const int64_t K = ws.size(0), G2 = p.grid * p.grid, N = p.num_regions, Cs = fs.size(1), Ct = ft.size(1);
  const int64_t per = chunk_samples(B, G2, at::get_num_threads()), chunks = (B + per - 1) / per;
  const at::Tensor Ws = ws.to(at::kFloat).contiguous(), Wt = wt.to(at::kFloat).contiguous();
  const RegionForward rf(p, bs, bt, temperature);
  const CellPixels cps(fs.size(2), fs.size(3), p.grid), cpt(ft.size(2), ft.size(3), p.grid);
  const Map ms(fs), mt(ft);
  float *os = gs.mutable_data_ptr<float>(), *ot = gt.mutable_data_ptr<float>();
  float *l = loss.mutable_data_ptr<float>(), *zs = ls.mutable_data_ptr<float>(), *zt = lt.mutable_data_ptr<float>();
  ++rad_cpu_fused_passes();
  struct Scratch {
    Floats ks, kt, region;
  };
  const auto make = [&] { return Scratch{Floats(K * per * G2), Floats(K * per * G2), Floats(rf.scratch_floats())}; };
  const int64_t work = B * (Cs * cps.H * cps.W + Ct * cpt.H * cpt.W + G2 * (Cs + Ct) + 2 * N * K);
  for_chunks(chunks, work, make, [&](int64_t c, Scratch& m) {
    const int64_t b0 = c * per, b1 = std::min(B, b0 + per), rows = (b1 - b0) * G2;
    pool_samples(ms, cps, b0, b1, os);
    pool_samples(mt, cpt, b0, b1, ot);
    // k-major cell logits (K, rows) = W (K, C) @ pooled rows^T
    at::Tensor out_s = matrix(m.ks.data(), K, rows, rows, 1), out_t = matrix(m.kt.data(), K, rows, rows, 1);
    at::cpu::mm_out(out_s, Ws, matrix(os + b0 * G2 * Cs, Cs, rows, 1, Cs));
    at::cpu::mm_out(out_t, Wt, matrix(ot + b0 * G2 * Ct, Ct, rows, 1, Ct));
    for (int64_t b = b0; b < b1; ++b)
      rf.sample(m.ks.data() + (b - b0) * G2, m.kt.data() + (b - b0) * G2, rows, b, zs, zt, l, m.region.data());
  });
  return true;
}

bool fused_backward_cpu(const at::Tensor& grad, const at::Tensor& gs, const at::Tensor& ls, const at::Tensor& lt,
                        const at::Tensor& w, const Pyramid& p, double temperature, at::Tensor& dfeat, at::Tensor& dw,
                        at::Tensor& db) {
  const int64_t B = ls.size(0);
  if (ls.scalar_type() != at::kFloat || !fused_applies(dfeat, B)) return false;
  const int64_t N = ls.size(1), K = ls.size(2), G2 = p.grid * p.grid, C = w.size(1), Kp = (K + 7) / 8 * 8;
  // what the forward saved; a direct caller of rad_backward may pass anything: the separate kernels check it
  if (lt.sizes() != ls.sizes() || lt.scalar_type() != at::kFloat || grad.scalar_type() != at::kFloat) return false;
  if (dw.defined() && (gs.scalar_type() != at::kFloat || !gs.is_contiguous() || gs.sizes() != at::IntArrayRef{B, G2, C}))
    return false;
  const int64_t threads = at::get_num_threads();
  const int64_t per = chunk_samples(B, G2, threads), chunks = (B + per - 1) / per;
  // a (K, C) partial d weight per chunk: not past kMaxPartialBytes in all (a large classifier over many chunks takes
  // the separate kernels, whose d weight is one GEMM)
  if (dw.defined() && chunks * K * C * static_cast<int64_t>(sizeof(float)) > kMaxPartialBytes) return false;
  const at::Tensor W = w.to(at::kFloat).contiguous(), lsc = ls.contiguous(), ltc = lt.contiguous();
  const float *g = grad.const_data_ptr<float>(), *s = lsc.const_data_ptr<float>(), *t = ltc.const_data_ptr<float>();
  const int64_t gb = grad.stride(0), gn = grad.stride(1);
  const float* pooled = dw.defined() ? gs.const_data_ptr<float>() : nullptr;
  const CellPixels cp(dfeat.size(2), dfeat.size(3), p.grid);
  // d weight and d bias: one partial sum per chunk (each 64-byte aligned), added up in chunk order below — the same
  // bits whichever thread ran which chunk
  const int64_t ldw = (K * C + 15) / 16 * 16, ldb = (K + 15) / 16 * 16;
  Floats dw_part(dw.defined() ? chunks * ldw : 0), db_part(chunks * ldb);
  const Map mf(dfeat);
  ++rad_cpu_fused_passes();
  struct Scratch {
    Floats dc, dg, acc;
  };
  const auto make = [&] { return Scratch{Floats(per * G2 * K), Floats(per * G2 * C), Floats(2 * G2 * Kp)}; };
  const int64_t work = B * (C * cp.H * cp.W + G2 * C + 2 * N * K) + (dw.defined() ? chunks * K * C : 0);
  for_chunks(chunks, work, make, [&](int64_t c, Scratch& m) {
    const int64_t b0 = c * per, b1 = std::min(B, b0 + per), rows = (b1 - b0) * G2;
    float* dc = m.dc.data();
    for (int64_t b = b0; b < b1; ++b)
      cell_grads_sample(g + b * gb, gn, s + b * N * K, t + b * N * K, nullptr, p, K, static_cast<float>(temperature),
                        dc + (b - b0) * G2 * K, nullptr, m.acc.data());
    float* dbc = db_part.data() + c * ldb;
    std::fill(dbc, dbc + K, 0.f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < K; ++k) dbc[k] += dc[r * K + k];
    const at::Tensor dcm = matrix(dc, rows, K, K, 1);
    if (pooled != nullptr) {  // d weight (K, C) of the chunk = d cells^T (K, rows) @ pooled rows (rows, C)
      at::Tensor part = matrix(dw_part.data() + c * ldw, K, C, C, 1);
      at::cpu::mm_out(part, matrix(dc, K, rows, 1, K), matrix(pooled + b0 * G2 * C, rows, C, C, 1));
    }
    at::Tensor dgm = matrix(m.dg.data(), rows, C, C, 1);
    at::cpu::mm_out(dgm, dcm, W);  // d pooled (rows, C) = d cells (rows, K) @ W (K, C)
    unpool_samples(m.dg.data(), cp, b0, b1, mf);
  });
  // the chunks' partial sums, in chunk order
  const auto add_parts = [chunks](const float* parts, int64_t ld, float* out, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = parts[i];
    for (int64_t c = 1; c < chunks; ++c)
      for (int64_t i = begin; i < end; ++i) out[i] += parts[c * ld + i];
  };
  add_parts(db_part.data(), ldb, db.mutable_data_ptr<float>(), 0, K);
  if (dw.defined()) {
    const float* parts = dw_part.data();
    float* out = dw.mutable_data_ptr<float>();
    at::parallel_for(0, K * C, 4096, [&](int64_t begin, int64_t end) { add_parts(parts, ldw, out, begin, end); });
  }
  return true;
}
#else
constexpr auto fused_forward_cpu = nullptr;
constexpr auto fused_backward_cpu = nullptr;
#endif

const Kernels kCpu{pool_cpu, forward_cpu, cell_grads_cpu, unpool_cpu, gemms_cpu, many_classes, fused_forward_cpu,
                   fused_backward_cpu};

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
