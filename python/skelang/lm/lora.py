"""LoRALinear: a frozen nn.Linear with a LoRA branch on skelang.ops.lora_linear.

Initialised as PEFT does (lora_A Kaiming-uniform with a = sqrt(5), lora_B zeros, so the
layer starts as the base layer); scaling alpha / r, or alpha / sqrt(r) with rsLoRA. In
training, dropout on the LoRA branch's input is a mask drawn here and passed to the op.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import skelang.ops
import skelang.reference


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 rslora: bool = False, backend: str = "cpp"):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank must be positive, got {r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.base = base.requires_grad_(False)
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        factory = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.ops = skelang.ops if backend == "cpp" else skelang.reference

    def forward(self, x: Tensor) -> Tensor:
        mask = None
        if self.training and self.dropout > 0:
            mask = torch.empty_like(x).bernoulli_(1 - self.dropout).div_(1 - self.dropout)
        return self.ops.lora_linear(x, self.base.weight, self.base.bias, self.lora_A, self.lora_B, self.scaling, mask)
