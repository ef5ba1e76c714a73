// cross_modal_attention: SSF's sequential fusion step. Each query step (skeleton time steps)
// attends over key/value tokens (text token features), multi-head, through ATen's
// scaled_dot_product_attention (its fused CPU or CUDA kernel).
//
//   query      (N, Lq, E)
//   key, value (B, Lk, E)   B = 1 (the same tokens for every sample, e.g. every class
//                           description's tokens) or B = N (tokens per sample)
//   key_mask   (B, Lk) bool, true where a token is real (padding false); or None
//   out        (N, Lq, E)
//
// Registered as CompositeImplicitAutograd: autograd goes through ATen's attention backward.
#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/library.h>

#include "common/checks.h"

namespace skelang {
namespace {

at::Tensor cross_modal_attention(const at::Tensor& query, const at::Tensor& key,
                                 const at::Tensor& value, const std::optional<at::Tensor>& key_mask,
                                 int64_t heads) {
  constexpr const char* op = "skelang::cross_modal_attention";
  check_rank(op, "query", query, 3, "(N, Lq, E)");
  check_rank(op, "key", key, 3, "(B, Lk, E)");
  check_rank(op, "value", value, 3, "(B, Lk, E)");
  check_floating(op, "query", query);
  check_same_dtype_and_device(op, "query", query, {{"key", key}, {"value", value}});
  const int64_t N = query.size(0), Lq = query.size(1), E = query.size(2);
  const int64_t B = key.size(0), Lk = key.size(1);
  TORCH_CHECK(B == 1 || B == N, op, ": key must hold tokens for 1 or N = ", N, " samples, got ", B);
  TORCH_CHECK(key.size(2) == E && value.sizes() == key.sizes(), op,
              ": key and value must be (B, Lk, E = ", E, "), got ", key.sizes(), " and ",
              value.sizes());
  TORCH_CHECK(heads > 0 && E % heads == 0, op, ": ", E, " channels are not divisible by ", heads,
              " heads");
  const int64_t D = E / heads;
  const at::Tensor q = query.view({N, Lq, heads, D}).transpose(1, 2);  // (N, H, Lq, D)
  const at::Tensor k = key.view({B, Lk, heads, D}).transpose(1, 2).expand({N, heads, Lk, D});
  const at::Tensor v = value.view({B, Lk, heads, D}).transpose(1, 2).expand({N, heads, Lk, D});
  std::optional<at::Tensor> mask;
  if (key_mask.has_value() && key_mask->defined()) {
    TORCH_CHECK(key_mask->scalar_type() == at::kBool, op, ": key_mask must be bool, got ",
                key_mask->scalar_type());
    TORCH_CHECK(key_mask->sizes() == at::IntArrayRef({B, Lk}), op, ": key_mask must be (B, Lk) = (",
                B, ", ", Lk, "), got ", key_mask->sizes());
    mask = key_mask->view({B, 1, 1, Lk});  // broadcast over heads and query steps
  }
  const at::Tensor out = at::scaled_dot_product_attention(q, k, v, mask);  // (N, H, Lq, D)
  return out.transpose(1, 2).reshape({N, Lq, E});
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CompositeImplicitAutograd, m) {
  m.impl("cross_modal_attention", &cross_modal_attention);
}

}  // namespace skelang
