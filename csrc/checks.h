// Argument checks shared by the host code of every operator. Messages name the argument.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <utility>

namespace mmh_ext {

// Every tensor floating point, of the same dtype and on the same device as the first one.
inline void check_same_float(std::initializer_list<std::pair<const at::Tensor*, const char*>> args) {
  const auto& first = *args.begin();
  for (const auto& a : args) {
    TORCH_CHECK_TYPE(a.first->defined(), a.second, " is undefined");
    TORCH_CHECK_TYPE(at::isFloatingType(a.first->scalar_type()), a.second, " must be a floating-point tensor, got ",
                     a.first->scalar_type());
    TORCH_CHECK_TYPE(a.first->scalar_type() == first.first->scalar_type(), a.second, " has dtype ",
                     a.first->scalar_type(), " but ", first.second, " has dtype ", first.first->scalar_type());
    TORCH_CHECK_VALUE(a.first->device() == first.first->device(), a.second, " is on ", a.first->device(), " but ",
                      first.second, " is on ", first.first->device());
  }
}

}  // namespace mmh_ext
