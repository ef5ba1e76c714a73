"""Temporal segments for VST: split a sequence of encoder features into spans and pool them.

A span is a half-open frame range (start, end). `fixed_segments` cuts spans of equal length;
`adaptive_segments` cuts where the features change most, so that a segment tends to hold one
phase of the motion. `pool_segments` / `pool_fixed` average the features inside each span,
giving one vector per segment for the vector quantizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def fixed_segments(num_frames: int, length: int) -> list[tuple[int, int]]:
    """Consecutive spans [start, end) of `length` frames covering [0, num_frames); the last
    span is shorter when `length` does not divide `num_frames`."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    return [(start, min(start + length, num_frames)) for start in range(0, num_frames, length)]


def adaptive_segments(features: torch.Tensor, num_segments: int, min_length: int = 1) -> list[tuple[int, int]]:
    """At most `num_segments` spans covering [0, T), cut where the features change most.

    features: (T, D). The change at frame t is ||f[t] - f[t-1]||; a boundary at t starts a new
    segment there. Boundaries are taken greedily from the largest change down (ties: earlier
    frame first), skipping one that would leave a segment shorter than `min_length` and
    frames with no change at all, until num_segments - 1 boundaries are placed.
    """
    if features.ndim != 2 or features.shape[0] < 1:
        raise ValueError(f"features must have shape (T, D) with T >= 1, got {tuple(features.shape)}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if min_length < 1:
        raise ValueError(f"min_length must be >= 1, got {min_length}")
    T = features.shape[0]
    change = (features[1:] - features[:-1]).detach().double().norm(dim=1).tolist()  # (T - 1,)
    # Frames 1..T-1, largest change first; Python's sort is stable, so ties keep frame order.
    order = sorted(range(1, T), key=lambda t: -change[t - 1])
    boundaries = [0, T]
    for t in order:
        if len(boundaries) - 1 >= num_segments or change[t - 1] <= 0:
            break
        after = min(b for b in boundaries if b > t)
        before = max(b for b in boundaries if b < t)
        if t - before >= min_length and after - t >= min_length:
            boundaries.append(t)
    boundaries.sort()
    return list(zip(boundaries[:-1], boundaries[1:]))


def pool_segments(features: torch.Tensor, spans: Sequence[tuple[int, int]]) -> torch.Tensor:
    """features (T, D) -> (S, D): the mean feature of each span."""
    if features.ndim != 2:
        raise ValueError(f"features must have shape (T, D), got {tuple(features.shape)}")
    if len(spans) == 0:
        raise ValueError("spans must hold at least one (start, end) span")
    T = features.shape[0]
    for start, end in spans:
        if not 0 <= start < end <= T:
            raise ValueError(f"span ({start}, {end}) must satisfy 0 <= start < end <= T = {T}")
    return torch.stack([features[start:end].mean(dim=0) for start, end in spans])


def pool_fixed(features: torch.Tensor, length: int) -> torch.Tensor:
    """features (N, T, D) -> (N, S, D), S = ceil(T / length): the mean over each fixed span of
    `length` frames; the last, shorter span is averaged over its real frames only."""
    if features.ndim != 3 or features.shape[1] < 1:
        raise ValueError(f"features must have shape (N, T, D) with T >= 1, got {tuple(features.shape)}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    N, T, D = features.shape
    S = math.ceil(T / length)
    padded = torch.nn.functional.pad(features, (0, 0, 0, S * length - T))  # (N, S*L, D), zeros
    sums = padded.reshape(N, S, length, D).sum(dim=2)  # (N, S, D)
    counts = torch.full((S,), float(length), dtype=features.dtype, device=features.device)
    counts[-1] = T - (S - 1) * length
    return sums / counts[:, None]
