"""Typed wrappers of the ``torch.ops.skelang`` operators, with their fake (meta) kernels
and autograd formulas registered, so they work under autograd and ``torch.compile``.

Each op has a pure-PyTorch twin of the same name in :mod:`skelang.reference`.
"""

from skelang.ops import autocast  # noqa: F401  (registers the ops' autocast rules)
from skelang.ops.axis_attention import axis_attention, axis_attention_with_probs
from skelang.ops.composite_aggregate import composite_aggregate
from skelang.ops.contrastive_alignment import contrastive_alignment_loss
from skelang.ops.cross_modal_attention import cross_modal_attention
from skelang.ops.dropout_mask import dropout_mask
from skelang.ops.graph_aggregate import graph_aggregate, graph_aggregate_grad_topology
from skelang.ops.lora_linear import lora_linear
from skelang.ops.multiscale_temporal_conv import multiscale_temporal_conv
from skelang.ops.vector_quantize import code_statistics, ema_codebook_update_, nearest_code

__all__ = [
    "axis_attention",
    "axis_attention_with_probs",
    "code_statistics",
    "composite_aggregate",
    "contrastive_alignment_loss",
    "cross_modal_attention",
    "dropout_mask",
    "ema_codebook_update_",
    "graph_aggregate",
    "graph_aggregate_grad_topology",
    "lora_linear",
    "multiscale_temporal_conv",
    "nearest_code",
]
