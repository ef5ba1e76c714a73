// CUDA kernel of contrastive_alignment_loss (float32, float64): rows in chunks whose logits
// (chunk x M) stay under a fixed budget, each chunk with cuBLAS and ATen's fused
// log-sum-exp / softmax on the current stream; no N x M matrix for large N.
#include <ATen/TensorOperators.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/full.h>
#include <ATen/ops/gather.h>
#include <ATen/ops/logsumexp.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "common/reduced_precision.h"
#include "fusion/contrastive_alignment.h"

namespace skelang {
namespace {

constexpr int64_t kLogitBytes = int64_t(128) << 20;

int64_t rows_per_chunk(int64_t M, int64_t element_size) {
  return std::max<int64_t>(1, kLogitBytes / std::max<int64_t>(1, M * element_size));
}

std::tuple<at::Tensor, at::Tensor> contrastive_alignment_loss_cuda(const at::Tensor& skeleton,
                                                                   const at::Tensor& text,
                                                                   const at::Tensor& labels,
                                                                   const at::Tensor& log_scale) {
  check_contrastive_alignment_inputs("skelang::contrastive_alignment_loss", skeleton, text, labels,
                                     log_scale);
  check_contrastive_alignment_labels("skelang::contrastive_alignment_loss", labels, text.size(0));
  if (is_reduced_float(skeleton))
    return to_dtype(contrastive_alignment_loss_cuda(as_float32(skeleton), as_float32(text), labels,
                                                    as_float32(log_scale)),
                    skeleton.scalar_type());
  const c10::cuda::CUDAGuard guard(skeleton.device());
  const int64_t N = skeleton.size(0), M = text.size(0),
                chunk = rows_per_chunk(M, skeleton.element_size());
  const at::Tensor scale = log_scale.exp();
  at::Tensor logsumexp = at::empty({N}, skeleton.options());
  at::Tensor positive = at::empty({N}, skeleton.options());
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    const at::Tensor logits = at::mm(skeleton.narrow(0, r0, rows), text.t()) * scale;  // (rows, M)
    logsumexp.narrow(0, r0, rows).copy_(at::logsumexp(logits, {1}));
    positive.narrow(0, r0, rows)
        .copy_(at::gather(logits, 1, labels.narrow(0, r0, rows).unsqueeze(1)).squeeze(1));
  }
  return {(logsumexp - positive).mean(), logsumexp};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> contrastive_alignment_loss_backward_cuda(
    const at::Tensor& grad, const at::Tensor& skeleton, const at::Tensor& text,
    const at::Tensor& labels, const at::Tensor& log_scale, const at::Tensor& logsumexp) {
  check_contrastive_alignment_inputs("skelang::contrastive_alignment_loss_backward", skeleton, text,
                                     labels, log_scale);
  check_contrastive_alignment_labels("skelang::contrastive_alignment_loss_backward", labels,
                                     text.size(0));
  if (is_reduced_float(skeleton))
    return to_dtype(contrastive_alignment_loss_backward_cuda(
                        as_float32(grad), as_float32(skeleton), as_float32(text), labels,
                        as_float32(log_scale), as_float32(logsumexp)),
                    skeleton.scalar_type());
  const c10::cuda::CUDAGuard guard(skeleton.device());
  const int64_t N = skeleton.size(0), M = text.size(0),
                chunk = rows_per_chunk(M, skeleton.element_size());
  const at::Tensor scale = log_scale.exp();
  at::Tensor grad_skeleton = at::empty_like(skeleton);
  at::Tensor grad_text = at::zeros_like(text);
  at::Tensor grad_log_scale = at::zeros_like(log_scale);
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t rows = std::min(chunk, N - r0);
    const at::Tensor skeleton_rows = skeleton.narrow(0, r0, rows);
    const at::Tensor logits = at::mm(skeleton_rows, text.t()) * scale;
    at::Tensor G = at::exp(logits - logsumexp.narrow(0, r0, rows).unsqueeze(1));
    G.scatter_add_(1, labels.narrow(0, r0, rows).unsqueeze(1),
                   at::full({rows, 1}, -1.0, G.options()));
    G.mul_(grad / N);
    grad_log_scale.add_((G * logits).sum());
    grad_skeleton.narrow(0, r0, rows).copy_(at::mm(G, text) * scale);
    grad_text.add_(at::mm(G.t(), skeleton_rows) * scale);
  }
  return {grad_skeleton, grad_text, grad_log_scale};
}

}  // namespace

TORCH_LIBRARY_IMPL(skelang, CUDA, m) {
  m.impl("contrastive_alignment_loss", &contrastive_alignment_loss_cuda);
  m.impl("contrastive_alignment_loss_backward", &contrastive_alignment_loss_backward_cuda);
}

}  // namespace skelang
