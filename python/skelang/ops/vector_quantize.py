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

from skelang.ops.checks import (
    check,
    check_floating,
    check_rank,
    check_same_device,
    check_same_dtype,
    check_same_dtype_and_device,
    scalar_type,
    sizes,
)

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


# The fake kernels check what csrc/vst/vst_ops.cpp checks, with its messages.
@torch.library.register_fake("skelang::nearest_code")
def _nearest_code_fake(x, codebook, metric):
    op = "skelang::nearest_code"
    check_rank(op, "x", x, 2, "(N, D)")
    check_rank(op, "codebook", codebook, 2, "(K, D)")
    check_floating(op, "x", x)
    check_same_dtype(op, "x", x, "codebook", codebook)
    check_same_device(op, "x", x, "codebook", codebook)
    check(
        codebook.shape[1] == x.shape[1],
        op,
        lambda: (
            f"codebook must be (K, D) with D = {x.shape[1]} as in x {sizes(x)}, got codebook of shape {sizes(codebook)}"
        ),
    )
    check(codebook.shape[0] > 0, op, "the codebook has no code")
    check(metric in ("euclidean", "cosine"), op, lambda: f"metric must be 'euclidean' or 'cosine', got '{metric}'")
    return x.new_empty(x.shape[0], dtype=torch.int64), x.new_empty(x.shape[0])


@torch.library.register_fake("skelang::code_statistics")
def _code_statistics_fake(x, indices, num_codes):
    op = "skelang::code_statistics"
    check_rank(op, "x", x, 2, "(N, D)")
    check_rank(op, "indices", indices, 1, "(N)")
    check_floating(op, "x", x)
    check_same_device(op, "x", x, "indices", indices)
    check(indices.dtype == torch.int64, op, lambda: f"indices must be int64, got {scalar_type(indices.dtype)}")
    check(
        indices.shape[0] == x.shape[0],
        op,
        lambda: f"indices must have one code per row of x ({x.shape[0]}), got {indices.shape[0]}",
    )
    check(num_codes > 0, op, lambda: f"num_codes must be positive, got {num_codes}")
    return x.new_empty(num_codes), x.new_empty(num_codes, x.shape[1])


@torch.library.register_fake("skelang::ema_codebook_update_")
def _ema_codebook_update_fake(codebook, cluster_size, embed_sum, counts, sums, decay, epsilon):
    op = "skelang::ema_codebook_update_"
    check_rank(op, "codebook", codebook, 2, "(K, D)")
    check_floating(op, "codebook", codebook)
    K, D = codebook.shape
    check_same_dtype_and_device(
        op, "codebook", codebook, {"cluster_size": cluster_size, "embed_sum": embed_sum, "counts": counts, "sums": sums}
    )
    check(
        cluster_size.dim() == 1 and cluster_size.shape[0] == K,
        op,
        lambda: f"cluster_size must be (K) = ({K}), got {sizes(cluster_size)}",
    )
    check(counts.shape == cluster_size.shape, op, lambda: f"counts must be (K) = ({K}), got {sizes(counts)}")
    check(
        embed_sum.shape == codebook.shape, op, lambda: f"embed_sum must be (K, D) = ({K}, {D}), got {sizes(embed_sum)}"
    )
    check(sums.shape == codebook.shape, op, lambda: f"sums must be (K, D) = ({K}, {D}), got {sizes(sums)}")
    check(0 <= decay < 1, op, lambda: f"decay must be in [0, 1), got {decay:g}")
    check(epsilon > 0, op, lambda: f"epsilon must be positive, got {epsilon:g}")
    return None
