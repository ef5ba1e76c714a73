// axis_attention: multi-head self-attention along one axis of (N, C, T, V) features with an
// additive bias per head and pair. GSM attends across the V joints of each frame (axis 3),
// GTA across the T frames of each joint (axis 2).
//
//   qkv   (N, 3C, T, V)  queries, keys and values from one 1x1 convolution, each C = H * D
//                        channels ordered (head, channel)
//   bias  (H, L, L)      L = V (axis 3) or T (axis 2)
//   out   (N, C, T, V)   out = softmax(q k^T / sqrt(D) + bias) v, for each of the N * T
//                        frames (axis 3) or N * V joints (axis 2) and each head
//
// Backward keeps qkv and bias only: the attention probabilities, H L^2 per sequence (more
// than qkv's 3C L once L > 3C / H), are recomputed chunk by chunk, never kept between
// forward and backward:
//   P = softmax(q k^T / sqrt(D) + bias),  dP = g v^T,  dS = P (dP - rowsum(P dP)),
//   dq = dS k / sqrt(D),  dk = dS^T q / sqrt(D),  dv = P^T g,  dbias = sum of dS.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace skelang {

struct AxisAttentionShape {
  int64_t N, C, T, V, heads, D, axis;
  int64_t L;          // sequence length: V (axis 3) or T (axis 2)
  int64_t sequences;  // N * T (axis 3) or N * V (axis 2)
};

// Checks qkv, bias, heads and axis, naming `op` and the tensor at fault.
AxisAttentionShape axis_attention_shape(const char* op, const at::Tensor& qkv,
                                        const at::Tensor& bias, int64_t heads, int64_t axis);

// The kernels (ATen batched products over chunks of sequences; CUDA's forward is ATen's
// fused attention).
at::Tensor axis_attention_aten(const at::Tensor& qkv, const at::Tensor& bias, int64_t heads,
                               int64_t axis);
std::tuple<at::Tensor, at::Tensor> axis_attention_backward_aten(const at::Tensor& grad_out,
                                                                const at::Tensor& qkv,
                                                                const at::Tensor& bias,
                                                                int64_t heads, int64_t axis);

}  // namespace skelang
