"""Pure-PyTorch references of the vector quantizer's ops (see skelang.ops.vector_quantize),
written as VQ code bases write them: the whole N x K distance matrix (cdist), argmin,
bincount and index_add."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nearest_code(x: Tensor, codebook: Tensor, metric: str = "euclidean") -> tuple[Tensor, Tensor]:
    if metric == "euclidean":
        distances = torch.cdist(x, codebook).square()  # (N, K)
    elif metric == "cosine":
        distances = 1 - F.normalize(x, dim=1) @ F.normalize(codebook, dim=1).T
    else:
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    best = distances.min(dim=1)
    return best.indices, best.values


def code_statistics(x: Tensor, indices: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
    counts = torch.bincount(indices, minlength=num_codes).to(x.dtype)
    sums = torch.zeros(num_codes, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, indices, x)
    return counts, sums


def ema_codebook_update_(
    codebook: Tensor,
    cluster_size: Tensor,
    embed_sum: Tensor,
    counts: Tensor,
    sums: Tensor,
    decay: float,
    epsilon: float = 1e-5,
) -> None:
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + codebook.shape[0] * epsilon) * total
    codebook.copy_(embed_sum / smoothed[:, None])
