"""Pure-PyTorch references of every skelang operator, one module per op of skelang.ops:
differentiable, written for clarity, used by the tests (parity, gradients) and the benchmarks,
and selectable as ``backend="reference"`` by the modules. preprocess and ntu_skeleton hold the
numpy twins of the data component's C++ helpers."""

from skelang.reference.axis_attention import axis_attention, axis_attention_with_probs
from skelang.reference.composite_aggregate import composite_aggregate
from skelang.reference.contrastive_alignment import contrastive_alignment_loss
from skelang.reference.cross_modal_attention import cross_modal_attention
from skelang.reference.dropout_mask import dropout_mask
from skelang.reference.graph_aggregate import graph_aggregate, graph_aggregate_grad_topology
from skelang.reference.lora_linear import lora_linear
from skelang.reference.multiscale_temporal_conv import multiscale_temporal_conv
from skelang.reference.vector_quantize import code_statistics, ema_codebook_update_, nearest_code

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
