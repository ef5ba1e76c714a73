"""The 1 x 1 convolutions of the encoder (projections W x across channels at every frame and
joint, optionally strided over time), computed as one batched matrix product on the CPU.

On (N, C, T, V) features a 1 x 1 convolution is, for each sample n, y_n = W x_n + b with x_n
the (C, T V) matrix of that sample: ``torch.baddbmm`` of the (C_out, C_in) weight, broadcast
over the batch, and the (N, C_in, T V) input. On a 2-core AVX2 EPYC (torch 2.13, 2 threads,
float32) this ran HGLNet's and CTR-GCN's 1 x 1 convolutions, forward + backward at NW-UCLA
shapes, at 0.83-2.5x the speed of ``F.conv2d`` (oneDNN): faster on all but the smallest (256
-> 192 channels at one frame); see the README's encoder section. The weights, their names
and their initialisation are nn.Conv2d's, so checkpoints load either way.
"""

from __future__ import annotations

import torch
from torch import nn


class PointwiseConv(nn.Conv2d):
    """nn.Conv2d(in_channels, out_channels, 1, (stride, 1)) on (N, C_in, T, V) features, giving
    (N, C_out, ceil(T / stride), V). With backend "cpp", float32 or float64 inputs on the CPU
    outside autocast are multiplied with ``torch.baddbmm`` (the frames strided first); under
    autocast (where the broadcast weight would be cast per sample), on other devices and with
    backend "reference" (as CTR-GCN's code runs it), ``F.conv2d``. The same function either
    way, up to the rounding of a different summation order."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, backend: str):
        super().__init__(in_channels, out_channels, 1, (stride, 1))
        self.as_matmul = backend == "cpp"

    def extra_repr(self) -> str:
        return super().extra_repr() + f", as_matmul={self.as_matmul}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            not self.as_matmul
            or x.device.type != "cpu"
            or x.dim() != 4
            or x.shape[1] != self.in_channels  # F.conv2d's own message
            or x.dtype != self.weight.dtype
            or torch.is_autocast_enabled("cpu")
        ):
            return super().forward(x)
        stride = self.stride[0]
        if stride > 1:
            x = x[:, :, ::stride]
        N, C, T, V = x.shape
        weight = self.weight.view(1, self.out_channels, C).expand(N, -1, -1)
        y = torch.baddbmm(self.bias.view(1, -1, 1), weight, x.reshape(N, C, T * V))
        return y.view(N, self.out_channels, T, V)
