"""SSF's ops, forward + backward: the fused contrastive alignment loss (tiles, running
log-sum-exp) against cross-entropy over the whole N x M logits, and cross-modal attention
(SDPA from C++) against explicit softmax attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from harness import Case

import skelang.ops
import skelang.reference
from skelang.ops.registry import OPS


def _loss_step(fn, skeleton, text, labels, log_scale):
    def step():
        loss = fn(skeleton, text, labels, log_scale)
        torch.autograd.grad(loss, (skeleton, text, log_scale))

    return step


def _attention_step(fn, query, key, value, mask, heads, grad):
    def step():
        torch.autograd.grad(fn(query, key, value, mask, heads), (query, key, value), grad)

    return step


def cases(config: dict, device: torch.device) -> list[Case]:
    out = []
    mode = "quick" if config["quick"] else "full"
    contrastive = OPS["contrastive_alignment_loss"].bench[mode]
    D = contrastive["dim"]
    for N, M in contrastive["shapes"]:
        skeleton = F.normalize(torch.randn(N, D, device=device), dim=1).requires_grad_()
        text = F.normalize(torch.randn(M, D, device=device), dim=1).requires_grad_()
        labels = torch.randint(0, M, (N,), device=device)
        log_scale = torch.tensor([2.6], device=device, requires_grad=True)
        out.append(
            Case(
                name="contrastive_alignment_loss fwd+bwd",
                params=f"N={N} M={M} D={D}",
                flops=3 * 2 * N * M * D,
                skelang=_loss_step(skelang.ops.contrastive_alignment_loss, skeleton, text, labels, log_scale),
                reference=_loss_step(skelang.reference.contrastive_alignment_loss, skeleton, text, labels, log_scale),
            )
        )
    attention = OPS["cross_modal_attention"].bench[mode]
    N, Lq, Lk, E, heads = attention["N"], attention["steps"], attention["tokens"], attention["dim"], attention["heads"]
    query = torch.randn(N, Lq, E, device=device, requires_grad=True)
    key = torch.randn(1, Lk, E, device=device, requires_grad=True)
    value = torch.randn(1, Lk, E, device=device, requires_grad=True)
    mask = torch.rand(1, Lk, device=device) > 0.2
    grad = torch.randn(N, Lq, E, device=device)
    out.append(
        Case(
            name="cross_modal_attention fwd+bwd",
            params=f"N={N} steps={Lq} tokens={Lk} E={E} heads={heads}",
            flops=3 * 4 * N * Lq * Lk * E,
            skelang=_attention_step(skelang.ops.cross_modal_attention, query, key, value, mask, heads, grad),
            reference=_attention_step(skelang.reference.cross_modal_attention, query, key, value, mask, heads, grad),
        )
    )
    return out
