"""The vector quantizer's ops: nearest_code (fused distances + argmin), code_statistics and
the in-place EMA update: parity with the references (cdist + argmin, bincount + index_add),
opcheck, tile edges, determinism, and input errors."""

from __future__ import annotations

import pytest
import torch

import skelang.ops as ops
import skelang.reference as reference
from skelang.ops.registry import OPS, Sample


def test_nearest_code_ties_go_to_the_lowest_code():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    indices, distances = ops.nearest_code(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), codebook)
    assert indices.tolist() == [0, 0] and distances[0] == 0
    cos_indices, cos_distances = ops.nearest_code(torch.tensor([[3.0, 0.0], [0.0, 0.0]]), codebook, "cosine")
    assert cos_indices.tolist() == [0, 0]
    assert cos_distances.tolist() == [0.0, 1.0]  # a zero vector is at distance 1 from every code


def check_nearest_code_every_tail() -> None:
    """nearest_code against the reference for 1..40 codes (every tail of a vector of scores at
    each width: 2-16 lanes) and two tiles of codes, both metrics and dtypes: the same distance,
    and a chosen code as near as the reference's (the op registry's comparison)."""
    spec = OPS["nearest_code"]
    for dtype in (torch.float32, torch.float64):
        tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
        for metric in ("euclidean", "cosine"):
            for K in [*range(1, 41), 1025, 2049]:
                g = torch.Generator().manual_seed(K)
                x, codebook = torch.randn(20, 6, dtype=dtype, generator=g), torch.randn(K, 6, dtype=dtype, generator=g)
                sample = Sample((x, codebook, metric), name=f"K={K} {dtype} {metric}")
                spec.compare(ops.nearest_code(*sample.args), reference.nearest_code(*sample.args), sample, tolerance)


def test_nearest_code_every_tail():
    check_nearest_code_every_tail()


@pytest.mark.parametrize("level", [0, 3])
def test_nearest_code_with_the_narrower_kernels(level, at_cpu_level):
    """The 16-byte (baseline x86-64) and 32-byte (AVX2) scans, run only where nothing wider
    exists, match the reference too."""
    at_cpu_level(level, "test_vst_ops", "check_nearest_code_every_tail")


def test_nearest_code_is_the_same_for_any_thread_count():
    x, codebook = torch.randn(2000, 32), torch.randn(3000, 32)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(ops.nearest_code(x, codebook))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
