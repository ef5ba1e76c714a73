"""Parameters and GFLOPs per sample of an encoder, and where a training step's time goes
(`skelang model profile [--step N]`)."""

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


@register_flop_formula([torch.ops.skelang.axis_attention, torch.ops.skelang.axis_attention_with_probs])
def _axis_attention_flops(qkv_shape, bias_shape, heads, axis, *args, **kwargs) -> int:
    N, C3, T, V = qkv_shape
    L = V if axis == 3 else T
    return 2 * 2 * N * (C3 // 3) * T * V * L  # scores q k^T, then P v


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


def step_profile(
    config: dict,
    batch_size: int = 16,
    in_channels: int = 3,
    num_classes: int = 60,
    layout: str = "ntu25",
    num_frames: int = 64,
    num_bodies: int = 2,
    steps: int = 2,
    top: int = 15,
    device: str | torch.device = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """Where a training step's time goes, by torch.profiler: `steps` forward + backward passes
    of a random batch (batch_size, in_channels, num_frames, V, num_bodies) with cross-entropy,
    after one untimed pass; the forward under torch.autocast in `autocast_dtype` if given
    (torch.bfloat16, as `train.precision: bf16` trains; torch.float16 on CUDA). Returns
    {"step_ms": the mean wall time of a profiled step (the profiler adds a little), "ops": the
    `top` operators by self time, each {"op", "self_ms" and "calls" per step, "percent" of all
    operators' self time}}. On CUDA the times are the operators' CPU-side (launch) times; read
    the GPU's with torch.profiler directly."""
    import time

    from skelang.encoder.hglnet import build_model

    if batch_size < 1 or steps < 1 or top < 1:
        raise ValueError(f"batch_size, steps and top must be positive, got {batch_size}, {steps}, {top}")
    device = torch.device(device)
    model = build_model(config, in_channels, num_classes, layout, num_bodies).to(device).train()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, in_channels, num_frames, get_layout(layout).num_joints, num_bodies, generator=generator)
    labels = torch.randint(num_classes, (batch_size,), generator=generator)
    x, labels = x.to(device), labels.to(device)

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # untimed: first-call allocations and kernel choices
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        seconds = (time.perf_counter() - started) / steps
    events = [event for event in profiler.key_averages() if event.self_cpu_time_total > 0]
    total = sum(event.self_cpu_time_total for event in events)
    events.sort(key=lambda event: event.self_cpu_time_total, reverse=True)
    ops = [
        {
            "op": event.key,
            "self_ms": event.self_cpu_time_total / 1e3 / steps,
            "percent": 100 * event.self_cpu_time_total / total,
            "calls": event.count // steps,
        }
        for event in events[:top]
    ]
    return {"step_ms": seconds * 1e3, "ops": ops}
