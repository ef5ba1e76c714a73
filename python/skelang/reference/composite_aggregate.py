"""Pure-PyTorch reference of skelang.ops.composite_aggregate, written as the CTR-GCN code base
writes its CTR-GC block: einsum over the materialised per-sample, per-channel topology."""

from __future__ import annotations

import torch
from torch import Tensor


def composite_aggregate(
    x: Tensor, phi: Tensor, psi: Tensor, weight: Tensor, bias: Tensor, alpha: Tensor, topology: Tensor
) -> Tensor:
    """CTR-GC summed over partitions: A = topology + alpha * conv(tanh(phi_u - psi_v))."""
    relation = torch.tanh(phi.unsqueeze(-1) - psi.unsqueeze(-2))  # (N, K, R, V, V)
    A = torch.einsum("kcr,nkruv->nkcuv", weight, relation) + bias[None, :, :, None, None]
    A = A * alpha + topology[None, :, None]  # (N, K, C, V, V)
    return torch.einsum("nkcuv,nkctv->nctu", A, x)
