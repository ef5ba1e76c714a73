"""Pure-PyTorch reference of skelang.ops.cross_modal_attention: explicit softmax attention of the
query steps over the (masked) tokens."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def cross_modal_attention(
    query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None = None, heads: int = 1
) -> Tensor:
    N, Lq, E = query.shape
    B, Lk, _ = key.shape
    D = E // heads
    q = query.view(N, Lq, heads, D).transpose(1, 2)  # (N, H, Lq, D)
    k = key.view(B, Lk, heads, D).transpose(1, 2)
    v = value.view(B, Lk, heads, D).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)  # (N, H, Lq, Lk)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(N, Lq, E)
