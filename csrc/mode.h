// Which RAD CPU kernels run: the fast ones (default: GEMMs with the pooling and region matrices, ATen ops over whole
// blocks) or a device emulation that runs, item by item over the same flat index space, exactly the MMH_HD per-item
// functions of rad_math.h that are the whole bodies of the CUDA kernels. Only RAD's CPU kernels (cpu/rad.cpp) read
// it: DAD's and the injection's CPU kernels always call the per-row / per-element functions their CUDA kernels run
// (dad_math.h, inject_math.h), so they have nothing to emulate. The RAD tests run in both modes, so the CUDA kernels'
// math — index decomposition included — is checked on a machine without a GPU. Set through the op
// mmh_ext::_set_cpu_kernel_mode ("fast" | "device").
#pragma once

#include <atomic>

namespace mmh_ext {

inline std::atomic<bool>& emulate_device_kernels() {
  static std::atomic<bool> flag{false};
  return flag;
}

}  // namespace mmh_ext
