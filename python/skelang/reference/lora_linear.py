"""Pure-PyTorch reference of skelang.ops.lora_linear, written as PEFT's LoRA Linear computes it:
the base layer, then lora_B(lora_A(dropout(x))) * scaling added."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def lora_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    lora_A: Tensor,
    lora_B: Tensor,
    scaling: float,
    mask: Tensor | None = None,
) -> Tensor:
    dropped = x if mask is None else x * mask
    return F.linear(x, weight, bias) + F.linear(F.linear(dropped, lora_A), lora_B) * scaling
