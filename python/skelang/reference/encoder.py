"""Pure-PyTorch references of the encoder's fused ops (see skelang.ops for shapes), written
as the CTR-GCN code base writes its blocks: einsum over the materialised per-sample,
per-channel topology, explicit attention, one convolution per branch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def composite_aggregate(
    x: Tensor, phi: Tensor, psi: Tensor, weight: Tensor, bias: Tensor, alpha: Tensor, topology: Tensor
) -> Tensor:
    """CTR-GC summed over partitions: A = topology + alpha * conv(tanh(phi_u - psi_v))."""
    relation = torch.tanh(phi.unsqueeze(-1) - psi.unsqueeze(-2))  # (N, K, R, V, V)
    A = torch.einsum("kcr,nkruv->nkcuv", weight, relation) + bias[None, :, :, None, None]
    A = A * alpha + topology[None, :, None]  # (N, K, C, V, V)
    return torch.einsum("nkcuv,nkctv->nctu", A, x)


def axis_attention(qkv: Tensor, bias: Tensor, heads: int, axis: int) -> Tensor:
    """softmax(q k^T / sqrt(D) + bias) v across joints (axis 3) or frames (axis 2)."""
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
        return out.view(N, T, heads, V, D).permute(0, 2, 4, 1, 3).reshape(N, C, T, V)
    return out.view(N, V, heads, T, D).permute(0, 2, 4, 3, 1).reshape(N, C, T, V)


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
