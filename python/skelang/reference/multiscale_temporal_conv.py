"""Pure-PyTorch reference of skelang.ops.multiscale_temporal_conv: one (k x 1) convolution per
branch, as the CTR-GCN code base writes its multi-scale temporal block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def multiscale_temporal_conv(x: Tensor, weight: Tensor, bias: Tensor, dilations: list[int], stride: int = 1) -> Tensor:
    """One (k x 1) convolution per branch, concatenated."""
    B, W, _, k = weight.shape
    return torch.cat(
        [
            F.conv2d(
                x[:, b * W : (b + 1) * W], weight[b, ..., None], bias[b], (stride, 1), ((k - 1) * d // 2, 0), (d, 1)
            )
            for b, d in enumerate(dilations)
        ],
        dim=1,
    )
