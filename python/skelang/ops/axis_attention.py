"""axis_attention: multi-head self-attention along one axis of (N, C, T, V) features with an
additive bias per head and pair, through ATen's scaled-dot-product attention from C++.

    qkv   (N, 3C, T, V)  queries, keys, values from one 1x1 convolution; C = heads * D
    bias  (H, L, L)      L = V for axis 3 (GSM: joints of a frame), T for axis 2 (GTA: frames)
    out   (N, C, T, V)
"""

from __future__ import annotations

import torch
from torch import Tensor


def axis_attention(qkv: Tensor, bias: Tensor, heads: int, axis: int) -> Tensor:
    """Self-attention across joints (axis=3) or frames (axis=2) with a (H, L, L) bias."""
    return torch.ops.skelang.axis_attention.default(qkv, bias, heads, axis)
