"""Pure-PyTorch references of every skelang operator: differentiable, written for clarity,
used by the tests (parity, gradients) and the benchmarks, and selectable as
``backend="reference"`` by the modules."""

from skelang.reference.graph_aggregate import graph_aggregate, graph_aggregate_grad_topology

__all__ = ["graph_aggregate", "graph_aggregate_grad_topology"]
