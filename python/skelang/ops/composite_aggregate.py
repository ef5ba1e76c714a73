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

_OP = "skelang::composite_aggregate"
_BACKWARD_OP = "skelang::composite_aggregate_backward"


def composite_aggregate(
    x: Tensor, phi: Tensor, psi: Tensor, weight: Tensor, bias: Tensor, alpha: Tensor, topology: Tensor
) -> Tensor:
    """The composite-topology aggregation (see the module's docstring for shapes)."""
    return torch.ops.skelang.composite_aggregate.default(x, phi, psi, weight, bias, alpha, topology)


def _check_inputs(op, x, phi, psi, weight, bias, alpha, topology) -> None:
    # Mirrors composite_aggregate_inputs in csrc/encoder/composite_aggregate.cpp, for fake tensors.
    torch._check(x.dim() == 5, lambda: f"{op}: x must be a 5-D tensor (N, K, C, T, V), got shape {list(x.shape)}")
    torch._check(
        x.dtype in (torch.float32, torch.float64), lambda: f"{op}: x must be float32 or float64, got {x.dtype}"
    )
    for name, t in (
        ("phi", phi),
        ("psi", psi),
        ("weight", weight),
        ("bias", bias),
        ("alpha", alpha),
        ("topology", topology),
    ):
        torch._check(
            t.dtype == x.dtype, lambda: f"{op}: x and {name} must have the same dtype, got {x.dtype} and {t.dtype}"
        )
        torch._check(t.device == x.device, lambda: f"{op}: x and {name} must be on the same device")
    N, K, C, _, V = x.shape
    torch._check(
        phi.dim() == 4 and tuple(phi.shape[:2]) == (N, K) and phi.shape[3] == V,
        lambda: f"{op}: phi must be (N, K, R, V) = ({N}, {K}, R, {V}), got {list(phi.shape)}",
    )
    R = phi.shape[2]
    torch._check(
        psi.shape == phi.shape, lambda: f"{op}: psi must have phi's shape {list(phi.shape)}, got {list(psi.shape)}"
    )
    torch._check(
        tuple(weight.shape) == (K, C, R),
        lambda: f"{op}: weight must be (K, C, R) = ({K}, {C}, {R}), got {list(weight.shape)}",
    )
    torch._check(tuple(bias.shape) == (K, C), lambda: f"{op}: bias must be (K, C) = ({K}, {C}), got {list(bias.shape)}")
    torch._check(
        alpha.dim() == 1 and alpha.numel() == 1,
        lambda: f"{op}: alpha must hold one value, got shape {list(alpha.shape)}",
    )
    torch._check(
        tuple(topology.shape) == (K, V, V),
        lambda: f"{op}: topology must be (K, V, V) = ({K}, {V}, {V}), got {list(topology.shape)}",
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
