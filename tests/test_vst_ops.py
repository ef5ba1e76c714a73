"""The vector quantizer's ops: nearest_code (fused distances + argmin), code_statistics and
the in-place EMA update: parity with the references (cdist + argmin, bincount + index_add),
opcheck, tile edges, determinism, and input errors."""

from __future__ import annotations

import pytest
import torch

import skelang.ops as ops
import skelang.reference as reference


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("N,K,D", [(1, 1, 1), (7, 3, 5), (300, 1500, 16), (129, 1025, 3), (1000, 64, 70)])
def test_nearest_code_parity(metric, dtype, N, K, D):
    # N and K cross the kernel's 128-row and 1024-code tiles.
    g = torch.Generator().manual_seed(N + K + D)
    x = torch.randn(N, D, dtype=dtype, generator=g)
    codebook = torch.randn(K, D, dtype=dtype, generator=g)
    indices, distances = ops.nearest_code(x, codebook, metric)
    ref_indices, ref_distances = reference.nearest_code(x, codebook, metric)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(distances, ref_distances, rtol=tolerance, atol=tolerance)
    # The chosen code is a nearest one (where two are equally near up to rounding, either
    # index is right): its own distance equals the reference's minimum.
    assert indices.dtype == torch.int64 and indices.shape == (N,)
    chosen = codebook[indices]
    if metric == "euclidean":
        own = (x - chosen).square().sum(1)
    else:
        own = 1 - torch.nn.functional.cosine_similarity(x, chosen, dim=1)
    torch.testing.assert_close(own, ref_distances, rtol=tolerance, atol=tolerance)
    assert (indices == ref_indices).float().mean() > 0.99


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_code_statistics_parity(dtype):
    x = torch.randn(500, 9, dtype=dtype)
    indices = torch.randint(0, 40, (500,))
    counts, sums = ops.code_statistics(x, indices, 50)
    ref_counts, ref_sums = reference.code_statistics(x, indices, 50)
    torch.testing.assert_close(counts, ref_counts)
    torch.testing.assert_close(sums, ref_sums)
    assert counts[40:].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ema_codebook_update_parity(dtype):
    g = torch.Generator().manual_seed(3)
    state = [
        torch.randn(20, 6, dtype=dtype, generator=g),
        torch.rand(20, dtype=dtype, generator=g) * 5,
        torch.randn(20, 6, dtype=dtype, generator=g),
    ]
    counts = torch.randint(0, 4, (20,)).to(dtype)
    sums = torch.randn(20, 6, dtype=dtype, generator=g)
    ours = [t.clone() for t in state]
    theirs = [t.clone() for t in state]
    ops.ema_codebook_update_(*ours, counts, sums, 0.9, 1e-5)
    reference.ema_codebook_update_(*theirs, counts, sums, 0.9, 1e-5)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    assert not torch.equal(ours[0], state[0])  # updated in place


def test_opcheck():
    x, codebook = torch.randn(40, 8), torch.randn(30, 8)
    for metric in ("euclidean", "cosine"):
        torch.library.opcheck(torch.ops.skelang.nearest_code.default, (x, codebook, metric))
    indices = torch.randint(0, 30, (40,))
    torch.library.opcheck(torch.ops.skelang.code_statistics.default, (x, indices, 30))
    counts, sums = ops.code_statistics(x, indices, 30)
    torch.library.opcheck(
        torch.ops.skelang.ema_codebook_update_.default,
        (codebook.clone(), torch.ones(30), codebook.clone(), counts, sums, 0.99, 1e-5),
    )


def test_errors():
    with pytest.raises(RuntimeError, match=r"codebook must be \(K, D\) with D = 4"):
        ops.nearest_code(torch.randn(3, 4), torch.randn(5, 3))
    with pytest.raises(RuntimeError, match="metric must be 'euclidean' or 'cosine', got 'manhattan'"):
        ops.nearest_code(torch.randn(3, 4), torch.randn(5, 4), "manhattan")
    with pytest.raises(RuntimeError, match="the codebook has no code"):
        ops.nearest_code(torch.randn(3, 4), torch.randn(0, 4))
    with pytest.raises(RuntimeError, match=r"indices\[1\] = 9 is not a code in \[0, 5\)"):
        ops.code_statistics(torch.randn(3, 4), torch.tensor([0, 9, 1]), 5)
    with pytest.raises(RuntimeError, match="decay must be in"):
        ops.ema_codebook_update_(
            torch.randn(5, 4), torch.ones(5), torch.randn(5, 4), torch.ones(5), torch.randn(5, 4), 1.0, 1e-5
        )
    with pytest.raises(RuntimeError, match=r"sums must be \(K, D\) = \(5, 4\)"):
        ops.ema_codebook_update_(
            torch.randn(5, 4), torch.ones(5), torch.randn(5, 4), torch.ones(5), torch.randn(5, 3), 0.9, 1e-5
        )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_cuda_parity(metric):
    x, codebook = torch.randn(3000, 64, dtype=torch.float64), torch.randn(700, 64, dtype=torch.float64)
    indices, distances = ops.nearest_code(x.cuda(), codebook.cuda(), metric)
    ref_indices, ref_distances = ops.nearest_code(x, codebook, metric)
    assert torch.equal(indices.cpu(), ref_indices)
    torch.testing.assert_close(distances.cpu(), ref_distances)
    counts, sums = ops.code_statistics(x.cuda(), ref_indices.cuda(), 700)
    ref_counts, ref_sums = ops.code_statistics(x, ref_indices, 700)
    torch.testing.assert_close(counts.cpu(), ref_counts)
    torch.testing.assert_close(sums.cpu(), ref_sums)
    state = [codebook.clone(), torch.ones(700, dtype=torch.float64), codebook.clone()]
    on_cuda = [t.cuda() for t in state]
    ops.ema_codebook_update_(*on_cuda, counts, sums, 0.99, 1e-5)
    ops.ema_codebook_update_(*state, ref_counts, ref_sums, 0.99, 1e-5)
    for a, b in zip(on_cuda, state):
        torch.testing.assert_close(a.cpu(), b)
