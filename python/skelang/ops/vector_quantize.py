"""The vector quantizer's ops (VST): nearest-code search fused with the distances, per-code
statistics, and the in-place EMA codebook update. See csrc/vst/vector_quantize.h.

    nearest_code(x (N, D), codebook (K, D), metric) -> indices (N) int64, distances (N)
        metric "euclidean": |x - e|^2, "cosine": 1 - cos(x, e); never an N x K matrix
    code_statistics(x (N, D), indices (N), K) -> counts (K), sums (K, D)
    ema_codebook_update_(codebook, cluster_size, embed_sum, counts, sums, decay, epsilon)
        in place, with Laplace smoothing of the cluster sizes
"""

from __future__ import annotations

import torch
from torch import Tensor

METRICS = ("euclidean", "cosine")


def nearest_code(x: Tensor, codebook: Tensor, metric: str = "euclidean") -> tuple[Tensor, Tensor]:
    """The nearest code of each row of x and its distance (not differentiable)."""
    return torch.ops.skelang.nearest_code.default(x, codebook, metric)


def code_statistics(x: Tensor, indices: Tensor, num_codes: int) -> tuple[Tensor, Tensor]:
    """Per code: how many rows chose it (as x's dtype) and their sum."""
    return torch.ops.skelang.code_statistics.default(x, indices, num_codes)


def ema_codebook_update_(
    codebook: Tensor,
    cluster_size: Tensor,
    embed_sum: Tensor,
    counts: Tensor,
    sums: Tensor,
    decay: float,
    epsilon: float = 1e-5,
) -> None:
    """EMA of cluster sizes and sums, then codebook = sums / Laplace-smoothed sizes, in place."""
    torch.ops.skelang.ema_codebook_update_.default(codebook, cluster_size, embed_sum, counts, sums, decay, epsilon)


@torch.library.register_fake("skelang::nearest_code")
def _nearest_code_fake(x, codebook, metric):
    torch._check(
        x.dim() == 2 and codebook.dim() == 2 and codebook.shape[1] == x.shape[1],
        lambda: (
            f"skelang::nearest_code: x (N, D) and codebook (K, D) expected, "
            f"got {list(x.shape)} and {list(codebook.shape)}"
        ),
    )
    return x.new_empty(x.shape[0], dtype=torch.int64), x.new_empty(x.shape[0])


@torch.library.register_fake("skelang::code_statistics")
def _code_statistics_fake(x, indices, num_codes):
    return x.new_empty(num_codes), x.new_empty(num_codes, x.shape[1])


@torch.library.register_fake("skelang::ema_codebook_update_")
def _ema_codebook_update_fake(codebook, cluster_size, embed_sum, counts, sums, decay, epsilon):
    return None
