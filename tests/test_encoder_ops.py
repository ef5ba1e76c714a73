"""The encoder's fused ops composite_aggregate, axis_attention and multiscale_temporal_conv:
parity with their references (forward and every gradient, float32 and float64), float64
gradcheck, opcheck, torch.compile, and input errors."""

from __future__ import annotations

import pytest
import torch

import skelang.ops as ops
import skelang.reference as reference


def tolerances(dtype):
    # float32: the gradients of phi and psi are sums over channels, frames and joints
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def composite_inputs(N=3, K=3, C=5, T=7, V=6, R=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(N, K, C, T, V), (N, K, R, V), (N, K, R, V), (K, C, R), (K, C), (1,), (K, V, V)]
    return [torch.randn(shape, dtype=dtype, generator=g).requires_grad_() for shape in shapes]


def assert_parity(op, ref, inputs, dtype, *extra):
    y = op(*inputs, *extra)
    y_ref = ref(*inputs, *extra)
    torch.testing.assert_close(y, y_ref, **tolerances(dtype))
    grad_y = torch.randn_like(y)
    grads = torch.autograd.grad(y, inputs, grad_y)
    grads_ref = torch.autograd.grad(y_ref, inputs, grad_y)
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref, **tolerances(dtype))


# --- composite_aggregate ------------------------------------------------------------------


def test_composite_aggregate_alpha_zero_still_trains_alpha():
    # CTR-GCN starts alpha at 0: the refinement's parameters get no gradient then, alpha does.
    inputs = composite_inputs()
    with torch.no_grad():
        inputs[5].zero_()
    y = ops.composite_aggregate(*inputs)
    grads = torch.autograd.grad(y.square().sum(), inputs)
    assert grads[3].abs().max() == 0 and grads[1].abs().max() == 0
    assert grads[5].abs().item() > 0
    torch.testing.assert_close(
        grads[5], torch.autograd.grad(reference.composite_aggregate(*inputs).square().sum(), inputs[5])[0]
    )


def test_composite_aggregate_same_result_for_any_thread_count():
    inputs = [t.detach() for t in composite_inputs(N=6, C=8, T=9, V=25, dtype=torch.float32)]
    grad_y = torch.randn(6, 8, 9, 25)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(torch.ops.skelang.composite_aggregate_backward.default(grad_y, *inputs))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", ((3, 3, 5, 7, 6, 4), (4, 1, 16, 13, 20, 8), (2, 0, 4, 5, 6, 3)))
def test_composite_aggregate_bfloat16_is_float32_arithmetic_sample_by_sample(shape):
    # The CPU kernel converts bfloat16 one sample at a time: the results are, bit for bit,
    # those of the float32 op on converted inputs, rounded to bfloat16 (K = 0: none at all).
    N, K, C, T, V, R = shape
    inputs = [t.detach().bfloat16() for t in composite_inputs(N, K, C, T, V, R, dtype=torch.float32, seed=5)]
    grad_y = torch.randn(N, C, T, V, generator=torch.Generator().manual_seed(6)).bfloat16()
    y = torch.ops.skelang.composite_aggregate.default(*inputs)
    grads = torch.ops.skelang.composite_aggregate_backward.default(grad_y, *inputs)
    y32 = torch.ops.skelang.composite_aggregate.default(*[t.float() for t in inputs])
    grads32 = torch.ops.skelang.composite_aggregate_backward.default(grad_y.float(), *[t.float() for t in inputs])
    assert y.dtype == torch.bfloat16 and torch.equal(y, y32.bfloat16())
    for grad, grad32 in zip(grads, grads32):
        assert grad.dtype == torch.bfloat16 and torch.equal(grad, grad32.bfloat16())


# --- axis_attention -----------------------------------------------------------------------


@pytest.mark.parametrize("axis", (2, 3))
def test_axis_attention_same_result_for_any_thread_count(axis):
    # the outputs, the probabilities and both gradients (the bias gradient sums over all
    # sequences) do not depend on how many threads the kernels run on (beyond rounding)
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(5, 24, 9, 6, generator=g)
    L = 6 if axis == 3 else 9
    bias = torch.randn(2, L, L, generator=g)
    grad_out = torch.randn(5, 8, 9, 6, generator=g)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            out, probs = torch.ops.skelang.axis_attention_with_probs.default(qkv, bias, 2, axis)
            results.append(
                (out, probs, *torch.ops.skelang.axis_attention_backward.default(grad_out, qkv, bias, probs, 2, axis))
            )
    finally:
        torch.set_num_threads(threads)
    # the forward bit for bit; the gradients to float32's rounding: ATen's softmax backward
    # (dS) rounds differently with the thread count on some CPUs (a 2-core AVX2 EPYC, torch
    # 2.13, rows of 9: 6e-8 apart), and the bias gradient sums those dS
    for name, a, b in zip(("out", "probs", "grad_qkv", "grad_bias"), *results):
        if name in ("out", "probs"):
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, msg=name)


def saved_for_backward(function, *args):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = function(*args)
    return y, saved


def test_axis_attention_keeps_its_probabilities_for_backward():
    # training keeps qkv, bias and the (S, H, L, L) probabilities, and no gradient of them
    qkv = torch.randn(2, 24, 9, 6, requires_grad=True)
    bias = torch.randn(2, 9, 9, requires_grad=True)
    y, saved = saved_for_backward(ops.axis_attention, qkv, bias, 2, 2)
    assert sorted(t.numel() for t in saved) == sorted([qkv.numel(), bias.numel(), 2 * 6 * 2 * 9 * 9])
    probs = next(t for t in saved if t.shape == (12, 2, 9, 9))
    torch.testing.assert_close(probs, reference.axis_attention_with_probs(qkv, bias, 2, 2)[1])
    assert not probs.requires_grad
    y.sum().backward()


def test_axis_attention_direct_op_keeps_only_qkv_and_bias():
    # torch.ops.skelang.axis_attention recomputes the probabilities in backward
    qkv = torch.randn(2, 24, 9, 6, requires_grad=True)
    bias = torch.randn(2, 6, 6, requires_grad=True)
    y, saved = saved_for_backward(torch.ops.skelang.axis_attention, qkv, bias, 2, 3)
    assert sorted(t.numel() for t in saved) == sorted([qkv.numel(), bias.numel()])
    assert all(
        t.untyped_storage().data_ptr() in (qkv.untyped_storage().data_ptr(), bias.untyped_storage().data_ptr())
        for t in saved
    )
    grads = torch.autograd.grad(y.square().sum(), (qkv, bias))
    grads_ref = torch.autograd.grad(reference.axis_attention(qkv, bias, 2, 3).square().sum(), (qkv, bias))
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref)


def test_axis_attention_no_probabilities_kept_without_autograd():
    qkv = torch.randn(2, 24, 9, 6, requires_grad=True)
    bias = torch.randn(2, 9, 9)
    with torch.no_grad():
        y, saved = saved_for_backward(ops.axis_attention, qkv, bias, 2, 2)
    assert saved == [] and not y.requires_grad


def test_axis_attention_probabilities_are_not_differentiable():
    # they are rows of a softmax over keys, for plots; gradients flow through the output only
    qkv = torch.randn(2, 24, 9, 6, requires_grad=True)
    bias = torch.randn(2, 9, 9, requires_grad=True)
    out, probs = ops.axis_attention_with_probs(qkv, bias, 2, 2)
    assert out.requires_grad and not probs.requires_grad
    torch.testing.assert_close(probs.sum(-1), torch.ones(12, 2, 9))


# skelang.ops.axis_attention keeps the probabilities; the op called directly recomputes them
AXIS_ATTENTION_PATHS = {"keeping": ops.axis_attention, "recomputing": torch.ops.skelang.axis_attention.default}


@pytest.mark.parametrize("axis", (2, 3))
@pytest.mark.parametrize("path", AXIS_ATTENTION_PATHS)
def test_axis_attention_any_strides(path, axis):
    # a channels-last qkv and an expanded output gradient (what y.sum().backward() passes)
    g = torch.Generator().manual_seed(6)
    qkv = torch.randn(2, 12, 5, 6, dtype=torch.float64, generator=g).to(memory_format=torch.channels_last)
    qkv.requires_grad_()
    L = 6 if axis == 3 else 5
    bias = torch.randn(2, L, L, dtype=torch.float64, generator=g, requires_grad=True)
    grads = torch.autograd.grad(AXIS_ATTENTION_PATHS[path](qkv, bias, 2, axis).sum(), (qkv, bias))
    grads_ref = torch.autograd.grad(reference.axis_attention(qkv, bias, 2, axis).sum(), (qkv, bias))
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref)
    with pytest.raises(RuntimeError, match="grad_out and qkv must have the same dtype"):
        torch.ops.skelang.axis_attention_backward(torch.ones(2, 4, 5, 6), qkv.detach(), bias.detach(), None, 2, axis)


@pytest.mark.parametrize("path", AXIS_ATTENTION_PATHS)
def test_axis_attention_parity_across_chunks(path):
    # 4 heads of 64 frames: 1024 sequences per chunk, so 2 * 520 joints make two chunks (of
    # the recomputing forward and backward; the keeping path slices its kept probabilities)
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 12, 64, 520, generator=g).requires_grad_()
    bias = torch.randn(4, 64, 64, generator=g).requires_grad_()
    assert_parity(AXIS_ATTENTION_PATHS[path], reference.axis_attention, [qkv, bias], torch.float32, 4, 2)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("axis", (2, 3))
def test_axis_attention_long_sequences_and_wide_heads(axis, dtype):
    # 70 positions, 70 channels per head, 25 sequences: past the tiny shapes of the op's samples
    g = torch.Generator().manual_seed(7)
    T, V = (70, 25) if axis == 2 else (25, 70)
    qkv = torch.randn(1, 3 * 2 * 70, T, V, dtype=dtype, generator=g).requires_grad_()
    bias = torch.randn(2, 70, 70, dtype=dtype, generator=g).requires_grad_()
    for path in AXIS_ATTENTION_PATHS.values():
        assert_parity(path, reference.axis_attention, [qkv, bias], dtype, 2, axis)


# --- multiscale_temporal_conv -------------------------------------------------------------
