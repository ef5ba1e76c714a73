// Reduced-precision inputs (bfloat16 on every device, float16 on CUDA): the kernels written for
// float32 and float64 compute them in float32 (every sum accumulates in float32) and return
// the input's dtype; ops composed of ATen calls take them natively (ATen's GEMMs accumulate
// in float32).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace skelang {

inline bool is_reduced_float(const at::Tensor& t) {
  return t.defined() && (t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf);
}

// A float32 copy of a reduced-precision tensor; any other tensor as it is.
inline at::Tensor as_float32(const at::Tensor& t) {
  return is_reduced_float(t) ? t.to(at::kFloat) : t;
}

inline std::optional<at::Tensor> as_float32(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(as_float32(*t)) : t;
}

// Floating tensors back to `dtype`; integer ones (indices) as they are.
inline at::Tensor to_dtype(const at::Tensor& t, at::ScalarType dtype) {
  return t.defined() && t.is_floating_point() ? t.to(dtype) : t;
}

template <typename... Ts>
std::tuple<Ts...> to_dtype(const std::tuple<Ts...>& outputs, at::ScalarType dtype) {
  return std::apply([&](const auto&... t) { return std::tuple<Ts...>(to_dtype(t, dtype)...); },
                    outputs);
}

}  // namespace skelang
