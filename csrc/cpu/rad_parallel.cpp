// RAD's CPU kernels, threading: a pass's independent GEMMs side by side over the threads (rad_parallel.h).
#include <ATen/ops/mm_cpu_dispatch.h>

#include "rad_parallel.h"

namespace mmh_ext {
namespace rad {
namespace cpu {

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

}  // namespace cpu
}  // namespace rad
}  // namespace mmh_ext
