// Which CPU kernels run: the fast CPU kernels (default) or a device emulation that runs, item by item over the same
// flat index space, exactly the MMH_HD per-item functions the CUDA kernels run (their whole bodies). The test suite
// runs every operator in both modes, so the CUDA kernels' math — index decomposition included — is checked on a
// machine without a GPU. Set through the op mmh_ext::_set_cpu_kernel_mode ("fast" | "device").
#pragma once

#include <atomic>

namespace mmh_ext {

inline std::atomic<bool>& emulate_device_kernels() {
  static std::atomic<bool> flag{false};
  return flag;
}

}  // namespace mmh_ext
