// Test-only hooks, in their own namespace mmh_ext_testing (torch.ops.mmh_ext_testing), out of the public
// torch.ops.mmh_ext: the RAD CPU kernel mode (mode.h) and the count of RAD's fused CPU passes, which the tests and the
// benchmarks read to see which code ran.
#include <torch/library.h>

#include "mode.h"

#include <string>

namespace mmh_ext {
namespace {

// "fast" | "separate" | "device" (see mode.h); returns the previous mode.
std::string set_cpu_kernel_mode(c10::string_view mode) {
  static const char* const names[] = {"fast", "separate", "device"};
  int next = -1;
  for (int i = 0; i < 3; ++i)
    if (mode == names[i]) next = i;
  TORCH_CHECK_VALUE(next >= 0, "mode must be \"fast\", \"separate\" or \"device\", got \"", std::string(mode), "\"");
  return names[cpu_kernel_mode_flag().exchange(next)];
}

}  // namespace

TORCH_LIBRARY(mmh_ext_testing, m) {
  m.def("set_cpu_kernel_mode(str mode) -> str", &set_cpu_kernel_mode);
  m.def("rad_cpu_fused_passes() -> int", [] { return rad_cpu_fused_passes().load(); });
}

}  // namespace mmh_ext
