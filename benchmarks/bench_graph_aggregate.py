"""graph_aggregate forward + backward against its reference (a broadcasting matmul, as the
CTR-GCN code base writes it), for each broadcast case of the topology A."""

from __future__ import annotations

import torch
from harness import Case

import skelang.ops
import skelang.reference
from skelang.ops.registry import OPS, TOPOLOGY_SHAPES

TOPOLOGIES = TOPOLOGY_SHAPES  # topology name -> shape of A as a function of (N, C, V)


def _training_step(op, x, A, grad_y):
    def step():
        y = op(x, A)
        torch.autograd.grad(y, (x, A), grad_y)

    return step


def cases(config: dict, device: torch.device) -> list[Case]:
    config = {**OPS["graph_aggregate"].bench["quick" if config["quick"] else "full"], **config}
    N, T, V = config["N"], config["T"], config["V"]
    dtype = getattr(torch, config.get("dtype", "float32"))
    out = []
    for C in config["channels"]:
        for topology in config["topologies"]:
            shape = TOPOLOGIES[topology](N, C, V)
            x = torch.randn(N, C, T, V, device=device, dtype=dtype, requires_grad=True)
            A = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
            grad_y = torch.randn(N, C, T, V, device=device, dtype=dtype)
            # forward y, backward grad_x and grad_A: three contractions of N*C*T*V*V MACs
            flops = 3 * 2 * N * C * T * V * V
            out.append(
                Case(
                    name="graph_aggregate fwd+bwd",
                    params=f"N={N} C={C} T={T} V={V} A={topology}",
                    flops=flops,
                    skelang=_training_step(skelang.ops.graph_aggregate, x, A, grad_y),
                    reference=_training_step(skelang.reference.graph_aggregate, x, A, grad_y),
                )
            )
    return out
