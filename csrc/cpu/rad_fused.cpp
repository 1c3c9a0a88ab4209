// RAD's CPU kernels, fused passes ("fast" mode, mode.h).
// Where the AVX kernels apply (float32 computation, NCHW float32/float16/bfloat16 maps of >= 8 channels, AVX2 + FMA)
// and there are at least as many samples as threads, each pass runs as one parallel loop over chunks of samples:
// forward, a chunk's two maps are pooled, its cell logits computed (two small GEMMs, k-major) and its region math run
// while its rows are in cache; backward (student side), a chunk's cell gradients, d pooled (a GEMM) and its unpooling
// into d feat, with d weight and d bias summed per chunk. The separate kernels (rad_pool.cpp, rad_region.cpp) each make
// a pass over the whole batch with a barrier between: at B = 64, C = 512, 7x7, K = 60, on 2 threads, their pooled, cell
// and d pooled buffers (2 MiB each) went to memory and back between passes, and the memory-bound passes (pooling,
// unpooling) left a core's FMA units idle while the compute-bound GEMMs waited for them. Here the threads run their
// chunks independently, so one thread's GEMM overlaps the other's pooling.
#include <ATen/Parallel.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <c10/core/CPUAllocator.h>

#include <algorithm>

#include "../mode.h"
#include "rad_cpu.h"

#if MMH_EXT_RAD_AVX
namespace mmh_ext {
namespace rad {
namespace cpu {
namespace {

// Samples per chunk: about 128 GEMM rows (G2 rows a sample), and about 4 chunks per thread where the batch allows.
int64_t chunk_samples(int64_t B, int64_t G2, int64_t threads) {
  const int64_t by_rows = std::max<int64_t>(1, 128 / G2);
  const int64_t by_threads = std::max<int64_t>(1, B / (4 * threads));
  return std::min(by_rows, by_threads);
}

// The most memory the chunked backward's per-chunk d weight partial sums may take together.
constexpr int64_t kMaxPartialBytes = int64_t{64} << 20;

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

// Scratch floats from the CPU allocator (64-byte aligned, as ATen's tensors: MKL's results can depend on its
// operands' alignment, and std::vector's differs from thread to thread), uninitialised.
struct Floats {
  at::DataPtr mem;
  explicit Floats(int64_t n) : mem(c10::GetCPUAllocator()->allocate(n * sizeof(float))) {}
  float* data() const { return static_cast<float*>(mem.get()); }
};

}  // namespace

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
  if (dw.defined() &&
      (gs.scalar_type() != at::kFloat || !gs.is_contiguous() || gs.sizes() != at::IntArrayRef{B, G2, C}))
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

}  // namespace cpu
}  // namespace rad
}  // namespace mmh_ext
#endif  // MMH_EXT_RAD_AVX
