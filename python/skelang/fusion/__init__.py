"""SSF (HocSLM): skeleton-language sequential fusion, text descriptions and zero-shot classes.

load_descriptions      our descriptions of NTU-60/120, NW-UCLA and synthetic classes
TextEncoder            an offline Hugging Face text encoder (all-MiniLM-L6-v2 by default)
SkeletonLanguageModel  the encoder with SSF: fusion, alignment, text-prototype classes
"""

from skelang.fusion.descriptions import ActionDescriptions, extend_descriptions, load_descriptions
from skelang.fusion.ssf import SkeletonLanguageModel, SSFConfig, zero_shot_metrics

__all__ = [
    "ActionDescriptions",
    "SSFConfig",
    "SkeletonLanguageModel",
    "extend_descriptions",
    "load_descriptions",
    "zero_shot_metrics",
]
