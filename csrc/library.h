// Defining an operator of the namespace mmh_ext. Each operator's file defines its schemas in its own
// TORCH_LIBRARY_FRAGMENT(mmh_ext, m) through define_op, which also gives the operator its Autocast kernels: no list of
// the operators is kept anywhere else (the tests read them from the dispatcher).
#pragma once

#include <torch/library.h>

namespace mmh_ext {

// m.def(schema), plus the operator's AutocastCPU and AutocastCUDA kernels. Policy (library.cpp): the operators take
// what torch.autocast hands them as it is — no input is cast, no float32 copy of a feature map is made — and autocast
// is switched off inside the operator, so that the ATen calls it makes (RAD's and DAD's float32 GEMMs) are not recast
// to float16/bfloat16. The kernels accept any mix of float64/float32/float16/bfloat16 inputs and accumulate in float32
// (float64 when an input is float64): losses and matrices come out in float32 under autocast (as autocast's "fp32" ops,
// without upcasting the inputs), the injection in the promoted dtype of its inputs (autocast's "promote" policy), and
// each gradient of a backward op in its own input's dtype.
void define_op(torch::Library& m, const char* schema);

}  // namespace mmh_ext
