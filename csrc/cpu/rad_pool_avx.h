// RAD's grid pooling and its adjoint for NCHW feature maps (float32, float16, bfloat16; sums in float32) on x86-64 CPUs
// with AVX, vectorised across channels: a block of 8 channel planes is transposed in registers (8x8 float transposes)
// into a per-pixel buffer of 8-channel vectors, and every cell is a sum of its pixels' vectors (the adjoint: every
// pixel a sum of its cells' vectors, transposed back into the planes). The pooling touches each input value once per
// cell that holds it — about 100 additions per 7x7 plane — where the GEMM with the dense (H*W, grid*grid) pooling
// matrix spends 784 multiply-adds per plane, mostly on zeros.
//
// Compiled for AVX with a function attribute and chosen at run time (cpu_has_avx), so the build needs no -mavx flag
// and runs on any x86-64 CPU; elsewhere (other architectures, compilers without the attribute) the callers keep the
// GEMM path.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

// -DMMH_EXT_RAD_AVX=0 leaves the AVX code out on x86-64 too: the build other CPUs get, checkable on this one.
#ifndef MMH_EXT_RAD_AVX
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define MMH_EXT_RAD_AVX 1
#else
#define MMH_EXT_RAD_AVX 0
#endif
#endif
#if MMH_EXT_RAD_AVX
#include <immintrin.h>
#endif

namespace mmh_ext {
namespace rad {

// The pixels of each cell of an adaptive grid pooling (cells row-major, pixels y * W + x): cell j holds
// pixels[offset[j] .. offset[j + 1]) and has weight inv_area[j]. The adjoint's view: pixel p lies in the cells
// cells_of[cell_offset[p] .. cell_offset[p + 1]).
struct CellPixels {
  std::vector<int64_t> offset, pixels, cell_offset, cells_of;
  std::vector<float> inv_area;
  // The bins along each axis: rows [y_start[i], y_end[i]) and columns [x_start[i], x_end[i]) of cell row / column i.
  std::vector<int64_t> y_start, y_end, x_start, x_end;
  int64_t H, W, grid;
  CellPixels(int64_t H, int64_t W, int64_t grid);
};

#if MMH_EXT_RAD_AVX

inline bool cpu_has_avx() {
  static const bool has = __builtin_cpu_supports("avx");
  return has;
}

#define MMH_EXT_AVX __attribute__((target("avx")))

// In place: r[i] holds row i of an 8x8 block on entry and column i on exit.
MMH_EXT_AVX inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Ask for the 8 * HW contiguous values at `block` ahead of their use (a block is ~25 cache lines at 7x7; the loads of
// the transposes below jump between its 8 planes, which the hardware prefetcher follows badly).
template <typename scalar_t>
inline void prefetch_block(const scalar_t* block, int64_t HW) {
  const char* p = reinterpret_cast<const char*>(block);
  const int64_t bytes = 8 * HW * static_cast<int64_t>(sizeof(scalar_t));
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 3);
}

// Prefetch the 8-channel block two after block i of the blocks [.., end) (a 64x512x7x7 map not in cache: ~1.0 ->
// ~0.8 ms on one core, standalone loop over 24 maps).
template <typename scalar_t>
inline void prefetch_two_ahead(const scalar_t* feat, int64_t i, int64_t end, int64_t nblk, int64_t C, int64_t HW) {
  if (i + 2 >= end) return;
  const int64_t j = i + 2;
  prefetch_block(feat + ((j / nblk) * C + (j % nblk) * 8) * HW, HW);
}

// buf[p * 8 + l] = plane l's pixel p, for the 8 planes starting at `planes` (each HW floats, contiguous).
MMH_EXT_AVX inline void planes_to_pixels(const float* planes, int64_t HW, float* buf) {
  int64_t p0 = 0;
  for (; p0 + 8 <= HW; p0 += 8) {
    __m256 r[8];
    for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(planes + l * HW + p0);
    transpose8(r);
    for (int q = 0; q < 8; ++q) _mm256_storeu_ps(buf + (p0 + q) * 8, r[q]);
  }
  for (; p0 < HW; ++p0)
    for (int l = 0; l < 8; ++l) buf[p0 * 8 + l] = planes[l * HW + p0];
}

// The inverse: plane l's pixel p = buf[p * 8 + l].
MMH_EXT_AVX inline void pixels_to_planes(const float* buf, int64_t HW, float* planes) {
  int64_t p0 = 0;
  for (; p0 + 8 <= HW; p0 += 8) {
    __m256 r[8];
    for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(buf + (p0 + q) * 8);
    transpose8(r);
    for (int l = 0; l < 8; ++l) _mm256_storeu_ps(planes + l * HW + p0, r[l]);
  }
  for (; p0 < HW; ++p0)
    for (int l = 0; l < 8; ++l) planes[l * HW + p0] = buf[p0 * 8 + l];
}

// out[j * C .. + 8] = inv_area[j] * sum of the cell's pixel vectors, for 8 channels (out points at channel c0 of
// sample b's (G2, C) block).
MMH_EXT_AVX inline void pool_block8(const float* buf, const CellPixels& cp, int64_t C, float* out) {
  const int64_t G2 = static_cast<int64_t>(cp.inv_area.size());
  for (int64_t j = 0; j < G2; ++j) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = cp.offset[j]; k < cp.offset[j + 1]; ++k)
      acc = _mm256_add_ps(acc, _mm256_loadu_ps(buf + cp.pixels[k] * 8));
    _mm256_storeu_ps(out + j * C, _mm256_mul_ps(acc, _mm256_set1_ps(cp.inv_area[j])));
  }
}

// buf[p] = sum over the cells holding pixel p of inv_area[cell] * dg[cell * C .. + 8] (dg at channel c0 of sample b).
MMH_EXT_AVX inline void unpool_block8(const float* dg, const CellPixels& cp, int64_t C, int64_t HW, float* cells,
                                      float* buf) {
  const int64_t G2 = static_cast<int64_t>(cp.inv_area.size());
  for (int64_t j = 0; j < G2; ++j)
    _mm256_storeu_ps(cells + j * 8, _mm256_mul_ps(_mm256_loadu_ps(dg + j * C), _mm256_set1_ps(cp.inv_area[j])));
  for (int64_t p = 0; p < HW; ++p) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = cp.cell_offset[p]; k < cp.cell_offset[p + 1]; ++k)
      acc = _mm256_add_ps(acc, _mm256_loadu_ps(cells + cp.cells_of[k] * 8));
    _mm256_storeu_ps(buf + p * 8, acc);
  }
}

// The pooling of B samples' C channels, channels c < C - C % 8 (the rest: the caller), samples x 8-channel blocks
// [begin, end): feat (B, C, HW) contiguous, out (B, G2, C) float. float16/bfloat16 maps are read into float 8 planes
// at a time first (exact), then pooled like float32 ones.
template <typename scalar_t>
MMH_EXT_AVX inline void pool_blocks(const scalar_t* feat, const CellPixels& cp, int64_t C, int64_t HW, int64_t begin,
                                    int64_t end, float* out) {
  const int64_t G2 = static_cast<int64_t>(cp.inv_area.size()), nblk = C / 8;
  std::vector<float> buf(HW * 8), stage(std::is_same<scalar_t, float>::value ? 0 : HW * 8);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t b = i / nblk, c0 = (i % nblk) * 8;
    const scalar_t* planes = feat + (b * C + c0) * HW;
    prefetch_two_ahead(feat, i, end, nblk, C, HW);
    if constexpr (std::is_same<scalar_t, float>::value) {
      planes_to_pixels(planes, HW, buf.data());
    } else {
      for (int64_t k = 0; k < 8 * HW; ++k) stage[k] = static_cast<float>(planes[k]);
      planes_to_pixels(stage.data(), HW, buf.data());
    }
    pool_block8(buf.data(), cp, C, out + b * G2 * C + c0);
  }
}

// The pooling for maps at most 8 pixels wide (the caller takes it where a cell row holds more than 8 pixels: 7x7,
// 6x6, 8x8 at grid 4), float32, over the same blocks and into the same layout
// as pool_blocks, without the per-pixel buffer: for each cell row, every plane's rows in the bin are summed as 8-wide
// vectors (a row in one vector), one 8x8 transpose turns the 8 planes' row sums into per-column vectors of 8
// channels, and each cell is the sum of its bin's columns. About half the instructions of pool_blocks and no buffer
// round trip (a 64x512x7x7 map from memory: ~0.45 -> ~0.26 ms on 2 cores). A row load reads up to 8 - W floats past
// the row (the next rows', or the next plane's): in the last plane of the map's last block, every row whose 8 floats
// would reach past the plane's end (the last row; the last 2-7 rows when W <= 3) is loaded masked.
MMH_EXT_AVX inline void pool_blocks_narrow(const float* feat, const CellPixels& cp, int64_t C, int64_t begin,
                                           int64_t end, int64_t total_blocks, float* out) {
  const int64_t H = cp.H, W = cp.W, grid = cp.grid, HW = H * W, G2 = grid * grid, nblk = C / 8;
  alignas(32) int32_t mask_bits[8];
  for (int l = 0; l < 8; ++l) mask_bits[l] = l < W ? -1 : 0;
  const __m256i wmask = _mm256_load_si256(reinterpret_cast<const __m256i*>(mask_bits));
  for (int64_t i = begin; i < end; ++i) {
    const int64_t b = i / nblk, c0 = (i % nblk) * 8;
    const float* planes = feat + (b * C + c0) * HW;
    prefetch_two_ahead(feat, i, end, nblk, C, HW);
    float* o = out + b * G2 * C + c0;
    const bool last = i == total_blocks - 1;
    for (int64_t iy = 0; iy < grid; ++iy) {
      __m256 r[8];
      for (int l = 0; l < 8; ++l) {
        const float* plane = planes + l * HW;
        __m256 acc = _mm256_setzero_ps();
        if (last && l == 7) {
          for (int64_t y = cp.y_start[iy]; y < cp.y_end[iy]; ++y)
            acc = _mm256_add_ps(
                acc, y * W + 8 > HW ? _mm256_maskload_ps(plane + y * W, wmask) : _mm256_loadu_ps(plane + y * W));
        } else {
          for (int64_t y = cp.y_start[iy]; y < cp.y_end[iy]; ++y)
            acc = _mm256_add_ps(acc, _mm256_loadu_ps(plane + y * W));
        }
        r[l] = acc;
      }
      transpose8(r);  // r[x]: the 8 channels' row-bin sums at column x
      for (int64_t ix = 0; ix < grid; ++ix) {
        __m256 acc = r[cp.x_start[ix]];
        for (int64_t x = cp.x_start[ix] + 1; x < cp.x_end[ix]; ++x) acc = _mm256_add_ps(acc, r[x]);
        _mm256_storeu_ps(o + (iy * grid + ix) * C, _mm256_mul_ps(acc, _mm256_set1_ps(cp.inv_area[iy * grid + ix])));
      }
    }
  }
}

// The adjoint over the same blocks: dg (B, G2, C) float, dfeat (B, C, HW) contiguous (float16/bfloat16: each value
// rounded once, to nearest even, from the float32 sum).
template <typename scalar_t>
MMH_EXT_AVX inline void unpool_blocks(const float* dg, const CellPixels& cp, int64_t C, int64_t HW, int64_t begin,
                                      int64_t end, scalar_t* dfeat) {
  const int64_t G2 = static_cast<int64_t>(cp.inv_area.size()), nblk = C / 8;
  std::vector<float> buf(HW * 8), cells(G2 * 8), stage(std::is_same<scalar_t, float>::value ? 0 : HW * 8);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t b = i / nblk, c0 = (i % nblk) * 8;
    unpool_block8(dg + b * G2 * C + c0, cp, C, HW, cells.data(), buf.data());
    scalar_t* planes = dfeat + (b * C + c0) * HW;
    if constexpr (std::is_same<scalar_t, float>::value) {
      pixels_to_planes(buf.data(), HW, planes);
    } else {
      pixels_to_planes(buf.data(), HW, stage.data());
      for (int64_t k = 0; k < 8 * HW; ++k) planes[k] = static_cast<scalar_t>(stage[k]);
    }
  }
}

#undef MMH_EXT_AVX
#endif  // MMH_EXT_RAD_AVX

}  // namespace rad
}  // namespace mmh_ext
