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
// bodies of the CUDA kernels (cuda/rad.cu, one thread per item). The CPU kernels (cpu/rad.cpp) run them for every item
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

// Mean of feat[b, c, cell] over the pixels of grid cell `cell` (row-major in grid x grid); any strides.
template <typename scalar_t>
MMH_HD acc_t<scalar_t> pool_cell(const scalar_t* feat, int64_t sb, int64_t sc, int64_t sh, int64_t sw, int64_t H,
                                 int64_t W, int64_t grid, int64_t b, int64_t c, int64_t cell) {
  using acc = acc_t<scalar_t>;
  const int64_t cy = cell / grid, cx = cell % grid;
  const int64_t y0 = adaptive_start(cy, grid, H), y1 = adaptive_end(cy, grid, H);
  const int64_t x0 = adaptive_start(cx, grid, W), x1 = adaptive_end(cx, grid, W);
  const scalar_t* base = feat + b * sb + c * sc;
  acc sum = acc(0);
  for (int64_t y = y0; y < y1; ++y) {
    const scalar_t* row = base + y * sh;
    for (int64_t x = x0; x < x1; ++x) sum += static_cast<acc>(row[x * sw]);
  }
  return sum / static_cast<acc>((y1 - y0) * (x1 - x0));
}

// Adjoint of the grid pooling: d feat[b, c, y, x] = sum over grid cells containing (y, x) of dg[b, cell, c] / area.
// dg is (B, grid*grid, C) contiguous.
template <typename acc>
MMH_HD acc unpool_pixel(const acc* dg, int64_t C, int64_t H, int64_t W, int64_t grid, int64_t b, int64_t c, int64_t y,
                        int64_t x) {
  // Bins i with start(i) <= y < end(i): i in [floor(y*grid/H), min(grid-1, ((y+1)*grid-1)/H)].
  const int64_t iy0 = (y * grid) / H, iy1 = ((y + 1) * grid - 1) / H < grid - 1 ? ((y + 1) * grid - 1) / H : grid - 1;
  const int64_t ix0 = (x * grid) / W, ix1 = ((x + 1) * grid - 1) / W < grid - 1 ? ((x + 1) * grid - 1) / W : grid - 1;
  const acc* base = dg + b * grid * grid * C + c;
  acc sum = acc(0);
  for (int64_t iy = iy0; iy <= iy1; ++iy) {
    const int64_t hy = adaptive_end(iy, grid, H) - adaptive_start(iy, grid, H);
    for (int64_t ix = ix0; ix <= ix1; ++ix) {
      const int64_t wx = adaptive_end(ix, grid, W) - adaptive_start(ix, grid, W);
      sum += base[(iy * grid + ix) * C] / static_cast<acc>(hy * wx);
    }
  }
  return sum;
}

// Region logits / T of one (sample, region) written to `out` (K values), then turned into log-softmax in place.
// cells: the sample's per-cell logits (grid*grid, K) without bias.
template <typename acc>
MMH_HD void region_log_softmax(const acc* cells, const acc* bias, int64_t K, int64_t grid, const Rect& r, acc inv_t,
                               acc* out) {
  const acc inv_area = acc(1) / static_cast<acc>((r.y1 - r.y0) * (r.x1 - r.x0));
  for (int64_t k = 0; k < K; ++k) out[k] = acc(0);
  for (int64_t y = r.y0; y < r.y1; ++y)
    for (int64_t x = r.x0; x < r.x1; ++x) {
      const acc* cell = cells + (y * grid + x) * K;
      for (int64_t k = 0; k < K; ++k) out[k] += cell[k];
    }
  acc m = acc(-INFINITY);
  for (int64_t k = 0; k < K; ++k) {
    out[k] = (out[k] * inv_area + bias[k]) * inv_t;
    m = mmh_max(out[k], m);
  }
  acc s = acc(0);
  for (int64_t k = 0; k < K; ++k) s += mmh_exp(out[k] - m);
  const acc lse = m + mmh_log(s);
  for (int64_t k = 0; k < K; ++k) out[k] -= lse;
}

// T^2 * KL(p_t || p_s) from the two log-softmax rows.
template <typename acc>
MMH_HD acc kl_from_logp(const acc* ls, const acc* lt, int64_t K, acc t2) {
  acc kl = acc(0);
  for (int64_t k = 0; k < K; ++k) {
    const acc pt = mmh_exp(lt[k]);
    kl += pt * (lt[k] - ls[k]);
  }
  return t2 * kl;
}

// Gradient of g * T^2 * KL(p_t || p_s) w.r.t. the region logits (before the 1/T scaling), one (sample, region):
//   d/dz_s = g * T * (p_s - p_t),   d/dz_t = g * T * p_t * (log p_t - log p_s - KL).
// dzs / dzt may be null when that side needs no gradient.
template <typename acc>
MMH_HD void region_kl_backward(const acc* ls, const acc* lt, int64_t K, acc g, acc t, acc* dzs, acc* dzt) {
  acc kl = acc(0);
  if (dzt != nullptr) kl = kl_from_logp(ls, lt, K, acc(1));
  for (int64_t k = 0; k < K; ++k) {
    const acc pt = mmh_exp(lt[k]);
    if (dzs != nullptr) dzs[k] = g * t * (mmh_exp(ls[k]) - pt);
    if (dzt != nullptr) dzt[k] = g * t * pt * (lt[k] - ls[k] - kl);
  }
}

// d cells[b, cell, k] = sum over regions n containing the cell of dz[b, n, k] / area(n). One (sample, cell), K values.
template <typename acc>
MMH_HD void cell_grad(const acc* dz_b, const Pyramid& p, int64_t K, int64_t cell, acc* out) {
  const int64_t cy = cell / p.grid, cx = cell % p.grid;
  for (int64_t k = 0; k < K; ++k) out[k] = acc(0);
  for (int64_t n = 0; n < p.num_regions; ++n) {
    const Rect r = region_rect(p, n);
    if (cy < r.y0 || cy >= r.y1 || cx < r.x0 || cx >= r.x1) continue;
    const acc inv_area = acc(1) / static_cast<acc>((r.y1 - r.y0) * (r.x1 - r.x0));
    const acc* dz = dz_b + n * K;
    for (int64_t k = 0; k < K; ++k) out[k] += dz[k] * inv_area;
  }
}

// ---- one work item of each kernel, by flat index: the whole body of the CUDA kernels (one thread per item) and of
// the CPU kernels in device-emulation mode (see mode.h). ----

// i = (b * grid^2 + cell) * C + c  ->  pooled[b, cell, c]
template <typename scalar_t>
MMH_HD void pool_item(int64_t i, const scalar_t* f, int64_t sb, int64_t sc, int64_t sh, int64_t sw, int64_t H,
                      int64_t W, int64_t C, int64_t grid, acc_t<scalar_t>* out) {
  const int64_t G2 = grid * grid;
  const int64_t c = i % C, cell = (i / C) % G2, b = i / (C * G2);
  out[i] = pool_cell(f, sb, sc, sh, sw, H, W, grid, b, c, cell);
}

// i = b * N + n  ->  log-softmax rows of both networks and the loss of (b, n)
template <typename acc>
MMH_HD void forward_item(int64_t i, const acc* cs, const acc* ct, const acc* bs, const acc* bt, const Pyramid& p,
                         int64_t K, acc inv_t, acc t2, acc* loss, acc* ls, acc* lt) {
  const int64_t G2 = p.grid * p.grid;
  const int64_t b = i / p.num_regions, n = i % p.num_regions;
  const Rect r = region_rect(p, n);
  region_log_softmax(cs + b * G2 * K, bs, K, p.grid, r, inv_t, ls + i * K);
  region_log_softmax(ct + b * G2 * K, bt, K, p.grid, r, inv_t, lt + i * K);
  loss[i] = kl_from_logp(ls + i * K, lt + i * K, K, t2);
}

// i = b * N + n  ->  d region logits of (b, n)
template <typename acc>
MMH_HD void backward_item(int64_t i, const acc* g, const acc* ls, const acc* lt, int64_t K, acc t, acc* ds, acc* dt) {
  region_kl_backward(ls + i * K, lt + i * K, K, g[i], t, ds ? ds + i * K : nullptr, dt ? dt + i * K : nullptr);
}

// i = b * grid^2 + cell  ->  d cell logits of (b, cell)
template <typename acc>
MMH_HD void cells_item(int64_t i, const acc* dz, const Pyramid& p, int64_t K, acc* out) {
  const int64_t G2 = p.grid * p.grid;
  cell_grad(dz + (i / G2) * p.num_regions * K, p, K, i % G2, out + i * K);
}

// i = ((b * C + c) * H + y) * W + x  ->  d feat, NCHW contiguous
template <typename scalar_t>
MMH_HD void unpool_item(int64_t i, const acc_t<scalar_t>* dg, int64_t C, int64_t H, int64_t W, int64_t grid,
                        scalar_t* out) {
  const int64_t x = i % W, y = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
  out[i] = static_cast<scalar_t>(unpool_pixel(dg, C, H, W, grid, b, c, y, x));
}

}  // namespace rad
}  // namespace mmh_ext
