"""The dual-path hierarchical temporal module DHT of HGLNet: global temporal attention GTA
(self-attention across frames) and local temporal convolution LTC (multi-scale dilated
temporal convolutions, as CTR-GCN's multi-scale TCN). Features are (N, C, T, V)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skelang.encoder.pointwise import PointwiseConv
from skelang.encoder.spatial import AxisSelfAttention, kaiming_fan_out, ops_for


class GlobalTemporalAttention(AxisSelfAttention):
    """GTA: multi-head self-attention across the T frames of each joint, with a learned bias
    per head and per (clipped) frame distance."""

    axis = 2

    def __init__(
        self, channels: int, heads: int = 4, max_distance: int = 32, backend: str = "cpp", recompute: bool = False
    ):
        super().__init__(channels, heads, 2 * max_distance + 1, backend, recompute, "GTA")
        self.max_distance = max_distance

    def attention_bias(self, x: torch.Tensor) -> torch.Tensor:
        frames = torch.arange(x.shape[2], device=x.device)
        distance = (frames[None, :] - frames[:, None]).clamp(-self.max_distance, self.max_distance)
        return self.distance_bias[:, distance + self.max_distance].to(x.dtype)  # (H, T, T)


class LocalTemporalConv(nn.Module):
    """LTC: parallel branches over time, concatenated: for each dilation a 1x1 reduction then
    a (kernel_size x 1) convolution with that dilation; optionally a max-pool branch (1x1
    reduction, 3 x 1 max-pool) and a pointwise branch. Strides over time by `stride`. With
    `residual`, a residual connection around it all (CTR-GCN's blocks have none here: the
    block's own residual serves).

    The reductions of all branches are one convolution and one norm, the dilated convolutions
    one op (skelang.ops.multiscale_temporal_conv), the branches' output norms one norm: the
    same function as CTR-GCN's per-branch modules, which backend "reference" runs branch by
    branch as CTR-GCN does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 5,
        dilations: tuple[int, ...] = (1, 2),
        pool_branch: bool = True,
        pointwise_branch: bool = True,
        residual: bool = False,
        backend: str = "cpp",
    ):
        super().__init__()
        branches = len(dilations) + int(pool_branch) + int(pointwise_branch)
        if out_channels % branches:
            raise ValueError(f"LTC: {out_channels} channels are not divisible by {branches} branches")
        if kernel_size % 2 == 0:
            raise ValueError(f"LTC: the kernel size must be odd, got {kernel_size}")
        self.width = width = out_channels // branches
        self.dilations, self.stride, self.kernel_size = tuple(dilations), stride, kernel_size
        self.pool_branch = pool_branch
        self.backend = backend
        self.ops = ops_for(backend)
        reduced = (len(dilations) + int(pool_branch)) * width
        self.reduce = PointwiseConv(in_channels, reduced, backend=backend)
        self.reduce_norm = nn.BatchNorm2d(reduced)
        self.temporal_weight = nn.Parameter(torch.empty(len(dilations), width, width, kernel_size))
        self.temporal_bias = nn.Parameter(torch.zeros(len(dilations), width))
        self.pointwise = PointwiseConv(in_channels, width, stride, backend=backend) if pointwise_branch else None
        self.norm = nn.BatchNorm2d(out_channels)
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                PointwiseConv(in_channels, out_channels, stride, backend=backend), nn.BatchNorm2d(out_channels)
            )
        self.init_like_ctrgcn()

    def init_like_ctrgcn(self) -> None:
        kaiming_fan_out(self.reduce.weight, self.width)
        nn.init.zeros_(self.reduce.bias)
        kaiming_fan_out(self.temporal_weight, self.width * self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backend == "reference":
            y = self._branch_by_branch(x)
        else:
            reduced = F.relu(self.reduce_norm(self.reduce(x)))
            dilated = len(self.dilations) * self.width
            parts = [
                self.ops.multiscale_temporal_conv(
                    reduced[:, :dilated], self.temporal_weight, self.temporal_bias, self.dilations, self.stride
                )
            ]
            if self.pool_branch:
                parts.append(F.max_pool2d(reduced[:, dilated:], (3, 1), (self.stride, 1), (1, 0)))
            if self.pointwise is not None:
                parts.append(self.pointwise(x))
            y = self.norm(torch.cat(parts, dim=1))
        return y if self.residual is None else y + self.residual(x)

    def _branch_by_branch(self, x: torch.Tensor) -> torch.Tensor:
        """The same function written as CTR-GCN's MultiScale_TemporalConv: one Sequential of
        conv, norm, ReLU, temporal conv, norm per branch, concatenated."""
        W, parts = self.width, []
        for b in range(len(self.dilations) + int(self.pool_branch)):
            channels = slice(b * W, (b + 1) * W)
            h = F.relu(
                _norm_slice(
                    self.reduce_norm, F.conv2d(x, self.reduce.weight[channels], self.reduce.bias[channels]), channels
                )
            )
            if b < len(self.dilations):
                d = self.dilations[b]
                h = F.conv2d(
                    h,
                    self.temporal_weight[b, ..., None],
                    self.temporal_bias[b],
                    (self.stride, 1),
                    ((self.kernel_size - 1) * d // 2, 0),
                    (d, 1),
                )
            else:
                h = F.max_pool2d(h, (3, 1), (self.stride, 1), (1, 0))
            parts.append(_norm_slice(self.norm, h, channels))
        if self.pointwise is not None:
            b = len(parts)
            parts.append(_norm_slice(self.norm, self.pointwise(x), slice(b * W, (b + 1) * W)))
        if self.training:
            for norm in (self.reduce_norm, self.norm):
                norm.num_batches_tracked.add_(1)  # as the whole norms count their batches
        return torch.cat(parts, dim=1)


def _norm_slice(norm: nn.BatchNorm2d, x: torch.Tensor, channels: slice) -> torch.Tensor:
    """`norm` applied to the channels `channels` of its input only (a branch's own norm)."""
    training = norm.training or norm.running_mean is None
    return F.batch_norm(
        x,
        None if norm.running_mean is None else norm.running_mean[channels],
        None if norm.running_var is None else norm.running_var[channels],
        norm.weight[channels],
        norm.bias[channels],
        training,
        norm.momentum,
        norm.eps,
    )
