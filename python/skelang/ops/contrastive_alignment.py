"""contrastive_alignment_loss: SSF's (HocSLM) InfoNCE from skeleton to text, fused. See
csrc/fusion/contrastive_alignment.h.

    contrastive_alignment_loss(skeleton (N, D), text (M, D), labels (N), log_scale (1)) -> loss
        mean_n logsumexp_m(s * <skeleton_n, text_m>) - s * <skeleton_n, text_labels[n]>,
        s = exp(log_scale); computed by tiles with a running log-sum-exp (no N x M matrix)
"""

from __future__ import annotations

import torch
from torch import Tensor

from skelang.ops.checks import (
    check,
    check_floating,
    check_rank,
    check_same_device,
    check_same_dtype_and_device,
    scalar_type,
    sizes,
)

_OP = "skelang::contrastive_alignment_loss"
_BACKWARD_OP = "skelang::contrastive_alignment_loss_backward"


def contrastive_alignment_loss(skeleton: Tensor, text: Tensor, labels: Tensor, log_scale: Tensor) -> Tensor:
    """InfoNCE from skeleton embeddings to text embeddings (see the module's docstring)."""
    return torch.ops.skelang.contrastive_alignment_loss.default(skeleton, text, labels, log_scale)[0]


def _check_inputs(op, skeleton, text, labels, log_scale) -> None:
    # Mirrors check_contrastive_alignment_inputs in csrc/fusion/fusion_ops.cpp, for fake tensors.
    check_rank(op, "skeleton", skeleton, 2, "(N, D)")
    check_rank(op, "text", text, 2, "(M, D)")
    check_rank(op, "labels", labels, 1, "(N)")
    check_floating(op, "skeleton", skeleton)
    check_same_dtype_and_device(op, "skeleton", skeleton, {"text": text, "log_scale": log_scale})
    check_same_device(op, "skeleton", skeleton, "labels", labels)
    check(
        text.shape[1] == skeleton.shape[1],
        op,
        lambda: f"text must be (M, D) with D = {skeleton.shape[1]} as skeleton {sizes(skeleton)}, got {sizes(text)}",
    )
    check(labels.dtype == torch.int64, op, lambda: f"labels must be int64, got {scalar_type(labels.dtype)}")
    check(
        labels.shape[0] == skeleton.shape[0],
        op,
        lambda: f"labels must have one entry per skeleton row ({skeleton.shape[0]}), got {labels.shape[0]}",
    )
    check(
        log_scale.numel() == 1 and log_scale.dim() == 1,
        op,
        lambda: f"log_scale must be a tensor of shape (1), got {sizes(log_scale)}",
    )
    check(text.shape[0] > 0, op, "there is no text to align with")
    check(skeleton.shape[0] > 0, op, "there is no skeleton row (the mean over none is undefined)")


@torch.library.register_fake(_OP)
def _contrastive_alignment_loss_fake(skeleton, text, labels, log_scale):
    _check_inputs(_OP, skeleton, text, labels, log_scale)
    return skeleton.new_empty(()), skeleton.new_empty(skeleton.shape[0])


@torch.library.register_fake(_BACKWARD_OP)
def _contrastive_alignment_loss_backward_fake(grad, skeleton, text, labels, log_scale, logsumexp):
    _check_inputs(_BACKWARD_OP, skeleton, text, labels, log_scale)
    check(
        logsumexp.dim() == 1 and logsumexp.shape[0] == skeleton.shape[0],
        _BACKWARD_OP,
        lambda: f"logsumexp must be (N) from the forward, got {sizes(logsumexp)}",
    )
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
