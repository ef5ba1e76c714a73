"""Motion decoder for VST: maps a code vector back to a short clip of joint positions.

Training it to reconstruct each segment's motion from its quantized vector grounds every code
in kinematics, so that the code glossary can describe what a code's decoded clip does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MotionDecoder(nn.Module):
    """MLP from a code vector (D,) to a clip (C, L, V) of `segment_length` frames."""

    def __init__(self, code_dim: int, segment_length: int, num_joints: int, coordinates: int = 3, hidden: int = 256):
        super().__init__()
        for name, value in (
            ("code_dim", code_dim),
            ("segment_length", segment_length),
            ("num_joints", num_joints),
            ("coordinates", coordinates),
            ("hidden", hidden),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.code_dim = code_dim
        self.clip_shape = (coordinates, segment_length, num_joints)  # (C, L, V)
        self.mlp = nn.Sequential(
            nn.Linear(code_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, math.prod(self.clip_shape)),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, S, D) or (N, D) -> motion (N, S, C, L, V) or (N, C, L, V)."""
        if z.ndim not in (2, 3) or z.shape[-1] != self.code_dim:
            raise ValueError(f"z must have shape (N, S, {self.code_dim}) or (N, {self.code_dim}), got {tuple(z.shape)}")
        return self.mlp(z).reshape(*z.shape[:-1], *self.clip_shape)

    def reconstruction_loss(self, z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean squared error between the decoded motion and `target` of the same shape."""
        motion = self(z)
        if target.shape != motion.shape:
            raise ValueError(f"target must have the decoded shape {tuple(motion.shape)}, got {tuple(target.shape)}")
        return F.mse_loss(motion, target)


def segment_targets(x: torch.Tensor, length: int) -> torch.Tensor:
    """x (N, C, T, V) joint positions -> (N, S, C, L, V) clips of L = `length` frames,
    S = ceil(T / length); the last clip is padded by repeating the last frame."""
    if x.ndim != 4 or x.shape[2] < 1:
        raise ValueError(f"x must have shape (N, C, T, V) with T >= 1, got {tuple(x.shape)}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    N, C, T, V = x.shape
    S = math.ceil(T / length)
    pad = x[:, :, -1:].expand(N, C, S * length - T, V)
    clips = torch.cat([x, pad], dim=2).reshape(N, C, S, length, V)
    return clips.permute(0, 2, 1, 3, 4)  # (N, S, C, L, V)
