// axis_attention: multi-head self-attention along one axis of (N, C, T, V) features with an
// additive bias per head and pair, through ATen's scaled_dot_product_attention (which picks
// its fused CPU or CUDA kernel). GSM attends across the V joints of each frame (axis 3), GTA
// across the T frames of each joint (axis 2).
//
//   qkv   (N, 3C, T, V)  queries, keys and values from one 1x1 convolution, each C = H * D
//                        channels ordered (head, channel)
//   bias  (H, L, L)      L = V (axis 3) or T (axis 2)
//   out   (N, C, T, V)
//
// Registered as CompositeImplicitAutograd: autograd goes through ATen's attention backward.
#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/library.h>

#include "common/checks.h"

namespace skelang {
namespace {

at::Tensor axis_attention(const at::Tensor& qkv, const at::Tensor& bias, int64_t heads,
                          int64_t axis) {
  constexpr const char* op = "skelang::axis_attention";
  check_rank(op, "qkv", qkv, 4, "(N, 3C, T, V)");
  check_rank(op, "bias", bias, 3, "(H, L, L)");
  check_floating(op, "qkv", qkv);
  check_same_dtype(op, "qkv", qkv, "bias", bias);
  check_same_device(op, "qkv", qkv, "bias", bias);
  TORCH_CHECK(axis == 2 || axis == 3, op, ": axis must be 2 (frames) or 3 (joints), got ", axis);
  const int64_t N = qkv.size(0), T = qkv.size(2), V = qkv.size(3);
  TORCH_CHECK(heads > 0 && qkv.size(1) % (3 * heads) == 0, op, ": qkv's ", qkv.size(1),
              " channels must be 3 x heads x D for heads = ", heads);
  const int64_t C = qkv.size(1) / 3, D = C / heads, L = axis == 3 ? V : T;
  TORCH_CHECK(bias.sizes() == at::IntArrayRef({heads, L, L}), op, ": bias must be (H, L, L) = (",
              heads, ", ", L, ", ", L, ") for axis ", axis, " of qkv ", qkv.sizes(), ", got ",
              bias.sizes());
  const at::Tensor split = qkv.view({N, 3, heads, D, T, V});
  if (axis == 3) {  // (3, N*T, H, V, D): each frame's joints attend to each other
    const at::Tensor q = split.permute({1, 0, 4, 2, 5, 3}).reshape({3, N * T, heads, V, D});
    const at::Tensor out = at::scaled_dot_product_attention(q[0], q[1], q[2], bias);
    return out.view({N, T, heads, V, D}).permute({0, 2, 4, 1, 3}).reshape({N, C, T, V});
  }
  // (3, N*V, H, T, D): each joint's frames attend to each other
  const at::Tensor q = split.permute({1, 0, 5, 2, 4, 3}).reshape({3, N * V, heads, T, D});
  const at::Tensor out = at::scaled_dot_product_attention(q[0], q[1], q[2], bias);
  return out.view({N, V, heads, T, D}).permute({0, 2, 4, 3, 1}).reshape({N, C, T, V});
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CompositeImplicitAutograd, m) {
  m.impl("axis_attention", &axis_attention);
}

}  // namespace skelang
