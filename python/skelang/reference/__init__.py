"""Pure-PyTorch references of every skelang operator: differentiable, written for clarity,
used by the tests (parity, gradients) and the benchmarks, and selectable as
``backend="reference"`` by the modules."""

from skelang.reference.encoder import axis_attention, composite_aggregate, multiscale_temporal_conv
from skelang.reference.fusion import contrastive_alignment_loss, cross_modal_attention
from skelang.reference.graph_aggregate import graph_aggregate, graph_aggregate_grad_topology
from skelang.reference.lora import dropout_mask, lora_linear
from skelang.reference.vst import code_statistics, ema_codebook_update_, nearest_code

__all__ = [
    "axis_attention",
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
