// SSF's operators (HocSLM).
//
// contrastive_alignment_loss(skeleton, text, labels, log_scale) -> (loss, logsumexp)
//   skeleton (N, D), text (M, D) embeddings (normalised by the caller), labels (N) int64: the
//   index of each sample's text; log_scale (1): the learnable inverse temperature, scale =
//   exp(log_scale). logits[n,m] = scale * <skeleton[n], text[m]>, and
//     loss = mean_n ( logsumexp_m logits[n,m] - logits[n, labels[n]] )
//   (InfoNCE from skeleton to text). Computed by tiles of rows x texts with a running
//   log-sum-exp, so neither N x M logits nor their exponentials are ever held whole, and
//   no exp overflows for any scale. logsumexp (N) is kept for backward.
//
// contrastive_alignment_loss_backward(grad, skeleton, text, labels, log_scale, logsumexp)
//   -> (grad_skeleton, grad_text, grad_log_scale), from p = softmax(logits) recomputed by tiles:
//     G = grad (p - onehot(labels)) / N,  grad_skeleton = scale G text,
//     grad_text = scale G^T skeleton,     grad_log_scale = sum(G * logits).
#pragma once

#include <ATen/core/Tensor.h>

namespace skelang {

void check_contrastive_alignment_inputs(const char* op, const at::Tensor& skeleton,
                                        const at::Tensor& text, const at::Tensor& labels,
                                        const at::Tensor& log_scale);

// Every label names a text: labels[n] in [0, M) (reads the labels; on CUDA it synchronises).
void check_contrastive_alignment_labels(const char* op, const at::Tensor& labels, int64_t M);

}  // namespace skelang
