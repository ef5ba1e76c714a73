"""Typed wrappers of the ``torch.ops.skelang`` operators, with their fake (meta) kernels
and autograd formulas registered, so they work under autograd and ``torch.compile``.

Each op has a pure-PyTorch twin of the same name in :mod:`skelang.reference`.
"""

from skelang.ops.axis_attention import axis_attention
from skelang.ops.composite_aggregate import composite_aggregate
from skelang.ops.graph_aggregate import graph_aggregate, graph_aggregate_grad_topology
from skelang.ops.multiscale_temporal_conv import multiscale_temporal_conv

__all__ = ["axis_attention", "composite_aggregate", "graph_aggregate", "graph_aggregate_grad_topology",
           "multiscale_temporal_conv"]
