"""Pure-PyTorch reference of skelang.ops.graph_aggregate (see there for shapes)."""

from __future__ import annotations

import torch
from torch import Tensor


def graph_aggregate(x: Tensor, A: Tensor) -> Tensor:
    """y[n, c, t, u] = sum_v A[n, c, u, v] x[n, c, t, v]; A (Na, Ca, V, V) broadcasts.

    Written as the CTR-GCN code base writes it: a matmul with the transposed topology,
    which broadcasts over (n, c).
    """
    return torch.matmul(x, A.transpose(-1, -2))


def graph_aggregate_grad_topology(grad_y: Tensor, x: Tensor, topology_batch: int, topology_channels: int) -> Tensor:
    """grad_A (Na, Ca, V, V): sum over t and the broadcast (n, c) of grad_y[...,u] x[...,v]."""
    grad_A = torch.einsum("nctu,nctv->ncuv", grad_y, x)  # (N, C, V, V)
    if topology_batch == 1:
        grad_A = grad_A.sum(0, keepdim=True)
    if topology_channels == 1:
        grad_A = grad_A.sum(1, keepdim=True)
    return grad_A
