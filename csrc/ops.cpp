// Operator schemas of the mmh_ext namespace, and the build information compiled into the library.
#include <torch/library.h>

#include "mode.h"

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
  return s;
}

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

TORCH_LIBRARY(mmh_ext, m) {
  m.def(
      "rad_forward(Tensor student_feat, Tensor teacher_feat, Tensor student_fc_weight, Tensor student_fc_bias, "
      "Tensor teacher_fc_weight, Tensor teacher_fc_bias, int grid, int[] levels, float temperature) -> "
      "(Tensor loss, Tensor student_pooled, Tensor teacher_pooled, Tensor student_logp, Tensor teacher_logp)");
  m.def(
      "rad_backward(Tensor grad, Tensor student_pooled, Tensor teacher_pooled, Tensor student_logp, "
      "Tensor teacher_logp, Tensor student_fc_weight, Tensor teacher_fc_weight, SymInt[] student_hw, "
      "SymInt[] teacher_hw, "
      "ScalarType student_dtype, ScalarType teacher_dtype, int grid, int[] levels, float temperature, "
      "bool need_student, bool need_teacher) -> Tensor[]");
  m.def("cosine_discrepancy_forward(Tensor feat, float eps) -> (Tensor discrepancy, Tensor norm)");
  m.def("cosine_discrepancy_backward(Tensor grad, Tensor feat, Tensor discrepancy, Tensor norm, float eps) -> Tensor");
  m.def(
      "dad_forward(Tensor student_feat, Tensor teacher_feat, str form, float eps) -> "
      "(Tensor loss, Tensor student_matrix, Tensor teacher_matrix, Tensor student_norm, Tensor teacher_norm)");
  m.def(
      "dad_backward(Tensor grad, Tensor student_feat, Tensor teacher_feat, Tensor student_matrix, "
      "Tensor teacher_matrix, Tensor student_norm, Tensor teacher_norm, Tensor loss, str form, float eps, "
      "bool need_student, bool need_teacher) -> Tensor[]");
  m.def("cross_stream_inject(Tensor x, Tensor gate) -> Tensor");
  m.def("cross_stream_inject_backward(Tensor grad, Tensor x, Tensor gate) -> (Tensor grad_x, Tensor grad_gate)");
  m.def("build_info() -> str", &build_info);
  m.def("_set_cpu_kernel_mode(str mode) -> str", &set_cpu_kernel_mode);
  m.def("_rad_cpu_fused_passes() -> int", [] { return rad_cpu_fused_passes().load(); });
}

}  // namespace mmh_ext
