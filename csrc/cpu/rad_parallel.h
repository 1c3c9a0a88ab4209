// RAD's CPU kernels, threading: how a pass is spread over the threads. Per-item loops (for_items) with a grain that
// keeps tiny problems on the calling thread; chunk loops (for_chunks) where each thread takes the next chunk as it
// comes free; a pass's independent GEMMs side by side (gemms_cpu, rad_parallel.cpp).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include "../rad.h"

namespace mmh_ext {
namespace rad {
namespace cpu {

// Items per task so that one task holds ~16k scalar operations: tiny problems run inline, without waking threads.
inline int64_t grain(int64_t work_per_item) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work_per_item));
}

// Run `item(i)` for i in [0, total), in parallel.
template <typename F>
void for_items(int64_t total, int64_t work_per_item, const F& item) {
  at::parallel_for(0, total, grain(work_per_item), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) item(i);
  });
}

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

// From how many classes on the separate kernels take the k-major GEMM with the GEMMs side by side, and the fused
// region math. Below (K = 2 in the benchmark) the earlier path — MKL splitting each GEMM, the region math as ATen ops —
// was as fast or faster in repeated runs of bench_ops.py on this 2-core machine. (The chunked passes of rad_fused.cpp
// run the AVX region math at every class count.)
constexpr int64_t kFusedMinClasses = 16;
inline bool many_classes(int64_t K) { return K >= kFusedMinClasses; }

// A pass's independent GEMMs (Kernels::gemms), side by side over the threads from kFusedMinClasses classes on.
void gemms_cpu(std::vector<Gemm>& jobs, int64_t classes);

}  // namespace cpu
}  // namespace rad
}  // namespace mmh_ext
