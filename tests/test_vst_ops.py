"""The vector quantizer's ops: nearest_code (fused distances + argmin), code_statistics and
the in-place EMA update: parity with the references (cdist + argmin, bincount + index_add),
opcheck, tile edges, determinism, and input errors."""

from __future__ import annotations

import torch

import skelang.ops as ops


def test_nearest_code_ties_go_to_the_lowest_code():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    indices, distances = ops.nearest_code(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), codebook)
    assert indices.tolist() == [0, 0] and distances[0] == 0
    cos_indices, cos_distances = ops.nearest_code(torch.tensor([[3.0, 0.0], [0.0, 0.0]]), codebook, "cosine")
    assert cos_indices.tolist() == [0, 0]
    assert cos_distances.tolist() == [0.0, 1.0]  # a zero vector is at distance 1 from every code


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
