"""Pure-numpy references of the C++ skeleton geometry (skelang._C.present_frames,
normalize_skeleton, resample_frames, apply_linear_transform, minmax_scale, compute_stream),
written for clarity; the tests compare the two. x is (C, T, V, M) throughout. In 2D data
(coordinates 2: x, y, score) a joint with score 0 is undetected and stays zero."""

from __future__ import annotations

import numpy as np


def _present(x: np.ndarray) -> np.ndarray:
    """(T, M) whether each body has a non-zero coordinate in each frame."""
    return np.any(x != 0, axis=(0, 2))


def _detected(x: np.ndarray, coordinates: int) -> np.ndarray:
    """(T, V, M) whether each joint's body is present and (2D) the joint has a positive score."""
    present = np.broadcast_to(_present(x)[:, None, :], x.shape[1:])
    return present & (x[2] > 0) if coordinates == 2 else present.copy()


def present_frames(x):
    return np.flatnonzero(_present(x).any(axis=1))


def normalize_skeleton(
    x, centre, spine_lower, spine_upper, left_shoulder, right_shoulder, rotate=True, scale=False, coordinates=3
):
    detected = _detected(x, coordinates)
    if coordinates == 2:  # x y score: z = 0, never rotated
        padded = np.concatenate([x[:2], np.zeros_like(x[:1])], axis=0)
        out, _ = _normalize(
            padded, centre, spine_lower, spine_upper, left_shoulder, right_shoulder, False, scale, detected, _present(x)
        )
        return np.concatenate([out[:2], x[2:]], axis=0), np.eye(3, dtype=np.float32)
    return _normalize(
        x, centre, spine_lower, spine_upper, left_shoulder, right_shoulder, rotate, scale, detected, _present(x)
    )


def _normalize(x, centre, spine_lower, spine_upper, left_shoulder, right_shoulder, rotate, scale, detected, present):
    x = x.astype(np.float64).copy()
    frames = np.flatnonzero(present[:, 0])
    if len(frames) == 0:
        return x.astype(np.float32), np.eye(3, dtype=np.float32)
    seen = detected[:, :, 0]  # (T, V) of body 0
    body = x[:3, :, :, 0]  # (3, T, V)
    spine_frames = frames[seen[frames, spine_upper] & seen[frames, spine_lower]]
    spine = body[:, spine_frames, spine_upper] - body[:, spine_frames, spine_lower]  # (3, K)
    up = spine.sum(1)
    shoulder_frames = frames[seen[frames, left_shoulder] & seen[frames, right_shoulder]]
    across = (body[:, shoulder_frames, left_shoulder] - body[:, shoulder_frames, right_shoulder]).sum(1)
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
    mean_length = np.linalg.norm(spine, axis=0).mean() if spine.shape[1] else 0.0
    factor = 1.0 / mean_length if scale and mean_length > 1e-6 else 1.0
    centre_frames = frames[seen[frames, centre]]
    if len(centre_frames):
        origin = body[:, centre_frames[0], centre]
    else:  # the centre joint is never seen: the mean of the first frame's detected joints
        visible = seen[frames[0]]
        origin = body[:, frames[0], visible].mean(1) if visible.any() else np.zeros(3)
    moved = np.einsum("ij,jtvm->itvm", factor * rotation, x[:3] - origin[:, None, None, None])
    x[:3] = np.where(detected[None], moved, x[:3])
    return x.astype(np.float32), rotation.astype(np.float32)


def resample_frames(x, start, step, num_frames, coordinates=3):
    T = x.shape[1]
    detected = _detected(x, coordinates)
    out = np.empty((x.shape[0], num_frames) + x.shape[2:], dtype=np.float32)
    for i in range(num_frames):
        position = min(max(start + i * step, 0.0), T - 1)
        lower = int(np.floor(position))
        upper = min(lower + 1, T - 1)
        w = position - lower
        out[:, i] = x[:, lower] + np.float32(w) * (x[:, upper] - x[:, lower])
        if position != lower:
            nearest = lower if w < 0.5 else upper
            blended = detected[lower] & detected[upper]  # (V, M)
            out[:, i] = np.where(blended, out[:, i], x[:, nearest])
    return out


def minmax_scale(x, coordinates=3):
    detected = _detected(x, coordinates)
    out = x.copy()
    for c in range(coordinates):
        values = x[c][detected]
        if values.size == 0:
            continue
        low, high = values.min(), values.max()
        scaled = 2 * (x[c] - low) / (high - low) - 1 if high > low else np.zeros_like(x[c])
        out[c] = np.where(detected, scaled, x[c])
    return out.astype(np.float32)


def apply_linear_transform(x, matrix):
    out = x.copy()
    out[:3] = np.einsum("ij,jtvm->itvm", matrix, x[:3])
    return out


def compute_stream(x, stream, parents, centre, coordinates=3):
    parents = np.asarray(parents)
    detected = _detected(x, coordinates)  # (T, V, M)
    parent = np.maximum(parents, 0)
    bone_seen = detected & detected[:, parent] & (parents >= 0)[None, :, None]
    bone = np.where(bone_seen[None], x - x[:, :, parent], 0.0)

    def motion(a, seen):
        m = np.zeros_like(a)
        m[:, :-1] = a[:, 1:] - a[:, :-1]
        m[:, :-1] *= (seen[1:] & seen[:-1])[None]
        return m

    # A bone's motion needs both of its joints in both frames (the root's bone is zero anyway).
    bone_joints_seen = detected & np.where((parents >= 0)[None, :, None], detected[:, parent], True)

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
        out = motion(x, detected)
    elif stream == "bone_motion":
        out = motion(bone, bone_joints_seen)
    elif stream == "joint_local":
        out = np.where((detected & detected[:, [centre]])[None], x - x[:, :, [centre]], 0.0)
    else:
        raise ValueError(f"unknown stream {stream}")
    out[coordinates:] = x[coordinates:]
    out *= detected[None]
    return out.astype(np.float32)
