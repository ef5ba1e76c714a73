"""Pure-PyTorch references of every skelang operator: differentiable, written for clarity,
used by the tests (parity, gradients) and the benchmarks, and selectable as
``backend="reference"`` by the modules."""

from skelang.reference.encoder import axis_attention, composite_aggregate, multiscale_temporal_conv
from skelang.reference.graph_aggregate import graph_aggregate, graph_aggregate_grad_topology

__all__ = ["axis_attention", "composite_aggregate", "graph_aggregate", "graph_aggregate_grad_topology",
           "multiscale_temporal_conv"]
