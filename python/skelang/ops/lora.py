"""lora_linear: a frozen linear layer with its LoRA branch, fused. See csrc/lora/lora_linear.h.

    x (..., in), weight (out, in) frozen, bias (out) | None frozen, lora_A (r, in), lora_B (out, r)
    y = x W^T + b + scaling ((x * mask) A^T) B^T,  mask (..., in) | None: dropout drawn outside,
    bool (keep = True; fold 1 / (1 - p) into scaling: 1 byte per element saved) or x's dtype
Backward saves x, the mask and (x * mask) A^T (..., r) only, and gives the frozen weight and
bias no gradient.

dropout_mask(x, p, seed): the bool mask (keep = True) of x's shape, from a counter-based hash
of (seed, element index); the drop probability is rounded to a multiple of 1/65536. See
csrc/lora/dropout_mask.h.
"""

from __future__ import annotations

import torch
from torch import Tensor

_OP = "skelang::lora_linear"


def lora_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    lora_A: Tensor,
    lora_B: Tensor,
    scaling: float,
    mask: Tensor | None = None,
) -> Tensor:
    """y = x W^T + b + scaling ((x * mask) A^T) B^T (see the module's docstring)."""
    return torch.ops.skelang.lora_linear.default(x, weight, bias, lora_A, lora_B, scaling, mask)[0]


def dropout_mask(x: Tensor, p: float, seed: int) -> Tensor:
    """Bool mask of x's shape and device, kept with probability 1 - round(p * 65536) / 65536."""
    return torch.ops.skelang.dropout_mask.default(x, p, seed)


@torch.library.register_fake("skelang::dropout_mask")
def _dropout_mask_fake(x, p, seed):
    torch._check(0.0 <= p < 1.0, lambda: f"skelang::dropout_mask: the drop probability p must be in [0, 1), got {p}")
    return x.new_empty(x.shape, dtype=torch.bool)


@torch.library.register_fake(_OP)
def _lora_linear_fake(x, weight, bias, lora_A, lora_B, scaling, mask):
    torch._check(
        weight.dim() == 2 and x.shape[-1] == weight.shape[1],
        lambda: f"{_OP}: weight must be (out, in) with in = {x.shape[-1]}, got {list(weight.shape)}",
    )
    return x.new_empty((*x.shape[:-1], weight.shape[0])), x.new_empty((*x.shape[:-1], lora_A.shape[0]))


@torch.library.register_fake("skelang::lora_linear_backward")
def _lora_linear_backward_fake(grad_y, x, weight, lora_A, lora_B, scaling, mask, xa):
    return x.new_empty(x.shape), lora_A.new_empty(lora_A.shape), lora_B.new_empty(lora_B.shape)


def _setup_context(ctx, inputs, output):
    x, weight, bias, lora_A, lora_B, scaling, mask = inputs
    ctx.scaling = scaling
    ctx.save_for_backward(x, weight, lora_A, lora_B, mask, output[1])


def _backward(ctx, grad_y, grad_xa):
    x, weight, lora_A, lora_B, mask, xa = ctx.saved_tensors
    grad_x, grad_A, grad_B = torch.ops.skelang.lora_linear_backward.default(
        grad_y.contiguous(), x, weight, lora_A, lora_B, ctx.scaling, mask, xa
    )
    needs = ctx.needs_input_grad
    return (
        grad_x if needs[0] else None,
        None,
        None,
        grad_A if needs[3] else None,
        grad_B if needs[4] else None,
        None,
        None,
    )


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
