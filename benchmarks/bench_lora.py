"""A LoRA layer's training step (forward + backward, dropout on the LoRA branch, frozen base
weight): skelang's fused LoRALayer against the same layer in pure PyTorch (PEFT's way:
base(x) + lora_B(lora_A(dropout(x))) * scaling), PEFT's own LoRA layer where installed,
and the frozen base linear alone (forward + grad_x): how much LoRA adds on top."""

from __future__ import annotations

import importlib.util

import torch
from harness import Case
from torch import nn

from skelang.lm.lora import LoRALayer
from skelang.ops.registry import OPS


def _step(layer, x, grad_y):
    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).backward(grad_y)

    return step


def _peft_layer(base: nn.Linear, r: int, alpha: float, dropout: float) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    model = inject_adapter_in_model(
        LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=["layer"]),
        nn.ModuleDict({"layer": base}),
    )
    return model["layer"]


def _lora_layer(base: nn.Linear, r: int, alpha: float, dropout: float, backend: str) -> LoRALayer:
    layer = LoRALayer(base, backend=backend)
    layer.add_adapter("default", r, alpha, dropout)
    return layer


def cases(config: dict, device: torch.device) -> list[Case]:
    out = []
    has_peft = importlib.util.find_spec("peft") is not None
    config = OPS["lora_linear"].bench["quick" if config["quick"] else "full"]
    for shape in config["shapes"]:
        tokens, features_in, features_out = shape["tokens"], shape["in"], shape["out"]
        for r in config["ranks"]:
            torch.manual_seed(0)
            base = nn.Linear(features_in, features_out, device=device)
            x = torch.randn(tokens, features_in, device=device, requires_grad=True)
            grad_y = torch.randn(tokens, features_out, device=device)
            layers = {
                backend: _lora_layer(base, r, 2 * r, config["dropout"], backend).train()
                for backend in ("cpp", "reference")
            }
            frozen = nn.Linear(features_in, features_out, device=device).requires_grad_(False)
            params = f"{shape['name']} tokens={tokens} {features_in}->{features_out} r={r}"
            peft = (
                _peft_layer(nn.Linear(features_in, features_out, device=device), r, 2 * r, config["dropout"]).train()
                if has_peft
                else None
            )
            flops = 2 * tokens * features_in * features_out * 2 + 2 * tokens * r * (features_in + features_out) * 3
            out.append(
                Case(
                    name="LoRA layer step",
                    params=params,
                    flops=flops,
                    skelang=_step(layers["cpp"], x, grad_y),
                    reference=_step(layers["reference"], x, grad_y),
                    peer=_step(peft, x, grad_y) if peft is not None else None,
                    peer_name="peft" if peft is not None else "",
                )
            )
            if r == config["ranks"][1 if len(config["ranks"]) > 1 else 0]:
                out.append(
                    Case(
                        name="LoRA vs frozen base",
                        params=params,
                        flops=flops,
                        skelang=_step(layers["cpp"], x, grad_y),
                        reference=_step(frozen, x, grad_y),
                    )
                )
    return out
