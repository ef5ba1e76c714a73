"""VST: Video-to-Semantic-Tokens (LVLM-VAR): motion to discrete semantic action tokens.

VectorQuantizer   fused nearest-code search, EMA codebook, k-means++, dead-code revival
TokenizedEncoder  an encoder with VST on its features (segments, tokens, motion decoder)
narrative         token smoothing (Viterbi), run-length narratives "<a17>x3 <a5>"
glossary          each code's decoded motion described in words
"""

from skelang.vst.model import TokenizedEncoder, VSTConfig
from skelang.vst.narrative import TokenRun, format_narrative, parse_narrative, run_length, smooth_tokens
from skelang.vst.quantizer import VectorQuantizer

__all__ = [
    "TokenRun",
    "TokenizedEncoder",
    "VSTConfig",
    "VectorQuantizer",
    "format_narrative",
    "parse_narrative",
    "run_length",
    "smooth_tokens",
]
