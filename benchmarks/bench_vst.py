"""VST's quantizer in training mode (nearest-code search, code statistics, EMA update,
commitment loss): skelang's C++ ops against the same module on its pure-PyTorch reference
(cdist + argmin + bincount + index_add) and against vector-quantize-pytorch's
VectorQuantize (EMA, no k-means, no dead-code revival on either side), where installed."""

from __future__ import annotations

import importlib.util

import torch
from harness import Case

from skelang.ops.registry import OPS
from skelang.vst.quantizer import VectorQuantizer


def _step(quantizer, x):
    def step():
        with torch.no_grad():
            quantizer(x)

    return step


def cases(config: dict, device: torch.device) -> list[Case]:
    out = []
    config = OPS["nearest_code"].bench["quick" if config["quick"] else "full"]
    N = config["N"]
    has_peer = importlib.util.find_spec("vector_quantize_pytorch") is not None
    for D in config["dims"]:
        for K in config["codes"]:
            x = torch.randn(N, D, device=device)
            quantizers = {
                backend: VectorQuantizer(K, D, kmeans_init=False, dead_threshold=0.0, backend=backend)
                .to(device)
                .train()
                for backend in ("cpp", "reference")
            }
            peer = None
            if has_peer:
                from vector_quantize_pytorch import VectorQuantize

                vq = (
                    VectorQuantize(dim=D, codebook_size=K, decay=0.99, commitment_weight=0.25, kmeans_init=False)
                    .to(device)
                    .train()
                )
                peer = _step(vq, x[None])  # (1, N, D)
            out.append(
                Case(
                    name="quantizer step (search + EMA)",
                    params=f"N={N} D={D} K={K}",
                    flops=2 * N * K * D,  # the distance products
                    skelang=_step(quantizers["cpp"], x),
                    reference=_step(quantizers["reference"], x),
                    peer=peer,
                    peer_name="vector-quantize-pytorch" if has_peer else "",
                )
            )
    return out
