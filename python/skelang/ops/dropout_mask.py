"""dropout_mask(x, p, seed): the bool mask (keep = True) of x's shape, from a counter-based hash
(splitmix64) of (seed, element index): the same on every device and thread count. The drop
probability is rounded to a multiple of 1/65536. See csrc/lora/dropout_mask.h.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skelang.ops.checks import check

_OP = "skelang::dropout_mask"


def dropout_mask(x: Tensor, p: float, seed: int) -> Tensor:
    """Bool mask of x's shape and device, kept with probability 1 - round(p * 65536) / 65536."""
    return torch.ops.skelang.dropout_mask.default(x, p, seed)


@torch.library.register_fake(_OP)
def _dropout_mask_fake(x, p, seed):
    check(0.0 <= p < 1.0, _OP, lambda: f"the drop probability p must be in [0, 1), got {p:g}")
    check(seed >= 0, _OP, lambda: f"seed must be non-negative, got {seed}")
    return x.new_empty(x.shape, dtype=torch.bool)
