// The namespace mmh_ext: its one TORCH_LIBRARY block (the build information compiled into the library) and define_op,
// through which every operator's file defines its schemas (library.h).
#include "library.h"

#include "rad_math.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <string>

#ifndef MMH_EXT_TORCH_VERSION
#define MMH_EXT_TORCH_VERSION "unknown"
#endif
#ifndef MMH_EXT_CUDA_ARCHS
#define MMH_EXT_CUDA_ARCHS ""
#endif
#ifndef MMH_EXT_CUDA_VERSION
#define MMH_EXT_CUDA_VERSION ""
#endif

namespace mmh_ext {
namespace {

std::string compiler() {
#if defined(__clang__)
  return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  return "gcc " + std::to_string(__GNUC__) + "." + std::to_string(__GNUC_MINOR__) + "." +
         std::to_string(__GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

// key=value lines; parsed by mmh_ext/_build.py.
std::string build_info() {
  std::string s;
  s += "torch_version=" MMH_EXT_TORCH_VERSION "\n";
  s += "cpu_kernels=1\n";
#ifdef MMH_EXT_WITH_CUDA
  s += "cuda_kernels=1\n";
#else
  s += "cuda_kernels=0\n";
#endif
  s += "cuda_version=" MMH_EXT_CUDA_VERSION "\n";
  s += "cuda_archs=" MMH_EXT_CUDA_ARCHS "\n";
  s += "compiler=" + compiler() + "\n";
  s += "cxx_standard=" + std::to_string(__cplusplus) + "\n";
  s += "rad_max_levels=" + std::to_string(rad::kMaxLevels) + "\n";  // what the fake rad_forward checks against
  return s;
}

// The Autocast kernel of every operator (the policy is in library.h): autocast off inside the operator, as in
// torchvision's csrc/ops/autocast/*_kernel.cpp, and no input cast.
void without_autocast(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  op.callBoxed(stack);
}

}  // namespace

void define_op(torch::Library& m, const char* schema) {
  m.def(schema);
  const std::string s(schema);
  const std::string name = s.substr(0, s.find('('));
  for (const auto key : {c10::DispatchKey::AutocastCPU, c10::DispatchKey::AutocastCUDA})
    m.impl(name.c_str(), key, torch::CppFunction::makeFromBoxedFunction<&without_autocast>());
}

TORCH_LIBRARY(mmh_ext, m) { m.def("build_info() -> str", &build_info); }

}  // namespace mmh_ext
