"""graph_aggregate: joint features aggregated over a skeleton topology.

x  (N, C, T, V)    features of V joints over T frames
A  (Na, Ca, V, V)  topology, Na in {1, N}, Ca in {1, C}, broadcast without copies:
                   (1, 1) one shared skeleton graph (ST-GCN), (1, C) one per channel
                   (CTR-GCN), (N, 1) one attention map per sample (GSM), (N, C) both
y  (N, C, T, V)    y[n, c, t, u] = sum_v A[n, c, u, v] * x[n, c, t, v]
"""

from __future__ import annotations

import torch
from torch import Tensor

from skelang.ops.checks import (
    check,
    check_broadcastable,
    check_floating,
    check_rank,
    check_same_device,
    check_same_dtype,
    sizes,
)

_OP = "skelang::graph_aggregate"
_GRAD_OP = "skelang::graph_aggregate_grad_topology"


def graph_aggregate(x: Tensor, A: Tensor) -> Tensor:
    """y[n, c, t, u] = sum_v A[n, c, u, v] x[n, c, t, v], with A broadcast over n and c."""
    return torch.ops.skelang.graph_aggregate.default(x, A)


def graph_aggregate_grad_topology(grad_y: Tensor, x: Tensor, topology_batch: int, topology_channels: int) -> Tensor:
    """Gradient of graph_aggregate with respect to A, of shape (Na, Ca, V, V)."""
    return torch.ops.skelang.graph_aggregate_grad_topology.default(grad_y, x, topology_batch, topology_channels)


def _check_inputs(x: Tensor, A: Tensor) -> None:
    # Mirrors check_graph_aggregate_inputs in csrc/encoder/encoder_ops.cpp, for fake tensors.
    check_rank(_OP, "x", x, 4, "(N, C, T, V)")
    check_rank(_OP, "A", A, 4, "(Na, Ca, V, V)")
    check_floating(_OP, "x", x)
    check_same_dtype(_OP, "x", x, "A", A)
    check_same_device(_OP, "x", x, "A", A)
    V = x.shape[3]
    check(
        A.shape[2] == V and A.shape[3] == V,
        _OP,
        lambda: f"A must be (Na, Ca, V, V) with V = {V} joints as in x {sizes(x)}, got A of shape {sizes(A)}",
    )
    check_broadcastable(_OP, "A.size(0) (topologies per sample)", A.shape[0], x.shape[0])
    check_broadcastable(_OP, "A.size(1) (topologies per channel)", A.shape[1], x.shape[1])


@torch.library.register_fake(_OP)
def _graph_aggregate_fake(x: Tensor, A: Tensor) -> Tensor:
    _check_inputs(x, A)
    return x.new_empty(x.shape)


@torch.library.register_fake(_GRAD_OP)
def _graph_aggregate_grad_topology_fake(grad_y, x, topology_batch, topology_channels):
    # Mirrors check_graph_aggregate_grad_topology_inputs in csrc/encoder/encoder_ops.cpp.
    check_rank(_GRAD_OP, "grad_y", grad_y, 4, "(N, C, T, V)")
    check_rank(_GRAD_OP, "x", x, 4, "(N, C, T, V)")
    check_floating(_GRAD_OP, "x", x)
    check_same_dtype(_GRAD_OP, "grad_y", grad_y, "x", x)
    check_same_device(_GRAD_OP, "grad_y", grad_y, "x", x)
    check(
        grad_y.shape == x.shape,
        _GRAD_OP,
        lambda: f"grad_y and x must have the same shape, got {sizes(grad_y)} and {sizes(x)}",
    )
    check_broadcastable(_GRAD_OP, "topology_batch", topology_batch, x.shape[0])
    check_broadcastable(_GRAD_OP, "topology_channels", topology_channels, x.shape[1])
    return x.new_empty((topology_batch, topology_channels, x.shape[3], x.shape[3]))


def _setup_context(ctx, inputs, output):
    x, A = inputs
    ctx.save_for_backward(x, A)


def _backward(ctx, grad_y):
    x, A = ctx.saved_tensors
    grad_x = grad_A = None
    if ctx.needs_input_grad[0]:
        # grad_x[n,c,t,v] = sum_u A[n,c,u,v] grad_y[n,c,t,u]: the same aggregation with A^T.
        grad_x = graph_aggregate(grad_y, A.transpose(2, 3))
    if ctx.needs_input_grad[1]:
        grad_A = graph_aggregate_grad_topology(grad_y, x, A.shape[0], A.shape[1])
    return grad_x, grad_A


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
