"""The encoder: composite_aggregate forward + backward against its reference (the
per-sample, per-channel topology materialised and used with einsum, as CTR-GCN does),
axis_attention (GSM, GTA) forward + backward against its reference, and
a whole training step (forward, loss, backward) of HGLNet and CTR-GCN with the C++ ops
(backend "cpp") against the same model and weights in pure PyTorch written as the CTR-GCN
code base writes its blocks (backend "reference"). The "hglnet-recompute" case runs the C++
path with model.recompute_attention (GSM and GTA recomputed in backward) against the plain
reference."""

from __future__ import annotations

import sys

import torch
from harness import Case

import skelang.ops
import skelang.reference
from skelang.data.layouts import get_layout
from skelang.encoder import build_model, profile
from skelang.ops.registry import OPS
from skelang.runs.stages.base import PRECISION_DTYPES, native_bfloat16


def _op_step(op, inputs, grad_y):
    def step():
        torch.autograd.grad(op(*inputs), inputs, grad_y)

    return step


def _model_step(model, x, labels, dtype=None):
    """One training step (forward, loss, backward), under torch.autocast in `dtype` if given."""

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()

    return step


def composite_cases(config: dict, device: torch.device) -> list[Case]:
    N, K, T, V = config["N"], config["K"], config["T"], config["V"]
    out = []
    for C in config["channels"]:
        R = max(C // 8, 8)
        inputs = [
            torch.randn(shape, device=device, requires_grad=True)
            for shape in [(N, K, C, T, V), (N, K, R, V), (N, K, R, V), (K, C, R), (K, C), (1,), (K, V, V)]
        ]
        grad_y = torch.randn(N, C, T, V, device=device)
        # forward: topologies + aggregation; backward: both again, grad_x and the topology's gradient
        flops = 3 * 2 * N * K * C * (T * V * V + R * V * V)
        out.append(
            Case(
                name="composite_aggregate fwd+bwd",
                params=f"N={N} K={K} C={C} R={R} T={T} V={V}",
                flops=flops,
                skelang=_op_step(skelang.ops.composite_aggregate, inputs, grad_y),
                reference=_op_step(skelang.reference.composite_aggregate, inputs, grad_y),
            )
        )
    return out


def axis_attention_cases(config: dict, device: torch.device) -> list[Case]:
    """GSM (axis 3, across joints) and GTA (axis 2, across frames) at HGLNet's widths and
    frame counts; the peer is the same op keeping only qkv and bias (backward recomputes the
    probabilities), as torch.ops.skelang.axis_attention does when called directly."""
    N, V, heads = config["N"], config["V"], config["heads"]
    out = []
    for C, T in config["shapes"]:
        for axis in (3, 2):
            L = V if axis == 3 else T
            qkv = torch.randn(N, 3 * C, T, V, device=device, requires_grad=True)
            bias = torch.randn(heads, L, L, device=device, requires_grad=True)
            grad_y = torch.randn(N, C, T, V, device=device)

            def step(op, axis=axis, inputs=(qkv, bias), grad_y=grad_y):
                return _op_step(lambda q, b: op(q, b, heads, axis), inputs, grad_y)

            # q k^T and P v forward; backward: g v^T, dS k, dS^T q, P^T g (and P again when recomputed)
            flops = 6 * 2 * N * C * T * V * L
            out.append(
                Case(
                    name=f"axis_attention fwd+bwd ({'GSM' if axis == 3 else 'GTA'})",
                    params=f"N={N} C={C} T={T} V={V} heads={heads} axis={axis}",
                    flops=flops,
                    skelang=step(skelang.ops.axis_attention),
                    reference=step(skelang.reference.axis_attention),
                    peer=step(torch.ops.skelang.axis_attention.default),
                    peer_name="recomputing backward",
                )
            )
    return out


def model_cases(config: dict, device: torch.device) -> list[Case]:
    out = []
    precisions = config.get("precisions", [])
    if "bf16" in precisions and not config.get("quick") and native_bfloat16(device) is False:
        # emulated bfloat16 (4.6x slower than fp32 on an AVX2 EPYC): an NTU-shape step takes minutes
        print("bench encoder: bf16 cases skipped: this device has no native bfloat16", file=sys.stderr)
        precisions = [precision for precision in precisions if precision != "bf16"]
    for shape in config["shapes"]:
        N, T, layout, M, classes = shape["N"], shape["T"], shape["layout"], shape["M"], shape["classes"]
        V = get_layout(layout).num_joints
        x = torch.randn(N, 3, T, V, M, device=device)
        labels = torch.randint(0, classes, (N,), device=device)
        for entry in config["models"]:  # a model type, or {name, type, other model keys}
            entry = {"name": entry, "type": entry} if isinstance(entry, str) else dict(entry)
            kind = entry.pop("name")
            model_config = {**entry, **config.get("model", {})}
            models = {}
            for backend in ("cpp", "reference"):
                torch.manual_seed(0)
                if backend == "reference":  # the reference keeps what autograd keeps, as CTR-GCN's code does
                    model_config = {**model_config, "recompute_attention": False}
                models[backend] = build_model({**model_config, "backend": backend}, 3, classes, layout, M).to(device)
            gflops = profile(model_config, 3, classes, layout, T, M)["gflops"]
            params = f"{shape['name']} N={N} T={T} V={V} M={M}"
            flops = 3 * gflops * 1e9 * N  # forward, and backward at about twice its work
            out.append(
                Case(
                    name=f"{kind} training step",
                    params=params,
                    flops=flops,
                    skelang=_model_step(models["cpp"], x, labels),
                    reference=_model_step(models["reference"], x, labels),
                    samples=N,
                )
            )
            # mixed precision: skelang's path in bf16 against the plain-PyTorch model in float32
            # (what the CTR-GCN code base runs) and in bf16 (the peer column)
            for precision in precisions:
                dtype = PRECISION_DTYPES[precision]
                out.append(
                    Case(
                        name=f"{kind} training step {precision}",
                        params=params + f"; ref fp32, peer ref {precision}",
                        flops=flops,
                        skelang=_model_step(models["cpp"], x, labels, dtype),
                        reference=_model_step(models["reference"], x, labels),
                        samples=N,
                        peer=_model_step(models["reference"], x, labels, dtype),
                        peer_name=f"reference {precision}",
                    )
                )
    return out


def cases(config: dict, device: torch.device) -> list[Case]:
    mode = "quick" if config["quick"] else "full"
    return (
        composite_cases(OPS["composite_aggregate"].bench[mode], device)
        + axis_attention_cases(OPS["axis_attention"].bench[mode], device)
        + model_cases(config, device)
    )
