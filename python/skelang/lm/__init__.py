"""The LVLM adapter (LVLM-VAR): fused LoRA layers for language models. Work in progress:
the layer is here; injection into Hugging Face models, PEFT files, action tokens and
explanations are not yet."""

from skelang.lm.lora import LoRALinear

__all__ = ["LoRALinear"]
