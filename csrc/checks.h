// Argument checks shared by the host code of every operator. Messages name the argument.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <utility>
#include <vector>

namespace mmh_ext {

// Every tensor defined, floating point (float64/float32/float16/bfloat16; dtypes may differ between arguments, as
// torch.autocast hands them over) and on the same device as the first one.
inline void check_float_same_device(std::initializer_list<std::pair<const at::Tensor*, const char*>> args) {
  const auto& first = *args.begin();
  for (const auto& a : args) {
    TORCH_CHECK_TYPE(a.first->defined(), a.second, " is undefined");
    const auto t = a.first->scalar_type();
    TORCH_CHECK_TYPE(t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16, a.second,
                     " must be a float64, float32, float16 or bfloat16 tensor, got ", t);
    TORCH_CHECK_VALUE(a.first->device() == first.first->device(), a.second, " is on ", a.first->device(), " but ",
                      first.second, " is on ", first.first->device());
  }
}

// t in `dtype`: t itself when it already is, without a dispatcher call (at::Tensor::to always makes one, a measurable
// part of a small call's host time).
inline at::Tensor as_dtype(const at::Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

// The accumulation dtype of a set of inputs: float64 when any of them is float64, float32 otherwise.
inline at::ScalarType acc_dtype(std::initializer_list<const at::Tensor*> ts) {
  for (const at::Tensor* t : ts)
    if (t->scalar_type() == at::kDouble) return at::kDouble;
  return at::kFloat;
}

// Called at the start of each C++ autograd backward. The backward ops have no autograd of their own, so a second-order
// gradient through them (torch.autograd.grad(..., create_graph=True), e.g. a gradient penalty) would be missing or
// wrong without a word: refused instead, wherever one would be taken (grad mode on inside the backward and a tensor
// it reads that requires grad).
inline void check_no_double_backward(const std::vector<at::Tensor>& grads, const std::vector<at::Tensor>& saved,
                                     const char* op, const char* reference) {
  if (!at::GradMode::is_enabled()) return;
  bool needs = false;
  for (const auto* list : {&grads, &saved})
    for (const at::Tensor& t : *list) needs = needs || (t.defined() && t.requires_grad());
  TORCH_CHECK(!needs, op,
              " has no double backward: a gradient taken with create_graph=True through it cannot be "
              "differentiated again (use ",
              reference, ", the pure-PyTorch version, for second-order gradients)");
}

}  // namespace mmh_ext
