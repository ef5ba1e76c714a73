"""axis_attention: multi-head self-attention along one axis of (N, C, T, V) features with an
additive bias per head and pair (GSM across joints, GTA across frames).

    qkv   (N, 3C, T, V)  queries, keys, values from one 1x1 convolution; C = heads * D
    bias  (H, L, L)      L = V for axis 3 (GSM: joints of a frame), T for axis 2 (GTA: frames)
    out   (N, C, T, V)

Backward keeps qkv and bias only and recomputes the attention probabilities (see
csrc/encoder/axis_attention.h).
"""

from __future__ import annotations

import torch
from torch import Tensor

_OP = "skelang::axis_attention"
_BACKWARD_OP = "skelang::axis_attention_backward"


def axis_attention(qkv: Tensor, bias: Tensor, heads: int, axis: int) -> Tensor:
    """Self-attention across joints (axis=3) or frames (axis=2) with a (H, L, L) bias."""
    return torch.ops.skelang.axis_attention.default(qkv, bias, heads, axis)


def _check_inputs(op, qkv, bias, heads, axis) -> None:
    # Mirrors axis_attention_shape in csrc/encoder/axis_attention.cpp, for fake tensors.
    torch._check(qkv.dim() == 4, lambda: f"{op}: qkv must be a 4-D tensor (N, 3C, T, V), got shape {list(qkv.shape)}")
    torch._check(
        qkv.dtype in (torch.float32, torch.float64), lambda: f"{op}: qkv must be float32 or float64, got {qkv.dtype}"
    )
    torch._check(
        bias.dtype == qkv.dtype,
        lambda: f"{op}: qkv and bias must have the same dtype, got {qkv.dtype} and {bias.dtype}",
    )
    torch._check(bias.device == qkv.device, lambda: f"{op}: qkv and bias must be on the same device")
    torch._check(axis in (2, 3), lambda: f"{op}: axis must be 2 (frames) or 3 (joints), got {axis}")
    torch._check(
        heads > 0 and qkv.shape[1] % (3 * heads) == 0,
        lambda: f"{op}: qkv's {qkv.shape[1]} channels must be 3 x heads x D for heads = {heads}",
    )
    L = qkv.shape[axis]
    torch._check(
        tuple(bias.shape) == (heads, L, L),
        lambda: f"{op}: bias must be (H, L, L) = ({heads}, {L}, {L}) for axis {axis}, got {list(bias.shape)}",
    )


@torch.library.register_fake(_OP)
def _axis_attention_fake(qkv, bias, heads, axis):
    _check_inputs(_OP, qkv, bias, heads, axis)
    N, C3, T, V = qkv.shape
    return qkv.new_empty((N, C3 // 3, T, V))


@torch.library.register_fake(_BACKWARD_OP)
def _axis_attention_backward_fake(grad_out, qkv, bias, heads, axis):
    _check_inputs(_BACKWARD_OP, qkv, bias, heads, axis)
    return qkv.new_empty(qkv.shape), bias.new_empty(bias.shape)


def _setup_context(ctx, inputs, output):
    qkv, bias, ctx.heads, ctx.axis = inputs
    ctx.save_for_backward(qkv, bias)  # the probabilities are recomputed in backward


def _backward(ctx, grad_out):
    qkv, bias = ctx.saved_tensors
    grad_qkv, grad_bias = torch.ops.skelang.axis_attention_backward.default(grad_out, qkv, bias, ctx.heads, ctx.axis)
    return (grad_qkv if ctx.needs_input_grad[0] else None, grad_bias if ctx.needs_input_grad[1] else None, None, None)


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
