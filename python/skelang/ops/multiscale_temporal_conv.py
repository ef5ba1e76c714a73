"""multiscale_temporal_conv: LTC's dilated temporal convolutions, one per branch, in one call.

x          (N, B * W, T, V)   the B branches' inputs, W channels each
weight     (B, W, W, k)       branch b's (k x 1) kernel, k odd
bias       (B, W)
dilations  B values; "same" padding (k - 1) * d / 2 for each
out        (N, B * W, T', V)  T' = (T - 1) // stride + 1
"""

from __future__ import annotations

import torch
from torch import Tensor


def multiscale_temporal_conv(x: Tensor, weight: Tensor, bias: Tensor, dilations: list[int], stride: int = 1) -> Tensor:
    """Branch b of x convolved over time with weight[b], dilation dilations[b], and stride."""
    return torch.ops.skelang.multiscale_temporal_conv.default(x, weight, bias, list(dilations), stride)
