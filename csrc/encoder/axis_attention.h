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
// axis_attention_with_probs also returns the attention probabilities
//   probs (S, H, L, L)   P = softmax(q k^T / sqrt(D) + bias) for each of the S sequences
//                        (frames n * T + t for axis 3, joints n * V + v for axis 2) and head.
// Training keeps them for backward (skelang.ops.axis_attention does when autograd records):
// H L^2 values per sequence against qkv's 3C L. Recomputing them made the op's forward and
// backward 1.11-1.30x slower at HGLNet's NW-UCLA shapes (2-core AVX2 EPYC, `skelang bench
// --only encoder`). Without probs, backward recomputes P chunk by chunk from qkv and bias:
//   dP = g v^T,  dS = P (dP - rowsum(P dP)),
//   dq = dS k / sqrt(D),  dk = dS^T q / sqrt(D),  dv = P^T g,  dbias = sum of dS.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
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

// The kernels: ATen batched products, over chunks of sequences where the probabilities are
// not kept (CUDA's axis_attention forward is ATen's fused attention); the forward with probs
// builds the whole P on both devices (with its scores, about 2 S H L^2 values at its peak).
at::Tensor axis_attention_aten(const at::Tensor& qkv, const at::Tensor& bias, int64_t heads,
                               int64_t axis);
std::tuple<at::Tensor, at::Tensor> axis_attention_with_probs_aten(const at::Tensor& qkv,
                                                                  const at::Tensor& bias,
                                                                  int64_t heads, int64_t axis);
std::tuple<at::Tensor, at::Tensor> axis_attention_backward_aten(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& bias,
    const std::optional<at::Tensor>& probs, int64_t heads, int64_t axis);

}  // namespace skelang
