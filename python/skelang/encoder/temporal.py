"""The dual-path hierarchical temporal module DHT of HGLNet: global temporal attention GTA
(self-attention across frames) and local temporal convolution LTC (multi-scale dilated
temporal convolutions, as CTR-GCN's multi-scale TCN). Features are (N, C, T, V)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalTemporalAttention(nn.Module):
    """GTA: multi-head self-attention across the T frames of each joint, with a learned bias
    per head and per (clipped) frame distance."""

    def __init__(self, channels: int, heads: int = 4, max_distance: int = 32):
        super().__init__()
        if channels % heads:
            raise ValueError(f"GTA: {channels} channels are not divisible by {heads} heads")
        self.heads = heads
        self.max_distance = max_distance
        self.distance_bias = nn.Parameter(torch.zeros(heads, 2 * max_distance + 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)  # starts as the identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, T, V = x.shape
        H = self.heads
        q, k, v = self.qkv(x).view(N, 3, H, C // H, T, V).permute(1, 0, 5, 2, 4, 3).reshape(3, N * V, H, T, C // H)
        frames = torch.arange(T, device=x.device)
        distance = (frames[None, :] - frames[:, None]).clamp(-self.max_distance, self.max_distance)
        bias = self.distance_bias[:, distance + self.max_distance]  # (H, T, T)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (N*V, H, T, C/H)
        attended = attended.view(N, V, H, T, C // H).permute(0, 2, 4, 3, 1).reshape(N, C, T, V)
        return x + self.norm(self.out(attended))


class LocalTemporalConv(nn.Module):
    """LTC: parallel branches over time, concatenated: for each dilation a 1x1 reduction then
    a (kernel_size x 1) convolution with that dilation; optionally a max-pool branch and a
    pointwise branch. Strides over time by `stride`. Residual connection around it all."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 5,
                 dilations: tuple[int, ...] = (1, 2), pool_branch: bool = True, pointwise_branch: bool = True):
        super().__init__()
        branches = len(dilations) + int(pool_branch) + int(pointwise_branch)
        if out_channels % branches:
            raise ValueError(f"LTC: {out_channels} channels are not divisible by {branches} branches")
        width = out_channels // branches

        def reduce():
            return [nn.Conv2d(in_channels, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]

        self.branches = nn.ModuleList()
        for dilation in dilations:
            padding = (kernel_size - 1) * dilation // 2
            self.branches.append(nn.Sequential(
                *reduce(), nn.Conv2d(width, width, (kernel_size, 1), (stride, 1), (padding, 0), (dilation, 1)),
                nn.BatchNorm2d(width)))
        if pool_branch:
            self.branches.append(nn.Sequential(*reduce(), nn.MaxPool2d((3, 1), (stride, 1), (1, 0)), nn.BatchNorm2d(width)))
        if pointwise_branch:
            self.branches.append(nn.Sequential(nn.Conv2d(in_channels, width, 1, (stride, 1)), nn.BatchNorm2d(width)))
        if in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, (stride, 1)), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1) + self.residual(x)
