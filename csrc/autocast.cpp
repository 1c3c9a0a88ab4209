// Autocast kernels of every mmh_ext operator, for torch.autocast on "cpu" (AutocastCPU) and "cuda" (AutocastCUDA).
//
// Policy: the operators take what autocast hands them as it is — no input is cast, and no float32 copy of a feature
// map is made. The kernels accept any mix of float64/float32/float16/bfloat16 inputs, read half-precision feature
// maps directly and accumulate in float32 (float64 when an input is float64):
//   * rad_forward, dad_forward, cosine_discrepancy_forward: losses and matrices come out in float32 (as autocast's
//     "fp32" ops, e.g. softmax or cosine_similarity, but without upcasting the inputs);
//   * cross_stream_inject: the promoted dtype of (x, gate), as autocast's "promote" policy and eager x * relu(gate);
//   * the backward ops: each gradient in its own input's dtype.
// What the kernel adds over the default fall-through: autocast is switched off *inside* the operator (as in
// torchvision's csrc/ops/autocast/*_kernel.cpp), so the ATen calls the operators make — the float32 GEMMs of RAD and
// DAD — are not recast to float16/bfloat16 by autocast.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

namespace mmh_ext {
namespace {

void without_autocast(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  op.callBoxed(stack);
}

constexpr const char* kOps[] = {"rad_forward",
                                "rad_backward",
                                "cosine_discrepancy_forward",
                                "cosine_discrepancy_backward",
                                "dad_forward",
                                "dad_backward",
                                "cross_stream_inject",
                                "cross_stream_inject_backward"};

void register_all(torch::Library& m) {
  for (const char* name : kOps) m.impl(name, torch::CppFunction::makeFromBoxedFunction<&without_autocast>());
}

}  // namespace

TORCH_LIBRARY_IMPL(mmh_ext, AutocastCPU, m) { register_all(m); }
TORCH_LIBRARY_IMPL(mmh_ext, AutocastCUDA, m) { register_all(m); }

}  // namespace mmh_ext
