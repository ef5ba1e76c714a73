"""Pure-numpy references of the C++ skeleton geometry (skelang._C.present_frames,
normalize_skeleton, resample_frames, apply_linear_transform, compute_stream), written for
clarity; the tests compare the two. x is (C, T, V, M) throughout."""

from __future__ import annotations

import numpy as np


def _present(x: np.ndarray) -> np.ndarray:
    """(T, M) whether each body has a non-zero coordinate in each frame."""
    return np.any(x != 0, axis=(0, 2))


def present_frames(x):
    return np.flatnonzero(_present(x).any(axis=1))


def normalize_skeleton(x, centre, spine_lower, spine_upper, left_shoulder, right_shoulder,
                       rotate=True, scale=False, coordinates=3):
    if coordinates == 2:  # x y score: pad z = 0, never rotate
        padded = np.concatenate([x[:2], np.zeros_like(x[:1])], axis=0)
        out, _ = normalize_skeleton(padded, centre, spine_lower, spine_upper, left_shoulder,
                                    right_shoulder, False, scale)
        present = _present(x)[None, :, None, :]
        return np.concatenate([np.where(present, out[:2], x[:2]), x[2:]], axis=0), np.eye(3, dtype=np.float32)
    x = x.astype(np.float64).copy()
    present = _present(x)
    frames = np.flatnonzero(present[:, 0])
    if len(frames) == 0:
        return x.astype(np.float32), np.eye(3, dtype=np.float32)
    body = x[:3, :, :, 0][:, frames]  # (3, K, V)
    spine = body[:, :, spine_upper] - body[:, :, spine_lower]  # (3, K)
    up = spine.sum(1)
    across = (body[:, :, left_shoulder] - body[:, :, right_shoulder]).sum(1)
    rotation = np.eye(3)
    if rotate and np.linalg.norm(up) > 1e-6:
        y_axis = up / np.linalg.norm(up)
        x_axis = across - across @ y_axis * y_axis
        if np.linalg.norm(x_axis) < 1e-6:
            x_axis = np.array([1.0, 0, 0]) - y_axis[0] * y_axis
            if np.linalg.norm(x_axis) < 1e-6:
                x_axis = np.array([0, 0, 1.0]) - y_axis[2] * y_axis
        x_axis /= np.linalg.norm(x_axis)
        rotation = np.stack([x_axis, y_axis, np.cross(x_axis, y_axis)])
    mean_length = np.linalg.norm(spine, axis=0).mean()
    factor = 1.0 / mean_length if scale and mean_length > 1e-6 else 1.0
    origin = x[:3, frames[0], centre, 0]
    moved = np.einsum("ij,jtvm->itvm", factor * rotation, x[:3] - origin[:, None, None, None])
    x[:3] = np.where(present[None, :, None, :], moved, x[:3])
    return x.astype(np.float32), rotation.astype(np.float32)


def resample_frames(x, start, step, num_frames):
    T = x.shape[1]
    present = _present(x)
    out = np.empty((x.shape[0], num_frames) + x.shape[2:], dtype=np.float32)
    for i in range(num_frames):
        position = min(max(start + i * step, 0.0), T - 1)
        lower = int(np.floor(position))
        upper = min(lower + 1, T - 1)
        w = position - lower
        out[:, i] = x[:, lower] + np.float32(w) * (x[:, upper] - x[:, lower])
        if position != lower:
            nearest = lower if w < 0.5 else upper
            for m in range(x.shape[3]):
                if not (present[lower, m] and present[upper, m]):
                    out[:, i, :, m] = x[:, nearest, :, m]
    return out


def apply_linear_transform(x, matrix):
    out = x.copy()
    out[:3] = np.einsum("ij,jtvm->itvm", matrix, x[:3])
    return out


def compute_stream(x, stream, parents, centre, coordinates=3):
    parents = np.asarray(parents)
    present = _present(x)
    bone = np.where((parents < 0)[None, None, :, None], 0.0, x - x[:, :, np.maximum(parents, 0)])

    def motion(a):
        m = np.zeros_like(a)
        m[:, :-1] = a[:, 1:] - a[:, :-1]
        m[:, :-1] *= present[None, 1:, None, :]
        return m

    if stream == "joint":
        out = x.copy()
    elif stream == "bone":
        out = bone
    elif stream == "bone_direction":
        D = coordinates
        length = np.linalg.norm(bone[:D], axis=0, keepdims=True)
        out = bone.copy()
        out[:D] = np.where(length > 1e-6, bone[:D] / np.where(length > 1e-6, length, 1), bone[:D])
    elif stream == "joint_motion":
        out = motion(x)
    elif stream == "bone_motion":
        out = motion(bone)
    elif stream == "joint_local":
        out = x - x[:, :, [centre]]
    else:
        raise ValueError(f"unknown stream {stream}")
    out[coordinates:] = x[coordinates:]
    out *= present[None, :, None, :]
    return out.astype(np.float32)
