"""The language-model stage (LVLM-VAR): LoRA layers on the fused op and their injection into
Hugging Face models (PEFT's file format), semantic action tokens, a motion projector and the
encoder's class-evidence token, prompts, class scoring, explanations and their faithfulness.
Training: skelang.runs.stages.lm."""

from skelang.lm.action_tokens import (
    ActionTokenEmbedding,
    ActionTokenHead,
    ClassEvidenceToken,
    MotionProjector,
    add_action_tokens,
)
from skelang.lm.adapters import LoRAConfig, LoRAModel, inject_lora, load_adapter, lora_layers
from skelang.lm.language_model import load_language_model
from skelang.lm.lora import LoRALayer, lora_layer_class
from skelang.lm.model import ActionLanguageModel, NarratedSample

__all__ = [
    "ActionLanguageModel",
    "ActionTokenEmbedding",
    "ActionTokenHead",
    "ClassEvidenceToken",
    "LoRAConfig",
    "LoRALayer",
    "LoRAModel",
    "MotionProjector",
    "NarratedSample",
    "add_action_tokens",
    "inject_lora",
    "load_adapter",
    "load_language_model",
    "lora_layer_class",
    "lora_layers",
]
