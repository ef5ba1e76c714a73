"""Pure-PyTorch reference of skelang.ops.dropout_mask: splitmix64 in int64 arithmetic (which
wraps as uint64 does), four 16-bit lanes per hash word."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(z: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def dropout_mask(x: Tensor, p: float, seed: int) -> Tensor:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"the drop probability p must be in [0, 1), got {p}")
    threshold = math.floor(p * 65536 + 0.5)
    words = torch.arange((x.numel() + 3) // 4, dtype=torch.int64)
    z = seed + (words + 1) * _signed(0x9E3779B97F4A7C15)
    z = (z ^ _shift_right(z, 30)) * _signed(0xBF58476D1CE4E5B9)
    z = (z ^ _shift_right(z, 27)) * _signed(0x94D049BB133111EB)
    z = z ^ _shift_right(z, 31)
    lanes = torch.stack([z & 0xFFFF] + [_shift_right(z, 16 * lane) & 0xFFFF for lane in (1, 2, 3)], 1)
    return (lanes.flatten()[: x.numel()] >= threshold).view(x.shape).to(x.device)
