// RAD's per-(sample, region) math on the CPU, float32, for x86-64 CPUs with AVX2 + FMA: the region logits (box means
// of the cell logits), both log-softmax rows, the KL and — backward — the cell-logit gradients, fused into one pass
// per sample, vectorised over the classes (8 per vector, a masked tail), with a vectorised exp.
//
// The same math as rad_math.h's logits_item / row_item / cell_grad_item (which the CUDA kernels and the CPU's
// device-emulation mode run); here it replaces ~10 whole-block ATen ops (baddbmm, log_softmax, exp, sub, mul, sum,
// bmm), each a pass over (B, N, K) with its own temporaries, by one pass that keeps a sample's rows in L1.
//
// Compiled for AVX2 + FMA with a function attribute and chosen at run time (cpu_has_avx2_fma), so the build needs no
// -m flags; elsewhere the callers keep the ATen path.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../rad_math.h"
#include "rad_pool_avx.h"  // MMH_EXT_RAD_AVX, <immintrin.h>

namespace mmh_ext {
namespace rad {

#if MMH_EXT_RAD_AVX

inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

#define MMH_EXT_AVX2 __attribute__((target("avx2,fma")))

// exp(x) for 8 floats: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2 / 2, and a degree-6 polynomial (the
// Cephes expf coefficients): relative error below 2 ulp for x in [-87.3, 88.3]; a subnormal or 0 below that (0 at and
// below -88.38, so exp(-inf) = 0), and x is clamped to 88.38 above; NaN stays NaN.
MMH_EXT_AVX2 inline __m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-88.3762626647949f);
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n in two factors (n in [-128, 128]: 2^(n/2) each stays a normal float)
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i half = _mm256_srai_epi32(ni, 1);
  const __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  const __m256 p2 =
      _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  y = _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
  y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LE_OQ), y);  // exp(x <= -88.38) -> 0 (exp(-inf) = 0)
  return _mm256_blendv_ps(y, _mm256_set1_ps(NAN), nan);
}

MMH_EXT_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

MMH_EXT_AVX2 inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Lane mask of the chunk of 8 classes starting at k0: all lanes, or the first K - k0 of the tail.
MMH_EXT_AVX2 inline __m256i lanes(int64_t K, int64_t k0) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(K - k0 < 8 ? K - k0 : 8)), idx);
}

// Log-softmax of a row held in whole vectors: z (Kp = K rounded up to 8 floats) -> z - logsumexp(z) in place, the
// lanes past K set to -inf first. e (Kp) is left holding exp(z - max) (0 past K); returns their sum.
MMH_EXT_AVX2 inline float log_softmax8(float* z, int64_t K, int64_t Kp, float* e) {
  if (K < Kp) {
    const __m256i tail = lanes(K, Kp - 8);
    _mm256_storeu_ps(z + Kp - 8, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_loadu_ps(z + Kp - 8),
                                                  _mm256_castsi256_ps(tail)));
  }
  __m256 m = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
  for (int64_t k0 = 0; k0 < Kp; k0 += 8) {
    const __m256 v = _mm256_loadu_ps(z + k0);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, v);
  }
  const float mx = _mm256_movemask_ps(nan) != 0 ? NAN : hmax8(m);  // a NaN logit makes the row NaN (as ATen's)
  const __m256 mv = _mm256_set1_ps(mx);
  __m256 s = _mm256_setzero_ps();
  for (int64_t k0 = 0; k0 < Kp; k0 += 8) {
    const __m256 ex = exp8(_mm256_sub_ps(_mm256_loadu_ps(z + k0), mv));  // exp(-inf) = 0 past K
    _mm256_storeu_ps(e + k0, ex);
    s = _mm256_add_ps(s, ex);
  }
  const float sum = hsum8(s);
  // (z - max) - log(sum), in this order (as ATen's): z - (max + log(sum)) would round max + log(sum) at max's
  // magnitude, an error the teacher-side gradient's (log p_t - log p_s - KL) magnifies for large logits
  const __m256 ls = _mm256_set1_ps(std::log(sum));
  for (int64_t k0 = 0; k0 < Kp; k0 += 8)
    _mm256_storeu_ps(z + k0, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(z + k0), mv), ls));
  return sum;
}

// out[k] = (inv_area * sum over the region's cells of cells[cell * ldc + k] + bias[k]) * inv_t for k < Kp (bias: Kp
// floats, cells: rows of ldc >= Kp floats).
MMH_EXT_AVX2 inline void region_logits8(const float* cells, int64_t ldc, const float* bias, int64_t Kp, int64_t grid,
                                        const Rect& r, float inv_t, float* out) {
  const __m256 scale = _mm256_set1_ps(inv_t / static_cast<float>((r.y1 - r.y0) * (r.x1 - r.x0)));
  const __m256 it = _mm256_set1_ps(inv_t);
  for (int64_t k0 = 0; k0 < Kp; k0 += 8) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t y = r.y0; y < r.y1; ++y)
      for (int64_t x = r.x0; x < r.x1; ++x)
        acc = _mm256_add_ps(acc, _mm256_loadu_ps(cells + (y * grid + x) * ldc + k0));
    _mm256_storeu_ps(out + k0, _mm256_fmadd_ps(acc, scale, _mm256_mul_ps(_mm256_loadu_ps(bias + k0), it)));
  }
}

// dst[cell * ldd + k] = src[k * lds + cell] for cell < G2, k < Kp (0 for K <= k < Kp): a sample's cell logits from
// the k-major (K, B * G2) GEMM result to cell-major rows of ldd >= Kp floats.
MMH_EXT_AVX2 inline void cells_from_kmajor(const float* src, int64_t lds, int64_t G2, int64_t K, float* dst,
                                           int64_t ldd) {
  const int64_t Kp = (K + 7) / 8 * 8;
  if (G2 % 8 != 0) {
    for (int64_t k = 0; k < Kp; ++k)
      for (int64_t c = 0; c < G2; ++c) dst[c * ldd + k] = k < K ? src[k * lds + c] : 0.f;
    return;
  }
  for (int64_t k0 = 0; k0 < K; k0 += 8)
    for (int64_t c0 = 0; c0 < G2; c0 += 8) {
      __m256 r[8];
      for (int64_t l = 0; l < 8; ++l)
        r[l] = k0 + l < K ? _mm256_loadu_ps(src + (k0 + l) * lds + c0) : _mm256_setzero_ps();
      transpose8(r);
      for (int64_t q = 0; q < 8; ++q) _mm256_storeu_ps(dst + (c0 + q) * ldd + k0, r[q]);
    }
}

// Forward of one sample: cs / ct its cell logits, cell-major rows of ldc >= Kp floats (zero past K); bs / bt the
// biases (Kp floats, zero past K); ls / lt (N, K) and loss (N) of the sample. scratch: 3 * Kp floats.
MMH_EXT_AVX2 inline void region_forward_sample(const float* cs, const float* ct, int64_t ldc, const float* bs,
                                               const float* bt, const Pyramid& p, int64_t K, float inv_t, float t2,
                                               float* ls, float* lt, float* loss, float* scratch) {
  const int64_t Kp = (K + 7) / 8 * 8;
  float *zs = scratch, *zt = scratch + Kp, *e = scratch + 2 * Kp;
  const __m256i tail = lanes(K, Kp - 8);
  for (int64_t n = 0; n < p.num_regions; ++n) {
    const Rect r = region_rect(p, n);
    region_logits8(cs, ldc, bs, Kp, p.grid, r, inv_t, zs);
    region_logits8(ct, ldc, bt, Kp, p.grid, r, inv_t, zt);
    log_softmax8(zs, K, Kp, e);
    const float sum_t = log_softmax8(zt, K, Kp, e);  // e: exp(z_t - max), so p_t = e / sum_t
    __m256 kl = _mm256_setzero_ps();
    for (int64_t k0 = 0; k0 < Kp; k0 += 8) {
      __m256 term =
          _mm256_mul_ps(_mm256_loadu_ps(e + k0), _mm256_sub_ps(_mm256_loadu_ps(zt + k0), _mm256_loadu_ps(zs + k0)));
      if (k0 + 8 > K) term = _mm256_and_ps(term, _mm256_castsi256_ps(tail));  // past K: 0 * (-inf + inf)
      kl = _mm256_add_ps(kl, term);
    }
    loss[n] = t2 * (hsum8(kl) / sum_t);
    for (int64_t k0 = 0; k0 + 8 <= K; k0 += 8) {
      _mm256_storeu_ps(ls + n * K + k0, _mm256_loadu_ps(zs + k0));
      _mm256_storeu_ps(lt + n * K + k0, _mm256_loadu_ps(zt + k0));
    }
    if (K < Kp) {
      _mm256_maskstore_ps(ls + n * K + Kp - 8, tail, _mm256_loadu_ps(zs + Kp - 8));
      _mm256_maskstore_ps(lt + n * K + Kp - 8, tail, _mm256_loadu_ps(zt + Kp - 8));
    }
  }
}

// Backward of one sample: the cell-logit gradients dcs / dct (G2, K) of the sample (either may be null) from the
// upstream gradient of its N losses, g[n * gn]; ls / lt (N, K) its log-softmax rows; kl (N) its KLs (teacher side).
// acc: 2 * G2 * Kp floats of scratch (the sums, in whole vectors).
MMH_EXT_AVX2 inline void cell_grads_sample(const float* g, int64_t gn, const float* ls, const float* lt,
                                           const float* kl, const Pyramid& p, int64_t K, float temperature, float* dcs,
                                           float* dct, float* acc) {
  const int64_t G2 = p.grid * p.grid, Kp = (K + 7) / 8 * 8;
  float *acc_s = acc, *acc_t = acc + G2 * Kp;
  std::fill(acc, acc + 2 * G2 * Kp, 0.f);
  const __m256i tail = lanes(K, Kp - 8);
  for (int64_t n = 0; n < p.num_regions; ++n) {
    const Rect r = region_rect(p, n);
    const __m256 scale = _mm256_set1_ps(g[n * gn] * temperature / static_cast<float>((r.y1 - r.y0) * (r.x1 - r.x0)));
    const __m256 kln = _mm256_set1_ps(dct != nullptr ? kl[n] : 0.f);
    for (int64_t k0 = 0; k0 < Kp; k0 += 8) {
      const bool full = k0 + 8 <= K;  // the tail's lanes past K: read as 0, summed into acc's padding, never written
      const __m256 vs = full ? _mm256_loadu_ps(ls + n * K + k0) : _mm256_maskload_ps(ls + n * K + k0, tail);
      const __m256 vt = full ? _mm256_loadu_ps(lt + n * K + k0) : _mm256_maskload_ps(lt + n * K + k0, tail);
      const __m256 pt = exp8(vt);
      const __m256 ds = _mm256_mul_ps(scale, _mm256_sub_ps(exp8(vs), pt));
      const __m256 dt = _mm256_mul_ps(_mm256_mul_ps(scale, pt), _mm256_sub_ps(_mm256_sub_ps(vt, vs), kln));
      for (int64_t y = r.y0; y < r.y1; ++y)
        for (int64_t x = r.x0; x < r.x1; ++x) {
          const int64_t off = (y * p.grid + x) * Kp + k0;
          if (dcs != nullptr) _mm256_storeu_ps(acc_s + off, _mm256_add_ps(_mm256_loadu_ps(acc_s + off), ds));
          if (dct != nullptr) _mm256_storeu_ps(acc_t + off, _mm256_add_ps(_mm256_loadu_ps(acc_t + off), dt));
        }
    }
  }
  for (int side = 0; side < 2; ++side) {
    float* d = side == 0 ? dcs : dct;
    const float* a = side == 0 ? acc_s : acc_t;
    if (d == nullptr) continue;
    for (int64_t c = 0; c < G2; ++c) {
      int64_t k0 = 0;
      for (; k0 + 8 <= K; k0 += 8) _mm256_storeu_ps(d + c * K + k0, _mm256_loadu_ps(a + c * Kp + k0));
      if (k0 < K) _mm256_maskstore_ps(d + c * K + k0, tail, _mm256_loadu_ps(a + c * Kp + k0));
    }
  }
}

#undef MMH_EXT_AVX2
#endif  // MMH_EXT_RAD_AVX

}  // namespace rad
}  // namespace mmh_ext
