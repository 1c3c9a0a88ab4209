// Which RAD CPU kernels run (mmh_ext.cpu_kernel_mode, set through the test hook mmh_ext_testing::set_cpu_kernel_mode,
// testing.cpp):
// - "fast" (default): the fast kernels, and where they apply (cpu/rad_fused.cpp) each pass as one parallel
//   loop over chunks of samples, every stage of a chunk run while its rows are in cache;
// - "separate": the same fast kernels, each a pass over the whole batch (pooling, GEMMs with the pooling and region
//   matrices or their AVX forms, region math) — what "fast" runs where the fused passes do not apply; a mode of its
//   own so that the tests and benchmarks reach it on any batch;
// - "device": a device emulation that runs, item by item over the same flat index space, exactly the MMH_HD per-item
//   functions of rad_math.h that are the whole bodies of the CUDA kernels.
// Only RAD's CPU kernels read it: DAD's and the injection's CPU kernels always call the per-row / per-element
// functions their CUDA kernels run (dad_math.h, inject.h), so they have nothing to emulate. The RAD tests run in
// every mode, so the CUDA kernels' math — index decomposition included — is checked on a machine without a GPU.
#pragma once

#include <atomic>

namespace mmh_ext {

enum class CpuKernelMode : int { kFast = 0, kSeparate = 1, kDevice = 2 };

inline std::atomic<int>& cpu_kernel_mode_flag() {
  static std::atomic<int> mode{static_cast<int>(CpuKernelMode::kFast)};
  return mode;
}

inline CpuKernelMode cpu_kernel_mode() { return static_cast<CpuKernelMode>(cpu_kernel_mode_flag().load()); }

inline bool emulate_device_kernels() { return cpu_kernel_mode() == CpuKernelMode::kDevice; }

// How many RAD passes (forward or backward) the CPU has run as one loop over chunks of samples (the "fast" mode's
// fused passes), for the tests to see which code ran: mmh_ext_testing::rad_cpu_fused_passes.
inline std::atomic<int64_t>& rad_cpu_fused_passes() {
  static std::atomic<int64_t> count{0};
  return count;
}

}  // namespace mmh_ext
