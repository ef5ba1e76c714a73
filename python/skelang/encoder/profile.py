"""Parameters and GFLOPs per sample of an encoder (`skelang model profile`)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from skelang.data.layouts import get_layout


@register_flop_formula(torch.ops.skelang.graph_aggregate)
def _graph_aggregate_flops(x_shape, A_shape, *args, **kwargs) -> int:
    N, C, T, V = x_shape
    return 2 * N * C * T * V * V


@register_flop_formula(torch.ops.skelang.composite_aggregate)
def _composite_aggregate_flops(x_shape, phi_shape, *args, **kwargs) -> int:
    N, K, C, T, V = x_shape
    R = phi_shape[2]
    return 2 * N * K * C * R * V * V + 2 * N * K * C * T * V * V  # topologies, then aggregation


def profile(
    config: dict,
    in_channels: int = 3,
    num_classes: int = 60,
    layout: str = "ntu25",
    num_frames: int = 64,
    num_bodies: int = 2,
) -> dict:
    """{"parameters", "gflops"} of one sample's forward pass (multiply-adds count 2)."""
    from skelang.encoder.hglnet import build_model

    model = build_model(config, in_channels, num_classes, layout, num_bodies).eval()
    x = torch.zeros(1, in_channels, num_frames, get_layout(layout).num_joints, num_bodies)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return {"parameters": sum(p.numel() for p in model.parameters()), "gflops": counter.get_total_flops() / 1e9}
