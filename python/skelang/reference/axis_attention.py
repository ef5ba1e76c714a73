"""Pure-PyTorch reference of skelang.ops.axis_attention: explicit softmax attention across
joints (GSM) or frames (GTA) with a learned bias."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def axis_attention_with_probs(qkv: Tensor, bias: Tensor, heads: int, axis: int) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(D) + bias) v across joints (axis 3) or frames (axis 2), and the
    probabilities (S, H, L, L), not differentiable, as skelang.ops.axis_attention_with_probs."""
    N, C3, T, V = qkv.shape
    C = C3 // 3
    D = C // heads
    split = qkv.view(N, 3, heads, D, T, V)
    if axis == 3:
        q, k, v = split.permute(1, 0, 4, 2, 5, 3).reshape(3, N * T, heads, V, D)
    else:
        q, k, v = split.permute(1, 0, 5, 2, 4, 3).reshape(3, N * V, heads, T, D)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + bias, dim=-1)
    out = weights @ v  # (N * L', H, L, D)
    if axis == 3:
        out = out.view(N, T, heads, V, D).permute(0, 2, 4, 1, 3).reshape(N, C, T, V)
    else:
        out = out.view(N, V, heads, T, D).permute(0, 2, 4, 3, 1).reshape(N, C, T, V)
    return out, weights.detach()


def axis_attention(qkv: Tensor, bias: Tensor, heads: int, axis: int) -> Tensor:
    """softmax(q k^T / sqrt(D) + bias) v across joints (axis 3) or frames (axis 2)."""
    return axis_attention_with_probs(qkv, bias, heads, axis)[0]
