"""SSF's ops (HocSLM): the fused contrastive alignment loss and cross-modal attention.
See csrc/fusion/.

    contrastive_alignment_loss(skeleton (N, D), text (M, D), labels (N), log_scale (1)) -> loss
        mean_n logsumexp_m(s * <skeleton_n, text_m>) - s * <skeleton_n, text_labels[n]>,
        s = exp(log_scale); computed by tiles with a running log-sum-exp (no N x M matrix)
    cross_modal_attention(query (N, Lq, E), key, value (B, Lk, E), key_mask (B, Lk) | None, heads)
        multi-head attention of the query steps over the tokens, B in {1, N}
"""

from __future__ import annotations

import torch
from torch import Tensor

_OP = "skelang::contrastive_alignment_loss"


def contrastive_alignment_loss(skeleton: Tensor, text: Tensor, labels: Tensor, log_scale: Tensor) -> Tensor:
    """InfoNCE from skeleton embeddings to text embeddings (see the module's docstring)."""
    return torch.ops.skelang.contrastive_alignment_loss.default(skeleton, text, labels, log_scale)[0]


def cross_modal_attention(
    query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None = None, heads: int = 1
) -> Tensor:
    """Each query step attends over the key/value tokens (padding where key_mask is False)."""
    return torch.ops.skelang.cross_modal_attention.default(query, key, value, key_mask, heads)


@torch.library.register_fake(_OP)
def _contrastive_alignment_loss_fake(skeleton, text, labels, log_scale):
    torch._check(
        skeleton.dim() == 2 and text.dim() == 2 and text.shape[1] == skeleton.shape[1],
        lambda: f"{_OP}: skeleton (N, D) and text (M, D) expected, got {list(skeleton.shape)} and {list(text.shape)}",
    )
    return skeleton.new_empty(()), skeleton.new_empty(skeleton.shape[0])


@torch.library.register_fake("skelang::contrastive_alignment_loss_backward")
def _contrastive_alignment_loss_backward_fake(grad, skeleton, text, labels, log_scale, logsumexp):
    return skeleton.new_empty(skeleton.shape), text.new_empty(text.shape), log_scale.new_empty(log_scale.shape)


def _setup_context(ctx, inputs, output):
    skeleton, text, labels, log_scale = inputs
    ctx.save_for_backward(skeleton, text, labels, log_scale, output[1])


def _backward(ctx, grad_loss, grad_logsumexp):
    skeleton, text, labels, log_scale, logsumexp = ctx.saved_tensors
    grads = torch.ops.skelang.contrastive_alignment_loss_backward.default(
        grad_loss, skeleton, text, labels, log_scale, logsumexp
    )
    return grads[0], grads[1], None, grads[2]


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
