"""graph_aggregate: parity with the reference (forward, both gradients, every broadcast
case, float32 and float64), gradcheck, opcheck, torch.compile, and input errors."""

from __future__ import annotations

import itertools

import pytest
import torch

import skelang.ops as ops
import skelang.reference as reference

TOPOLOGIES = ["shared", "per_channel", "per_sample", "per_sample_channel"]


def topology_shape(kind: str, N: int, C: int, V: int) -> tuple[int, ...]:
    return {
        "shared": (1, 1, V, V),
        "per_channel": (1, C, V, V),
        "per_sample": (N, 1, V, V),
        "per_sample_channel": (N, C, V, V),
    }[kind]


def make_inputs(kind, N=3, C=5, T=7, V=25, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, T, V, dtype=dtype, generator=g).requires_grad_()
    A = torch.randn(topology_shape(kind, N, C, V), dtype=dtype, generator=g).requires_grad_()
    return x, A


def tolerances(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


# V covers every register-blocking width of the kernels for both dtypes and the plain-loop
# path past 8 vectors per row (float32: 16 joints per vector, float64: 8).
@pytest.mark.parametrize("kind", TOPOLOGIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("V", [1, 3, 17, 20, 25, 33, 70, 130])
def test_parity_with_reference(kind, dtype, V):
    x, A = make_inputs(kind, V=V, dtype=dtype)
    y = ops.graph_aggregate(x, A)
    y_ref = reference.graph_aggregate(x, A)
    torch.testing.assert_close(y, y_ref, **tolerances(dtype))
    grad_y = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, A), grad_y)
    grads_ref = torch.autograd.grad(y_ref, (x, A), grad_y)
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref, **tolerances(dtype))


@pytest.mark.parametrize("kind", TOPOLOGIES)
@pytest.mark.parametrize("N,C,T", [(1, 1, 1), (2, 3, 1), (4, 40, 3), (70, 2, 2)])
def test_parity_odd_shapes(kind, N, C, T):
    # One frame, one sample, many chunks of the topology gradient (N*C >> 64 slices).
    x, A = make_inputs(kind, N=N, C=C, T=T, V=5)
    y = ops.graph_aggregate(x, A)
    torch.testing.assert_close(y, reference.graph_aggregate(x, A))
    grad_y = torch.randn_like(y)
    torch.testing.assert_close(
        ops.graph_aggregate_grad_topology(grad_y, x, A.shape[0], A.shape[1]),
        reference.graph_aggregate_grad_topology(grad_y, x, A.shape[0], A.shape[1]),
    )


def test_strided_inputs_are_read_without_copies_of_A():
    x, A = make_inputs("per_channel", N=2, C=4, T=6, V=9)
    A_t = A.detach().transpose(2, 3)  # a view: non-contiguous strides
    x_nc = x.detach().transpose(2, 1).contiguous().transpose(2, 1)  # non-contiguous x
    assert not A_t.is_contiguous() and not x_nc.is_contiguous()
    torch.testing.assert_close(ops.graph_aggregate(x_nc, A_t), reference.graph_aggregate(x_nc, A_t))


def test_empty_batch():
    x = torch.zeros(0, 3, 4, 5)
    A = torch.randn(1, 3, 5, 5)
    assert ops.graph_aggregate(x, A).shape == (0, 3, 4, 5)
    assert torch.equal(ops.graph_aggregate_grad_topology(x, x, 1, 3), torch.zeros(1, 3, 5, 5))


def test_result_does_not_depend_on_thread_count():
    x, A = make_inputs("shared", N=8, C=16, T=9, V=25, dtype=torch.float32)
    grad_y = torch.randn(8, 16, 9, 25)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append((ops.graph_aggregate(x, A), ops.graph_aggregate_grad_topology(grad_y, x, 1, 1)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind", TOPOLOGIES)
def test_gradcheck_float64(kind):
    x, A = make_inputs(kind, N=2, C=3, T=2, V=4)
    assert torch.autograd.gradcheck(ops.graph_aggregate, (x, A))


@pytest.mark.parametrize("kind", TOPOLOGIES)
def test_opcheck(kind):
    x, A = make_inputs(kind, N=2, C=3, T=4, V=5)
    torch.library.opcheck(torch.ops.skelang.graph_aggregate.default, (x, A))
    grad_y = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.skelang.graph_aggregate_grad_topology.default, (grad_y, x.detach(), A.shape[0], A.shape[1])
    )


def test_torch_compile_fullgraph():
    def layer(x, A, weight):
        return torch.relu(ops.graph_aggregate(x, A) * weight).sum()

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x, A = make_inputs("per_channel", N=2, C=3, T=4, V=5)
    weight = torch.randn(5, dtype=torch.float64)
    out = compiled(x, A, weight)
    torch.testing.assert_close(out, layer(x, A, weight))
    grads = torch.autograd.grad(out, (x, A))
    grads_ref = torch.autograd.grad(layer(x, A, weight), (x, A))
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref)


BAD_INPUTS = [
    # (x shape, A shape, dtype of x, dtype of A, expected message)
    ((3, 5, 7), (1, 1, 7, 7), torch.float32, torch.float32, r"x must be a 4-D tensor \(N, C, T, V\), got a 3-D"),
    ((2, 3, 4, 5), (5, 5), torch.float32, torch.float32, r"A must be a 4-D tensor \(Na, Ca, V, V\), got a 2-D"),
    ((2, 3, 4, 5), (1, 1, 6, 6), torch.float32, torch.float32, r"A must be \(Na, Ca, V, V\) with V = 5"),
    ((2, 3, 4, 5), (1, 1, 5, 4), torch.float32, torch.float32, r"A must be \(Na, Ca, V, V\) with V = 5"),
    ((2, 3, 4, 5), (3, 1, 5, 5), torch.float32, torch.float32, r"A.size\(0\) .* must be 1 or 2, got 3"),
    ((2, 3, 4, 5), (1, 2, 5, 5), torch.float32, torch.float32, r"A.size\(1\) .* must be 1 or 3, got 2"),
    ((2, 3, 4, 5), (1, 1, 5, 5), torch.float32, torch.float64, r"x and A must have the same dtype"),
    ((2, 3, 4, 5), (1, 1, 5, 5), torch.int64, torch.int64, r"x must be float32 or float64, got Long"),
    ((2, 3, 4, 5), (1, 1, 5, 5), torch.float16, torch.float16, r"x must be float32 or float64, got Half"),
]


@pytest.mark.parametrize("x_shape,A_shape,x_dtype,A_dtype,message", BAD_INPUTS)
def test_bad_inputs_give_clear_errors(x_shape, A_shape, x_dtype, A_dtype, message):
    x = torch.ones(x_shape, dtype=x_dtype)
    A = torch.ones(A_shape, dtype=A_dtype)
    with pytest.raises(RuntimeError, match=message):
        ops.graph_aggregate(x, A)


def test_mismatched_devices_give_clear_error():
    x = torch.ones(2, 3, 4, 5)
    A = torch.ones(1, 1, 5, 5, device="meta")
    with pytest.raises(RuntimeError, match="x and A must be on the same device"):
        ops.graph_aggregate(x, A)


def test_bad_topology_gradient_inputs():
    x = torch.ones(2, 3, 4, 5)
    with pytest.raises(RuntimeError, match="grad_y and x must have the same shape"):
        ops.graph_aggregate_grad_topology(torch.ones(2, 3, 4, 6), x, 1, 1)
    with pytest.raises(RuntimeError, match="topology_channels must be 1 or 3, got 2"):
        ops.graph_aggregate_grad_topology(x, x, 1, 2)


def test_meta_tensors_give_shapes():
    x = torch.empty(2, 3, 4, 5, device="meta")
    A = torch.empty(2, 1, 5, 5, device="meta")
    assert ops.graph_aggregate(x, A).shape == (2, 3, 4, 5)
    assert ops.graph_aggregate_grad_topology(x, x, 2, 1).shape == (2, 1, 5, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind,dtype", list(itertools.product(TOPOLOGIES, [torch.float32, torch.float64])))
def test_cuda_parity(kind, dtype):
    x, A = make_inputs(kind, dtype=dtype)
    x_cuda = x.detach().cuda().requires_grad_()
    A_cuda = A.detach().cuda().requires_grad_()
    y = ops.graph_aggregate(x_cuda, A_cuda)
    y_ref = reference.graph_aggregate(x, A)
    torch.testing.assert_close(y.cpu(), y_ref, **tolerances(dtype))
    grad_y = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, (x_cuda, A_cuda), grad_y.cuda())
    grads_ref = torch.autograd.grad(y_ref, (x, A), grad_y)
    for grad, grad_ref in zip(grads, grads_ref):
        torch.testing.assert_close(grad.cpu(), grad_ref, **tolerances(dtype))
    torch.library.opcheck(torch.ops.skelang.graph_aggregate.default, (x_cuda, A_cuda))


def test_empty_batch_with_per_sample_topology():
    x = torch.zeros(0, 3, 4, 5)
    A = torch.zeros(0, 1, 5, 5)
    assert ops.graph_aggregate(x, A).shape == (0, 3, 4, 5)
    assert ops.graph_aggregate_grad_topology(x, x, 0, 1).shape == (0, 1, 5, 5)
