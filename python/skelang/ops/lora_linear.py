"""lora_linear: a frozen linear layer with its LoRA branch, fused. See csrc/lora/lora_linear.h.

    x (..., in), weight (out, in) frozen, bias (out) | None frozen, lora_A (r, in), lora_B (out, r)
    y = x W^T + b + scaling ((x * mask) A^T) B^T,  mask (..., in) | None: dropout drawn outside,
    bool (keep = True; fold 1 / (1 - p) into scaling: 1 byte per element saved) or x's dtype
Backward saves x, the mask and (x * mask) A^T (..., r) only, and gives the frozen weight and
bias no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skelang.ops.checks import (
    check,
    check_floating,
    check_rank,
    check_same_dtype,
    check_same_dtype_and_device,
    scalar_type,
    sizes,
)

_OP = "skelang::lora_linear"
_BACKWARD_OP = "skelang::lora_linear_backward"


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


def _check_inputs(op, x, weight, bias, lora_A, lora_B, mask) -> None:
    # Mirrors check_lora_inputs in csrc/lora/lora_linear.cpp, for fake tensors.
    check(x.dim() >= 1, op, "x must have at least one dimension (..., in)")
    check_rank(op, "weight", weight, 2, "(out, in)")
    check_rank(op, "lora_A", lora_A, 2, "(r, in)")
    check_rank(op, "lora_B", lora_B, 2, "(out, r)")
    check_floating(op, "x", x)
    check_same_dtype_and_device(op, "x", x, {"weight": weight, "lora_A": lora_A, "lora_B": lora_B})
    n_in, out, r = x.shape[-1], weight.shape[0], lora_A.shape[0]
    check(
        weight.shape[1] == n_in,
        op,
        lambda: f"weight must be (out, in) with in = {n_in} as x's last dimension {sizes(x)}, got {sizes(weight)}",
    )
    check(lora_A.shape[1] == n_in, op, lambda: f"lora_A must be (r, in = {n_in}), got {sizes(lora_A)}")
    check(tuple(lora_B.shape) == (out, r), op, lambda: f"lora_B must be (out, r) = ({out}, {r}), got {sizes(lora_B)}")
    if bias is not None:
        check(bias.dim() == 1 and bias.shape[0] == out, op, lambda: f"bias must be (out) = ({out}), got {sizes(bias)}")
        check_same_dtype(op, "x", x, "bias", bias)
    if mask is not None:
        check(mask.shape == x.shape, op, lambda: f"mask must have x's shape {sizes(x)}, got {sizes(mask)}")
        check(
            mask.dtype in (torch.bool, x.dtype),
            op,
            lambda: (
                f"mask must be bool (keep = true; fold 1 / (1 - p) into scaling) or x's dtype "
                f"{scalar_type(x.dtype)}, got {scalar_type(mask.dtype)}"
            ),
        )
        check(mask.device == x.device, op, lambda: f"mask must be on x's device {x.device}, got {mask.device}")


@torch.library.register_fake(_OP)
def _lora_linear_fake(x, weight, bias, lora_A, lora_B, scaling, mask):
    _check_inputs(_OP, x, weight, bias, lora_A, lora_B, mask)
    return x.new_empty((*x.shape[:-1], weight.shape[0])), x.new_empty((*x.shape[:-1], lora_A.shape[0]))


@torch.library.register_fake(_BACKWARD_OP)
def _lora_linear_backward_fake(grad_y, x, weight, lora_A, lora_B, scaling, mask, xa):
    _check_inputs(_BACKWARD_OP, x, weight, None, lora_A, lora_B, mask)
    out_shape, xa_shape = [*x.shape[:-1], weight.shape[0]], [*x.shape[:-1], lora_A.shape[0]]
    check(
        list(grad_y.shape) == out_shape,
        _BACKWARD_OP,
        lambda: f"grad_y must be (..., out) = [{', '.join(map(str, out_shape))}], got {sizes(grad_y)}",
    )
    check(
        list(xa.shape) == xa_shape,
        _BACKWARD_OP,
        lambda: f"xa must be (..., r) = [{', '.join(map(str, xa_shape))}] from the forward, got {sizes(xa)}",
    )
    check_same_dtype_and_device(_BACKWARD_OP, "x", x, {"grad_y": grad_y, "xa": xa})
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
