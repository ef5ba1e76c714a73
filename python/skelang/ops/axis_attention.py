"""axis_attention: multi-head self-attention along one axis of (N, C, T, V) features with an
additive bias per head and pair (GSM across joints, GTA across frames).

    qkv   (N, 3C, T, V)  queries, keys, values from one 1x1 convolution; C = heads * D
    bias  (H, L, L)      L = V for axis 3 (GSM: joints of a frame), T for axis 2 (GTA: frames)
    out   (N, C, T, V)

When autograd records, the op keeps the attention probabilities (S, H, L, L) for backward
(`axis_attention_with_probs`); called directly through ``torch.ops.skelang.axis_attention``
it keeps qkv and bias only and backward recomputes them (see csrc/encoder/axis_attention.h).
"""

from __future__ import annotations

import torch
from torch import Tensor

from skelang.ops.checks import check, check_floating, check_rank, check_same_device, check_same_dtype, sizes

_OP = "skelang::axis_attention"
_WITH_PROBS_OP = "skelang::axis_attention_with_probs"
_BACKWARD_OP = "skelang::axis_attention_backward"


def axis_attention(qkv: Tensor, bias: Tensor, heads: int, axis: int) -> Tensor:
    """Self-attention across joints (axis=3, GSM) or frames (axis=2, GTA) with a (H, L, L)
    bias: out (N, C, T, V) = softmax(q k^T / sqrt(D) + bias) v for qkv (N, 3C, T, V).

    Where autograd records, the probabilities are kept for backward (H L^2 values per
    sequence); elsewhere (inference, ``torch.no_grad``) they are not materialised whole.
    Errors (RuntimeError) name the tensor at fault: ranks, dtypes, devices, heads that do not
    divide C, a bias that is not (H, L, L), an axis other than 2 or 3."""
    if torch.is_grad_enabled() and (qkv.requires_grad or bias.requires_grad):
        return torch.ops.skelang.axis_attention_with_probs.default(qkv, bias, heads, axis)[0]
    return torch.ops.skelang.axis_attention.default(qkv, bias, heads, axis)


def axis_attention_with_probs(qkv: Tensor, bias: Tensor, heads: int, axis: int) -> tuple[Tensor, Tensor]:
    """axis_attention's output (N, C, T, V) and its attention probabilities (S, H, L, L):
    sequence s is frame s = n * T + t (axis 3: P[s, h] is V x V over joints) or joint
    s = n * V + v (axis 2: T x T over frames). The probabilities are not differentiable."""
    return torch.ops.skelang.axis_attention_with_probs.default(qkv, bias, heads, axis)


def _check_inputs(op, qkv, bias, heads, axis) -> None:
    # Mirrors axis_attention_shape in csrc/encoder/axis_attention.cpp, for fake tensors.
    check_rank(op, "qkv", qkv, 4, "(N, 3C, T, V)")
    check_rank(op, "bias", bias, 3, "(H, L, L)")
    check_floating(op, "qkv", qkv)
    check_same_dtype(op, "qkv", qkv, "bias", bias)
    check_same_device(op, "qkv", qkv, "bias", bias)
    check(axis in (2, 3), op, lambda: f"axis must be 2 (frames) or 3 (joints), got {axis}")
    check(heads > 0, op, lambda: f"heads must be positive, got {heads}")
    check(
        qkv.shape[1] % (3 * heads) == 0,
        op,
        lambda: f"qkv's {qkv.shape[1]} channels must be 3 x heads x D for heads = {heads}",
    )
    L = qkv.shape[axis]
    check(
        tuple(bias.shape) == (heads, L, L),
        op,
        lambda: f"bias must be (H, L, L) = ({heads}, {L}, {L}) for axis {axis} of qkv {sizes(qkv)}, got {sizes(bias)}",
    )


@torch.library.register_fake(_OP)
def _axis_attention_fake(qkv, bias, heads, axis):
    _check_inputs(_OP, qkv, bias, heads, axis)
    N, C3, T, V = qkv.shape
    return qkv.new_empty((N, C3 // 3, T, V))


def _probs_shape(qkv, heads, axis) -> tuple[int, ...]:
    N, _, T, V = qkv.shape
    L = V if axis == 3 else T
    return (N * T if axis == 3 else N * V, heads, L, L)


@torch.library.register_fake(_WITH_PROBS_OP)
def _axis_attention_with_probs_fake(qkv, bias, heads, axis):
    _check_inputs(_WITH_PROBS_OP, qkv, bias, heads, axis)
    N, C3, T, V = qkv.shape
    return qkv.new_empty((N, C3 // 3, T, V)), qkv.new_empty(_probs_shape(qkv, heads, axis))


@torch.library.register_fake(_BACKWARD_OP)
def _axis_attention_backward_fake(grad_out, qkv, bias, probs, heads, axis):
    _check_inputs(_BACKWARD_OP, qkv, bias, heads, axis)
    N, C3, T, V = qkv.shape
    check(
        tuple(grad_out.shape) == (N, C3 // 3, T, V),
        _BACKWARD_OP,
        lambda: f"grad_out must be (N, C, T, V) = ({N}, {C3 // 3}, {T}, {V}), got {sizes(grad_out)}",
    )
    check_same_dtype(_BACKWARD_OP, "grad_out", grad_out, "qkv", qkv)
    check_same_device(_BACKWARD_OP, "grad_out", grad_out, "qkv", qkv)
    if probs is not None:
        expected = _probs_shape(qkv, heads, axis)
        check(
            tuple(probs.shape) == expected,
            _BACKWARD_OP,
            lambda: f"probs must be (S, H, L, L) = {expected} for qkv {sizes(qkv)} and axis {axis}, got {sizes(probs)}",
        )
        check_same_dtype(_BACKWARD_OP, "probs", probs, "qkv", qkv)
        check_same_device(_BACKWARD_OP, "probs", probs, "qkv", qkv)
    return qkv.new_empty(qkv.shape), bias.new_empty(bias.shape)


def _gradients(ctx, grad_out, qkv, bias, probs):
    if grad_out is None:  # the output was not used
        return None, None, None, None
    grad_qkv, grad_bias = torch.ops.skelang.axis_attention_backward.default(
        grad_out, qkv, bias, probs, ctx.heads, ctx.axis
    )
    return (grad_qkv if ctx.needs_input_grad[0] else None, grad_bias if ctx.needs_input_grad[1] else None, None, None)


def _setup_context(ctx, inputs, output):
    qkv, bias, ctx.heads, ctx.axis = inputs
    ctx.save_for_backward(qkv, bias)  # the probabilities are recomputed in backward


def _backward(ctx, grad_out):
    return _gradients(ctx, grad_out, *ctx.saved_tensors, None)


def _setup_context_with_probs(ctx, inputs, output):
    qkv, bias, ctx.heads, ctx.axis = inputs
    probs = output[1]
    ctx.mark_non_differentiable(probs)
    ctx.set_materialize_grads(False)  # no zero (S, H, L, L) gradient for the probabilities
    ctx.save_for_backward(qkv, bias, probs)


def _backward_with_probs(ctx, grad_out, _grad_probs):
    return _gradients(ctx, grad_out, *ctx.saved_tensors)


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
torch.library.register_autograd(_WITH_PROBS_OP, _backward_with_probs, setup_context=_setup_context_with_probs)
