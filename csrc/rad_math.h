// Region-aware distillation (RAD), per-item math: fused spatial-pyramid region logits + KL.
//
// Semantics (per network): g = adaptive_avg_pool2d(feat, grid); for each s in levels, adaptive_avg_pool2d(g, s)
// flattened row-major; levels concatenated -> N regions; region logits = fc(cell); per (sample, region)
// T^2 * KL(softmax(teacher / T) || softmax(student / T)).
//
// Fusion: the classifier is linear, so fc(mean of cells) = mean over cells of the per-cell logits. Each network's
// grid cells are projected to K logits once (one GEMM, B*grid^2 x C x K) and every pyramid region is a box mean over
// K-vectors — no region ever pools C-vectors.
//
// This header: the per-item __host__ __device__ math (MMH_HD), no ATen. The *_item functions at the end are the whole
// bodies of the CUDA kernels (cuda/rad.cu, one thread per item; the forward in two launches, per (sample, region,
// class) for the region logits and per (sample, region) for the softmax rows and the KL; the backward in one, per
// (sample, cell, class)). The CPU kernels (cpu/rad*.cpp) run them for every item
// in device-emulation mode (mode.h); in the default mode only the (un)pooling ones, for float16/bfloat16 feature maps
// and layouts other than NCHW / channels_last, and GEMMs and ATen ops over whole blocks otherwise. The host API
// (validation, GEMMs, the kernel table) is rad.h.
#pragma once

#include "common.h"

namespace mmh_ext {
namespace rad {

constexpr int kMaxLevels = 8;

// A spatial pyramid over a grid x grid map: levels (each <= grid), row-major cells, levels concatenated in order.
struct Pyramid {
  int64_t grid;
  int64_t num_levels;
  int64_t levels[kMaxLevels];
  int64_t num_regions;
};

struct Rect {
  int64_t y0, y1, x0, x1;  // half-open, in grid cells
};

MMH_HD Rect region_rect(const Pyramid& p, int64_t n) {
  Rect r{0, p.grid, 0, p.grid};
  for (int64_t l = 0; l < p.num_levels; ++l) {
    const int64_t s = p.levels[l];
    if (n < s * s) {
      const int64_t iy = n / s, ix = n % s;
      r.y0 = adaptive_start(iy, s, p.grid);
      r.y1 = adaptive_end(iy, s, p.grid);
      r.x0 = adaptive_start(ix, s, p.grid);
      r.x1 = adaptive_end(ix, s, p.grid);
      return r;
    }
    n -= s * s;
  }
  return r;
}

// Mean of feat[b, c, cell] over the pixels of grid cell `cell` (row-major in grid x grid); any strides. I: the index
// type (int64_t, or int32_t where every offset fits).
template <typename scalar_t, typename I>
MMH_HD acc_t<scalar_t> pool_cell(const scalar_t* feat, I sb, I sc, I sh, I sw, I H, I W, I grid, I b, I c, I cell) {
  using acc = acc_t<scalar_t>;
  const I cy = cell / grid, cx = cell % grid;
  const I y0 = adaptive_start(cy, grid, H), y1 = adaptive_end(cy, grid, H);
  const I x0 = adaptive_start(cx, grid, W), x1 = adaptive_end(cx, grid, W);
  const scalar_t* base = feat + b * sb + c * sc;
  acc sum = acc(0);
  for (I y = y0; y < y1; ++y) {
    const scalar_t* row = base + y * sh;
    for (I x = x0; x < x1; ++x) sum += static_cast<acc>(row[x * sw]);
  }
  return sum / static_cast<acc>((y1 - y0) * (x1 - x0));
}

// Adjoint of the grid pooling: d feat[b, c, y, x] = sum over grid cells containing (y, x) of dg[b, cell, c] / area.
// dg is (B, grid*grid, C) contiguous.
template <typename acc, typename I>
MMH_HD acc unpool_pixel(const acc* dg, I C, I H, I W, I grid, I b, I c, I y, I x) {
  // Bins i with start(i) <= y < end(i): i in [floor(y*grid/H), floor(((y+1)*grid-1)/H)] (<= grid-1 as y < H).
  const I iy0 = (y * grid) / H, iy1 = ((y + 1) * grid - 1) / H;
  const I ix0 = (x * grid) / W, ix1 = ((x + 1) * grid - 1) / W;
  const acc* base = dg + b * grid * grid * C + c;
  acc sum = acc(0);
  for (I iy = iy0; iy <= iy1; ++iy) {
    const I hy = adaptive_end(iy, grid, H) - adaptive_start(iy, grid, H);
    for (I ix = ix0; ix <= ix1; ++ix) {
      const I wx = adaptive_end(ix, grid, W) - adaptive_start(ix, grid, W);
      sum += base[(iy * grid + ix) * C] / static_cast<acc>(hy * wx);
    }
  }
  return sum;
}

// Region logit / T of one (sample, region, class): the mean over the region's cells of the cell logits, plus the
// bias, over T. cells: the sample's per-cell logits (grid*grid, K) without bias.
template <typename acc>
MMH_HD acc region_logit(const acc* cells, acc bias, int64_t K, int64_t grid, const Rect& r, int64_t k, acc inv_t) {
  acc sum = acc(0);
  for (int64_t y = r.y0; y < r.y1; ++y)
    for (int64_t x = r.x0; x < r.x1; ++x) sum += cells[(y * grid + x) * K + k];
  return (sum / static_cast<acc>((r.y1 - r.y0) * (r.x1 - r.x0)) + bias) * inv_t;
}

// Log-softmax of one row of K logits, in place.
template <typename acc>
MMH_HD void log_softmax_row(acc* z, int64_t K) {
  acc m = acc(-INFINITY);
  for (int64_t k = 0; k < K; ++k) m = mmh_max(z[k], m);
  acc s = acc(0);
  for (int64_t k = 0; k < K; ++k) s += mmh_exp(z[k] - m);
  const acc lse = m + mmh_log(s);
  for (int64_t k = 0; k < K; ++k) z[k] -= lse;
}

// KL(p_t || p_s) from the two log-softmax rows.
template <typename acc>
MMH_HD acc kl_from_logp(const acc* ls, const acc* lt, int64_t K) {
  acc kl = acc(0);
  for (int64_t k = 0; k < K; ++k) kl += mmh_exp(lt[k]) * (lt[k] - ls[k]);
  return kl;
}

// Backward. For one (sample, region) with upstream gradient g, the gradient of g * T^2 * KL(p_t || p_s) w.r.t. the
// region logits (before the 1/T scaling) is
//   d/dz_s = g * T * (p_s - p_t),   d/dz_t = g * T * p_t * (log p_t - log p_s - KL),
// and a cell's logit gradient sums those of the regions that contain it, each over the region's area (a region
// logit is the mean of its cells'). Bins of one level may overlap when grid is not a multiple of the level size.
// Calls visit(n, inv_area) for every region n that contains grid cell (cy, cx).
template <typename F>
MMH_HD void for_regions_of_cell(const Pyramid& p, int64_t cy, int64_t cx, F visit) {
  int64_t first = 0;  // index of the level's first region
  for (int64_t l = 0; l < p.num_levels; ++l) {
    const int64_t s = p.levels[l], G = p.grid;
    // bins i of s over G with start(i) <= c < end(i): i in [floor(c*s/G), floor(((c+1)*s-1)/G)] (<= s-1 as c < G)
    const int64_t iy0 = (cy * s) / G, iy1 = ((cy + 1) * s - 1) / G;
    const int64_t ix0 = (cx * s) / G, ix1 = ((cx + 1) * s - 1) / G;
    for (int64_t iy = iy0; iy <= iy1; ++iy) {
      const int64_t h = adaptive_end(iy, s, G) - adaptive_start(iy, s, G);
      for (int64_t ix = ix0; ix <= ix1; ++ix) {
        const int64_t w = adaptive_end(ix, s, G) - adaptive_start(ix, s, G);
        visit(first + iy * s + ix, h * w);
      }
    }
    first += s * s;
  }
}

// ---- one work item of each kernel, by flat index: the whole body of the CUDA kernels (one thread per item) and of
// the CPU kernels in device-emulation mode (see mode.h). ----

// i = (b * grid^2 + cell) * C + c  ->  pooled[b, cell, c]
template <typename scalar_t, typename I>
MMH_HD void pool_item(I i, const scalar_t* f, I sb, I sc, I sh, I sw, I H, I W, I C, I grid, acc_t<scalar_t>* out) {
  const I G2 = grid * grid;
  const I c = i % C, cell = (i / C) % G2, b = i / (C * G2);
  out[i] = pool_cell(f, sb, sc, sh, sw, H, W, grid, b, c, cell);
}

// i = (b * N + n) * K + k  ->  region logits / T of both networks (then log-softmaxed in place by row_item)
template <typename acc>
MMH_HD void logits_item(int64_t i, const acc* cs, const acc* ct, const acc* bs, const acc* bt, const Pyramid& p,
                        int64_t K, acc inv_t, acc* zs, acc* zt) {
  const int64_t G2 = p.grid * p.grid;
  const int64_t k = i % K, n = (i / K) % p.num_regions, b = i / (K * p.num_regions);
  const Rect r = region_rect(p, n);
  zs[i] = region_logit(cs + b * G2 * K, bs[k], K, p.grid, r, k, inv_t);
  zt[i] = region_logit(ct + b * G2 * K, bt[k], K, p.grid, r, k, inv_t);
}

// i = b * N + n  ->  the rows of (b, n) log-softmaxed in place, and the loss T^2 * KL(p_t || p_s) of (b, n)
template <typename acc>
MMH_HD void row_item(int64_t i, int64_t K, acc t2, acc* ls, acc* lt, acc* loss) {
  log_softmax_row(ls + i * K, K);
  log_softmax_row(lt + i * K, K);
  loss[i] = t2 * kl_from_logp(ls + i * K, lt + i * K, K);
}

// i = (b * grid^2 + cell) * K + k  ->  d cell logits of (b, cell, k) for each side that is not null. g: the upstream
// gradient (B, N), element (b, n) at g[b * gb + n * gn] (any strides: the gradient of a mean is an expanded scalar).
// kl: KL(p_t || p_s) of each (b, n), (B, N) contiguous, read only for the teacher side (dt not null).
template <typename acc>
MMH_HD void cell_grad_item(int64_t i, const acc* g, int64_t gb, int64_t gn, const acc* ls, const acc* lt, const acc* kl,
                           const Pyramid& p, int64_t K, acc t, acc* ds, acc* dt) {
  const int64_t G2 = p.grid * p.grid, N = p.num_regions;
  const int64_t k = i % K, cell = (i / K) % G2, b = i / (K * G2);
  acc sum_s = acc(0), sum_t = acc(0);
  for_regions_of_cell(p, cell / p.grid, cell % p.grid, [&](int64_t n, int64_t area) {
    const int64_t row = (b * N + n) * K;
    const acc scale = g[b * gb + n * gn] * t / static_cast<acc>(area);
    const acc pt = mmh_exp(lt[row + k]);
    if (ds != nullptr) sum_s += scale * (mmh_exp(ls[row + k]) - pt);
    if (dt != nullptr) sum_t += scale * pt * (lt[row + k] - ls[row + k] - kl[b * N + n]);
  });
  if (ds != nullptr) ds[i] = sum_s;
  if (dt != nullptr) dt[i] = sum_t;
}

// i = ((b * C + c) * H + y) * W + x  ->  d feat, NCHW contiguous
template <typename scalar_t, typename I>
MMH_HD void unpool_item(I i, const acc_t<scalar_t>* dg, I C, I H, I W, I grid, scalar_t* out) {
  const I x = i % W, y = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
  out[i] = static_cast<scalar_t>(unpool_pixel(dg, C, H, W, grid, b, c, y, x));
}

}  // namespace rad
}  // namespace mmh_ext
