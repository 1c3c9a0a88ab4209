// RAD's CPU kernels, pooling: the adaptive grid pooling of a feature map into (B, grid*grid, C) cells and its adjoint.
// Three forms, chosen per call:
// - NCHW float32/float16/bfloat16 maps of >= 8 channels on a CPU with AVX: vectorised across channels
//   (rad_pool_avx.h), over the whole batch or, for the fused passes, over a range of samples on one thread;
// - other maps whose dtype is the computation's (float64; float32 channels_last or of < 8 channels; any CPU without
//   AVX): one batched GEMM with the cached pooling matrix (its transpose for the adjoint);
// - device emulation, float16/bfloat16 maps the two above do not take, and any other strides: the per-item
//   functions of rad_math.h, as the CUDA kernels.
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../mode.h"
#include "rad_cpu.h"

namespace mmh_ext {
namespace rad {
namespace {
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
          if (y >= by.start[iy] && y < by.end[iy] && x >= bx.start[ix] && x < bx.end[ix])
            cells_of.push_back(iy * grid + ix);
      cell_offset.push_back(static_cast<int64_t>(cells_of.size()));
    }
}

namespace cpu {
namespace {

#if MMH_EXT_RAD_AVX
// The dtypes simd_pooling admits (float32, float16, bfloat16): no float64 instantiation of the AVX code.
#define MMH_DISPATCH_SIMD_TYPES(TYPE, NAME, ...)                                                        \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                                                        \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__) \
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
    at::parallel_for(0, B * nblk, grain(16 * HW),
                     [&](int64_t begin, int64_t end) { pool_range(f, cp, C, begin, end, B * nblk, o); });
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
    at::parallel_for(0, B * nblk, grain(16 * HW),
                     [&](int64_t begin, int64_t end) { unpool_blocks(g, cp, C, HW, begin, end, o); });
    if (C8 == C) return;
    for_items(B * (C - C8), 2 * HW, [&](int64_t i) { unpool_tail(g, cp, C, i / (C - C8), C8 + i % (C - C8), o); });
  });
}
#endif

}  // namespace

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

#if MMH_EXT_RAD_AVX
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
#endif

}  // namespace cpu
}  // namespace rad
}  // namespace mmh_ext
