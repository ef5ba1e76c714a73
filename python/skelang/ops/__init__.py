"""Typed wrappers of the ``torch.ops.skelang`` operators, with their fake (meta) kernels
and autograd formulas registered, so they work under autograd and ``torch.compile``.

Each op has a pure-PyTorch twin of the same name in :mod:`skelang.reference`.
"""

from skelang.ops.graph_aggregate import graph_aggregate, graph_aggregate_grad_topology

__all__ = ["graph_aggregate", "graph_aggregate_grad_topology"]
