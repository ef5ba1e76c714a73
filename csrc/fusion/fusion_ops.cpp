// Schemas of SSF's operators, and the input checks their kernels share.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/checks.h"
#include "fusion/contrastive_alignment.h"

namespace skelang {

void check_contrastive_alignment_inputs(const char* op, const at::Tensor& skeleton,
                                        const at::Tensor& text, const at::Tensor& labels,
                                        const at::Tensor& log_scale) {
  check_rank(op, "skeleton", skeleton, 2, "(N, D)");
  check_rank(op, "text", text, 2, "(M, D)");
  check_rank(op, "labels", labels, 1, "(N)");
  check_floating(op, "skeleton", skeleton);
  check_same_dtype_and_device(op, "skeleton", skeleton, {{"text", text}, {"log_scale", log_scale}});
  check_same_device(op, "skeleton", skeleton, "labels", labels);
  TORCH_CHECK(text.size(1) == skeleton.size(1), op,
              ": text must be (M, D) with D = ", skeleton.size(1), " as skeleton ",
              skeleton.sizes(), ", got ", text.sizes());
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ",
              labels.scalar_type());
  TORCH_CHECK(labels.size(0) == skeleton.size(0), op,
              ": labels must have one entry per skeleton row (", skeleton.size(0), "), got ",
              labels.size(0));
  TORCH_CHECK(log_scale.numel() == 1 && log_scale.dim() == 1, op,
              ": log_scale must be a tensor of shape (1), got ", log_scale.sizes());
  TORCH_CHECK(text.size(0) > 0, op, ": there is no text to align with");
  TORCH_CHECK(skeleton.size(0) > 0, op,
              ": there is no skeleton row (the mean over none is undefined)");
}

void check_contrastive_alignment_labels(const char* op, const at::Tensor& labels, int64_t M) {
  if (labels.numel() == 0) return;
  const at::Tensor bad = ((labels < 0) | (labels >= M)).nonzero();
  if (bad.size(0) == 0) return;
  const int64_t n = bad[0][0].item<int64_t>();
  TORCH_CHECK(false, op, ": labels[", n, "] = ", labels[n].item<int64_t>(),
              " is not a text in [0, ", M, ")");
}

}  // namespace skelang

TORCH_LIBRARY_FRAGMENT(skelang, m) {
  // See fusion/contrastive_alignment.h.
  m.def(
      "contrastive_alignment_loss(Tensor skeleton, Tensor text, Tensor labels, Tensor log_scale) "
      "-> (Tensor loss, Tensor logsumexp)");
  m.def(
      "contrastive_alignment_loss_backward(Tensor grad, Tensor skeleton, Tensor text, Tensor "
      "labels, "
      "Tensor log_scale, Tensor logsumexp) -> (Tensor, Tensor, Tensor)");
  // Multi-head attention of query steps over key/value tokens (SSF's sequential fusion);
  // see fusion/cross_modal_attention.cpp.
  m.def(
      "cross_modal_attention(Tensor query, Tensor key, Tensor value, Tensor? key_mask, int heads) "
      "-> Tensor");
}
