// Input checks shared by every skelang op. Each check names the op, the tensor and what
// was expected, so a wrong call from Python is a readable RuntimeError, never a crash.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <string>
#include <utility>

namespace skelang {

inline void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t rank,
                       const char* layout) {
  TORCH_CHECK(t.dim() == rank, op, ": ", name, " must be a ", rank, "-D tensor ", layout,
              ", got a ", t.dim(), "-D tensor of shape ", t.sizes());
}

// float32, float64 or bfloat16 on every device; float16 too on CUDA (and meta tensors).
inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  const auto dtype = t.scalar_type();
  const bool half_allowed = t.is_cuda() || t.is_meta();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 ||
                  (dtype == at::kHalf && half_allowed),
              op, ": ", name, " must be float32, float64 or bfloat16 (float16 on CUDA), got ",
              dtype);
}

inline void check_same_dtype(const char* op, const char* name_a, const at::Tensor& a,
                             const char* name_b, const at::Tensor& b) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", name_a, " and ", name_b,
              " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

inline void check_same_device(const char* op, const char* name_a, const at::Tensor& a,
                              const char* name_b, const at::Tensor& b) {
  TORCH_CHECK(a.device() == b.device(), op, ": ", name_a, " and ", name_b,
              " must be on the same device, got ", a.device(), " and ", b.device());
}

// Each of `others` (name, tensor) has the dtype and the device of `t`.
inline void check_same_dtype_and_device(
    const char* op, const char* name, const at::Tensor& t,
    std::initializer_list<std::pair<const char*, const at::Tensor&>> others) {
  for (const auto& [other_name, other] : others) {
    check_same_dtype(op, name, t, other_name, other);
    check_same_device(op, name, t, other_name, other);
  }
}

// `size` must be 1 (broadcast) or equal to `full`.
inline void check_broadcastable(const char* op, const char* what, int64_t size, int64_t full) {
  TORCH_CHECK(size == 1 || size == full, op, ": ", what, " must be 1 or ", full, ", got ", size);
}

}  // namespace skelang
