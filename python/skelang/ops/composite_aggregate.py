"""composite_aggregate: LSE's graph convolution on the composite topology (CTR-GCN's
CTR-GC), summed over the K partitions, without materialising the (N, K, C, V, V) topology.

    x         (N, K, C, T, V)  features projected for each partition k
    phi, psi  (N, K, R, V)     relation projections of the time-pooled input
    weight    (K, C, R)        expands relations to channels (a 1x1 convolution)
    bias      (K, C)
    alpha     (1,)             the refinement's scale
    topology  (K, V, V)        physical + learned shared topology
    y         (N, C, T, V)     y[n,c,t,u] = sum_k sum_v A[n,k,c,u,v] x[n,k,c,t,v] with
        A[n,k,c,u,v] = topology[k,u,v] + alpha (bias[k,c] + sum_r weight[k,c,r] tanh(phi[n,k,r,u] - psi[n,k,r,v]))
"""

from __future__ import annotations

import torch
from torch import Tensor

from skelang.ops.checks import check, check_floating, check_rank, check_same_dtype_and_device, sizes

_OP = "skelang::composite_aggregate"
_BACKWARD_OP = "skelang::composite_aggregate_backward"


def composite_aggregate(
    x: Tensor, phi: Tensor, psi: Tensor, weight: Tensor, bias: Tensor, alpha: Tensor, topology: Tensor
) -> Tensor:
    """The composite-topology aggregation (see the module's docstring for shapes)."""
    return torch.ops.skelang.composite_aggregate.default(x, phi, psi, weight, bias, alpha, topology)


def _check_inputs(op, x, phi, psi, weight, bias, alpha, topology) -> None:
    # Mirrors composite_aggregate_inputs in csrc/encoder/composite_aggregate.cpp, for fake tensors.
    for name, t, rank, layout in (
        ("x", x, 5, "(N, K, C, T, V)"),
        ("phi", phi, 4, "(N, K, R, V)"),
        ("psi", psi, 4, "(N, K, R, V)"),
        ("weight", weight, 3, "(K, C, R)"),
        ("bias", bias, 2, "(K, C)"),
        ("alpha", alpha, 1, "(1)"),
        ("topology", topology, 3, "(K, V, V)"),
    ):
        check_rank(op, name, t, rank, layout)
    check_floating(op, "x", x)
    check_same_dtype_and_device(
        op, "x", x, {"phi": phi, "psi": psi, "weight": weight, "bias": bias, "alpha": alpha, "topology": topology}
    )
    N, K, C, _, V = x.shape
    R = phi.shape[2]
    check(
        tuple(phi.shape) == (N, K, R, V),
        op,
        lambda: f"phi must be (N, K, R, V) = ({N}, {K}, R, {V}) for x of shape {sizes(x)}, got {sizes(phi)}",
    )
    check(psi.shape == phi.shape, op, lambda: f"psi must have phi's shape {sizes(phi)}, got {sizes(psi)}")
    check(
        tuple(weight.shape) == (K, C, R), op, lambda: f"weight must be (K, C, R) = ({K}, {C}, {R}), got {sizes(weight)}"
    )
    check(tuple(bias.shape) == (K, C), op, lambda: f"bias must be (K, C) = ({K}, {C}), got {sizes(bias)}")
    check(alpha.numel() == 1, op, lambda: f"alpha must hold one value, got shape {sizes(alpha)}")
    check(
        tuple(topology.shape) == (K, V, V),
        op,
        lambda: f"topology must be (K, V, V) = ({K}, {V}, {V}), got {sizes(topology)}",
    )


@torch.library.register_fake(_OP)
def _composite_aggregate_fake(x, phi, psi, weight, bias, alpha, topology):
    _check_inputs(_OP, x, phi, psi, weight, bias, alpha, topology)
    N, _, C, T, V = x.shape
    return x.new_empty((N, C, T, V))


@torch.library.register_fake(_BACKWARD_OP)
def _composite_aggregate_backward_fake(grad_y, x, phi, psi, weight, bias, alpha, topology):
    _check_inputs(_BACKWARD_OP, x, phi, psi, weight, bias, alpha, topology)
    return tuple(t.new_empty(t.shape) for t in (x, phi, psi, weight, bias, alpha, topology))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)  # the inputs only: backward rebuilds the topology


def _backward(ctx, grad_y):
    grads = torch.ops.skelang.composite_aggregate_backward.default(grad_y, *ctx.saved_tensors)
    return tuple(g if needed else None for g, needed in zip(grads, ctx.needs_input_grad))


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
