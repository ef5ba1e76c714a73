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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape",
    [dict(), dict(N=1, K=1, C=1, T=1, V=1, R=1), dict(V=25, T=16, C=8, R=2), dict(N=5, K=2, C=16, T=3, V=20, R=8)],
)
def test_composite_aggregate_parity(dtype, shape):
    assert_parity(ops.composite_aggregate, reference.composite_aggregate, composite_inputs(dtype=dtype, **shape), dtype)


def test_composite_aggregate_gradcheck_and_opcheck():
    inputs = composite_inputs(N=2, K=2, C=3, T=4, V=5, R=2)
    assert torch.autograd.gradcheck(ops.composite_aggregate, inputs)
    torch.library.opcheck(torch.ops.skelang.composite_aggregate.default, inputs)
    grad_y = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.skelang.composite_aggregate_backward.default, [grad_y] + [t.detach() for t in inputs]
    )


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


def test_composite_aggregate_compiles():
    inputs = composite_inputs(N=2, C=4, T=3, V=5, R=2)
    compiled = torch.compile(ops.composite_aggregate, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(*inputs), reference.composite_aggregate(*inputs))


@pytest.mark.parametrize(
    "index,shape,message",
    [
        (0, (3, 3, 5, 7), r"x must be a 5-D tensor \(N, K, C, T, V\)"),
        (1, (3, 3, 4, 5), r"phi must be \(N, K, R, V\)"),
        (2, (3, 3, 3, 6), "psi must have phi's shape"),
        (3, (3, 4, 4), r"weight must be \(K, C, R\) = \(3, 5, 4\)"),
        (4, (3, 4), r"bias must be \(K, C\)"),
        (5, (2,), "alpha must hold one value"),
        (6, (2, 6, 6), r"topology must be \(K, V, V\)"),
    ],
)
def test_composite_aggregate_errors(index, shape, message):
    inputs = [t.detach() for t in composite_inputs()]
    inputs[index] = torch.zeros(shape, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=message):
        ops.composite_aggregate(*inputs)


def test_composite_aggregate_dtype_error():
    inputs = [t.detach() for t in composite_inputs()]
    inputs[3] = inputs[3].float()
    with pytest.raises(RuntimeError, match="x and weight must have the same dtype"):
        ops.composite_aggregate(*inputs)


# --- axis_attention -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("axis", [2, 3])
@pytest.mark.parametrize("heads", [1, 4])
def test_axis_attention_parity(dtype, axis, heads):
    g = torch.Generator().manual_seed(axis * 10 + heads)
    qkv = torch.randn(2, 3 * 4 * heads, 7, 6, dtype=dtype, generator=g).requires_grad_()
    L = 6 if axis == 3 else 7
    bias = torch.randn(heads, L, L, dtype=dtype, generator=g).requires_grad_()
    assert_parity(ops.axis_attention, reference.axis_attention, [qkv, bias], dtype, heads, axis)


def test_axis_attention_gradcheck_and_opcheck():
    qkv = torch.randn(2, 12, 4, 5, dtype=torch.float64, requires_grad=True)
    for axis, L in ((2, 4), (3, 5)):
        bias = torch.randn(2, L, L, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda q, b: ops.axis_attention(q, b, 2, axis), (qkv, bias))
        torch.library.opcheck(torch.ops.skelang.axis_attention.default, (qkv, bias, 2, axis))


def test_axis_attention_keeps_only_qkv_and_bias_for_backward():
    # the (H, L, L) probabilities are recomputed in backward, never kept
    qkv = torch.randn(2, 24, 9, 6, requires_grad=True)
    bias = torch.randn(2, 9, 9, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = ops.axis_attention(qkv, bias, 2, 2)
    assert sorted(t.numel() for t in saved) == sorted([qkv.numel(), bias.numel()])
    assert all(
        t.untyped_storage().data_ptr() in (qkv.untyped_storage().data_ptr(), bias.untyped_storage().data_ptr())
        for t in saved
    )
    y.sum().backward()


def test_axis_attention_any_strides():
    # a channels-last qkv and an expanded output gradient (what y.sum().backward() passes)
    g = torch.Generator().manual_seed(6)
    qkv = torch.randn(2, 12, 5, 6, dtype=torch.float64, generator=g).to(memory_format=torch.channels_last)
    qkv.requires_grad_()
    bias = torch.randn(2, 6, 6, dtype=torch.float64, generator=g, requires_grad=True)
    grads = torch.autograd.grad(ops.axis_attention(qkv, bias, 2, 3).sum(), (qkv, bias))
    grads_ref = torch.autograd.grad(reference.axis_attention(qkv, bias, 2, 3).sum(), (qkv, bias))
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref)
    with pytest.raises(RuntimeError, match="grad_out and qkv must have the same dtype"):
        torch.ops.skelang.axis_attention_backward(torch.ones(2, 4, 5, 6), qkv.detach(), bias.detach(), 2, 3)


def test_axis_attention_parity_across_chunks():
    # 4 heads of 64 frames: 1024 sequences per chunk, so 2 * 520 joints make two chunks
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 12, 64, 520, generator=g).requires_grad_()
    bias = torch.randn(4, 64, 64, generator=g).requires_grad_()
    assert_parity(ops.axis_attention, reference.axis_attention, [qkv, bias], torch.float32, 4, 2)


def test_axis_attention_errors():
    qkv = torch.randn(2, 12, 4, 5)
    with pytest.raises(RuntimeError, match="axis must be 2 .frames. or 3 .joints."):
        ops.axis_attention(qkv, torch.zeros(2, 5, 5), 2, 1)
    with pytest.raises(RuntimeError, match=r"bias must be \(H, L, L\) = \(2, 5, 5\) for axis 3"):
        ops.axis_attention(qkv, torch.zeros(2, 4, 4), 2, 3)
    with pytest.raises(RuntimeError, match="channels must be 3 x heads x D"):
        ops.axis_attention(qkv, torch.zeros(5, 5, 5), 5, 3)


# --- multiscale_temporal_conv -------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dilations,stride,k", [([1], 1, 9), ([1, 2], 1, 5), ([1, 2, 3, 4], 2, 5), ([2, 1], 2, 3)])
def test_multiscale_temporal_conv_parity(dtype, dilations, stride, k):
    g = torch.Generator().manual_seed(len(dilations) + stride)
    B, W = len(dilations), 3
    inputs = [
        torch.randn(shape, dtype=dtype, generator=g).requires_grad_()
        for shape in [(2, B * W, 11, 4), (B, W, W, k), (B, W)]
    ]
    assert_parity(ops.multiscale_temporal_conv, reference.multiscale_temporal_conv, inputs, dtype, dilations, stride)
    assert ops.multiscale_temporal_conv(*inputs, dilations, stride).shape[2] == (11 - 1) // stride + 1


def test_multiscale_temporal_conv_gradcheck_and_opcheck():
    inputs = [
        torch.randn(shape, dtype=torch.float64, requires_grad=True) for shape in [(2, 6, 9, 3), (2, 3, 3, 5), (2, 3)]
    ]
    for stride in (1, 2):
        assert torch.autograd.gradcheck(lambda *a: ops.multiscale_temporal_conv(*a, [1, 2], stride), inputs)
        torch.library.opcheck(torch.ops.skelang.multiscale_temporal_conv.default, (*inputs, [1, 2], stride))


def test_multiscale_temporal_conv_errors():
    x, w, b = torch.randn(2, 6, 9, 3), torch.randn(2, 3, 3, 5), torch.randn(2, 3)
    with pytest.raises(RuntimeError, match="one dilation per branch expected"):
        ops.multiscale_temporal_conv(x, w, b, [1])
    with pytest.raises(RuntimeError, match="an odd kernel size"):
        ops.multiscale_temporal_conv(x, torch.randn(2, 3, 3, 4), b, [1, 2])
    with pytest.raises(RuntimeError, match="x must have B \\* W = 6 channels"):
        ops.multiscale_temporal_conv(torch.randn(2, 5, 9, 3), w, b, [1, 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_parity(dtype):
    cases = [
        (ops.composite_aggregate, composite_inputs(N=9, C=16, T=10, V=25, dtype=dtype), ()),
        (
            ops.axis_attention,
            [
                torch.randn(2, 24, 7, 6, dtype=dtype, requires_grad=True),
                torch.randn(2, 6, 6, dtype=dtype, requires_grad=True),
            ],
            (2, 3),
        ),
        (
            ops.multiscale_temporal_conv,
            [
                torch.randn(2, 6, 9, 3, dtype=dtype, requires_grad=True),
                torch.randn(2, 3, 3, 5, dtype=dtype, requires_grad=True),
                torch.randn(2, 3, dtype=dtype, requires_grad=True),
            ],
            ([1, 2], 2),
        ),
    ]
    for op, inputs, extra in cases:
        on_cuda = [t.detach().cuda().requires_grad_() for t in inputs]
        y, y_cpu = op(*on_cuda, *extra), op(*inputs, *extra)
        torch.testing.assert_close(y.cpu(), y_cpu, **tolerances(dtype))
        grad_y = torch.randn_like(y_cpu)
        grads = torch.autograd.grad(y, on_cuda, grad_y.cuda())
        for grad, grad_cpu in zip(grads, torch.autograd.grad(y_cpu, inputs, grad_y)):
            torch.testing.assert_close(grad.cpu(), grad_cpu, **tolerances(dtype))
