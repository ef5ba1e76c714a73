// axis_attention's input checks and kernels, written with ATen's batched matrix products
// (over chunks of sequences where the probabilities are not kept): registered here for CPU,
// and for CUDA in cuda/axis_attention_kernel.cu (see axis_attention.h for the shapes and the
// formulas).
#include "encoder/axis_attention.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/_softmax_backward_data.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/softmax.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

#include "common/checks.h"

namespace skelang {

AxisAttentionShape axis_attention_shape(const char* op, const at::Tensor& qkv,
                                        const at::Tensor& bias, int64_t heads, int64_t axis) {
  check_rank(op, "qkv", qkv, 4, "(N, 3C, T, V)");
  check_rank(op, "bias", bias, 3, "(H, L, L)");
  check_floating(op, "qkv", qkv);
  check_same_dtype(op, "qkv", qkv, "bias", bias);
  check_same_device(op, "qkv", qkv, "bias", bias);
  TORCH_CHECK(axis == 2 || axis == 3, op, ": axis must be 2 (frames) or 3 (joints), got ", axis);
  const int64_t N = qkv.size(0), T = qkv.size(2), V = qkv.size(3);
  TORCH_CHECK(heads > 0, op, ": heads must be positive, got ", heads);
  TORCH_CHECK(qkv.size(1) % (3 * heads) == 0, op, ": qkv's ", qkv.size(1),
              " channels must be 3 x heads x D for heads = ", heads);
  const int64_t C = qkv.size(1) / 3, L = axis == 3 ? V : T;
  TORCH_CHECK(bias.sizes() == at::IntArrayRef({heads, L, L}), op, ": bias must be (H, L, L) = (",
              heads, ", ", L, ", ", L, ") for axis ", axis, " of qkv ", qkv.sizes(), ", got ",
              bias.sizes());
  return {N, C, T, V, heads, C / heads, axis, L, axis == 3 ? N * T : N * V};
}

namespace {

// (N, 3C, T, V) -> (3, S, H, D, L) and back; (N, C, T, V) <-> (S, H, D, L). The sequence axis
// stays innermost (as V or T is in the features), so that these copies move rows of L values
// rather than gathering single values, and the products below read q, k, v and the gradients
// as transposed matrices where they need (L, D) (GEMMs take either, without a copy). Any
// strides in (autograd may pass an expanded gradient); one copy out.
at::Tensor to_sequences(const at::Tensor& t, const AxisAttentionShape& s, int64_t parts) {
  const at::Tensor split = t.reshape({s.N, parts, s.heads, s.D, s.T, s.V});
  const at::Tensor moved = s.axis == 3 ? split.permute({1, 0, 4, 2, 3, 5})   // (P, N, T, H, D, V)
                                       : split.permute({1, 0, 5, 2, 3, 4});  // (P, N, V, H, D, T)
  return moved.reshape({parts, s.sequences, s.heads, s.D, s.L});
}

// Always contiguous: a reshape that happens to be a view would give shape-dependent strides.
at::Tensor from_sequences(const at::Tensor& t, const AxisAttentionShape& s, int64_t parts) {
  const at::Tensor moved =
      s.axis == 3 ? t.view({parts, s.N, s.T, s.heads, s.D, s.V}).permute({1, 0, 3, 4, 2, 5})
                  : t.view({parts, s.N, s.V, s.heads, s.D, s.T}).permute({1, 0, 3, 4, 5, 2});
  return moved.reshape({s.N, parts * s.C, s.T, s.V}).contiguous();
}

// Sequences per chunk: bounds the (chunk, H, L, L) probabilities to ~16 M elements.
int64_t chunk_size(const AxisAttentionShape& s) {
  return std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(1, s.heads * s.L * s.L));
}

// P (B, H, L, L) = softmax(q^T k / sqrt(D) + bias) of one chunk of sequences, q and k (B, H, D, L).
at::Tensor attention_probabilities(const at::Tensor& q, const at::Tensor& k, const at::Tensor& bias,
                                   double scale) {
  at::Tensor scores = at::matmul(q.transpose(-1, -2), k);
  return at::softmax(scores.mul_(scale).add_(bias), -1);
}

}  // namespace

at::Tensor axis_attention_aten(const at::Tensor& qkv, const at::Tensor& bias, int64_t heads,
                               int64_t axis) {
  const auto s = axis_attention_shape("skelang::axis_attention", qkv, bias, heads, axis);
  const at::Tensor qkv_seq = to_sequences(qkv, s, 3);  // (3, S, H, D, L)
  if (qkv.is_cuda()) {  // ATen's fused attention kernels, on (S, H, L, D) with unit-stride rows
    const auto rows = [&](int64_t part) { return qkv_seq[part].transpose(-1, -2).contiguous(); };
    const at::Tensor out = at::scaled_dot_product_attention(rows(0), rows(1), rows(2), bias);
    return from_sequences(out.transpose(-1, -2).unsqueeze(0), s, 1);
  }
  // CPU: ATen's attention would take its blocked kernel, slower than batched products at
  // these short lengths (L = V or T, tens of positions).
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  at::Tensor out = at::empty({1, s.sequences, s.heads, s.D, s.L}, qkv.options());
  const int64_t chunk = chunk_size(s);
  for (int64_t begin = 0; begin < s.sequences; begin += chunk) {
    const int64_t end = std::min(s.sequences, begin + chunk);
    const at::Tensor P = attention_probabilities(qkv_seq[0].slice(0, begin, end),
                                                 qkv_seq[1].slice(0, begin, end), bias, scale);
    at::Tensor out_chunk = out[0].slice(0, begin, end);
    at::matmul_out(out_chunk, qkv_seq[2].slice(0, begin, end), P.transpose(-1, -2));  // v P^T
  }
  return from_sequences(out, s, 1);
}

std::tuple<at::Tensor, at::Tensor> axis_attention_with_probs_aten(const at::Tensor& qkv,
                                                                  const at::Tensor& bias,
                                                                  int64_t heads, int64_t axis) {
  const auto s = axis_attention_shape("skelang::axis_attention_with_probs", qkv, bias, heads, axis);
  const at::Tensor qkv_seq = to_sequences(qkv, s, 3);  // (3, S, H, D, L)
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  // All of P is returned, so there is nothing to gain from chunks here.
  const at::Tensor probs = attention_probabilities(qkv_seq[0], qkv_seq[1], bias, scale);
  return {from_sequences(at::matmul(qkv_seq[2], probs.transpose(-1, -2)).unsqueeze(0), s, 1),
          probs};
}

std::tuple<at::Tensor, at::Tensor> axis_attention_backward_aten(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& bias,
    const std::optional<at::Tensor>& probs, int64_t heads, int64_t axis) {
  constexpr const char* op = "skelang::axis_attention_backward";
  const auto s = axis_attention_shape(op, qkv, bias, heads, axis);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({s.N, s.C, s.T, s.V}), op,
              ": grad_out must be (N, C, T, V) = (", s.N, ", ", s.C, ", ", s.T, ", ", s.V,
              "), got ", grad_out.sizes());
  check_same_dtype(op, "grad_out", grad_out, "qkv", qkv);
  check_same_device(op, "grad_out", grad_out, "qkv", qkv);
  if (probs.has_value()) {
    TORCH_CHECK(probs->sizes() == at::IntArrayRef({s.sequences, s.heads, s.L, s.L}), op,
                ": probs must be (S, H, L, L) = (", s.sequences, ", ", s.heads, ", ", s.L, ", ",
                s.L, ") for qkv ", qkv.sizes(), " and axis ", axis, ", got ", probs->sizes());
    check_same_dtype(op, "probs", *probs, "qkv", qkv);
    check_same_device(op, "probs", *probs, "qkv", qkv);
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.D));
  const at::Tensor qkv_seq = to_sequences(qkv, s, 3);           // (3, S, H, D, L)
  const at::Tensor grad_seq = to_sequences(grad_out, s, 1)[0];  // (S, H, D, L)
  at::Tensor grad_qkv_seq = at::empty_like(qkv_seq);
  at::Tensor grad_bias = at::zeros_like(bias);
  const int64_t chunk = chunk_size(s);
  for (int64_t begin = 0; begin < s.sequences; begin += chunk) {
    const int64_t end = std::min(s.sequences, begin + chunk);
    const at::Tensor q = qkv_seq[0].slice(0, begin, end), k = qkv_seq[1].slice(0, begin, end);
    const at::Tensor v = qkv_seq[2].slice(0, begin, end), g = grad_seq.slice(0, begin, end);
    const at::Tensor P = probs.has_value() ? probs->slice(0, begin, end)
                                           : attention_probabilities(q, k, bias, scale);
    // dS = P (dP - rowsum(P dP)) with dP = g^T v (the (L, D) g times v^T): softmax's own backward
    const at::Tensor dS = at::_softmax_backward_data(at::matmul(g.transpose(-1, -2), v), P, -1,
                                                     P.scalar_type());  // (B, H, L, L)
    grad_bias += dS.sum(0);
    // in the (D, L) layout: dq = k dS^T / sqrt(D), dk = q dS / sqrt(D), dv = g P
    at::Tensor grad_q = grad_qkv_seq[0].slice(0, begin, end);
    at::Tensor grad_k = grad_qkv_seq[1].slice(0, begin, end);
    at::Tensor grad_v = grad_qkv_seq[2].slice(0, begin, end);
    at::matmul_out(grad_q, k, dS.transpose(-1, -2));
    grad_q.mul_(scale);
    at::matmul_out(grad_k, q, dS);
    grad_k.mul_(scale);
    at::matmul_out(grad_v, g, P);
  }
  return {from_sequences(grad_qkv_seq, s, 3), grad_bias};
}

TORCH_LIBRARY_IMPL(skelang, CPU, m) {
  m.impl("axis_attention", &axis_attention_aten);
  m.impl("axis_attention_with_probs", &axis_attention_with_probs_aten);
  m.impl("axis_attention_backward", &axis_attention_backward_aten);
}

}  // namespace skelang
