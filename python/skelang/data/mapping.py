"""Skeletons from one layout to another: each target joint a weighted mean of source joints.

    map_layout(sequence, "ntu25")     a blazepose33 Sequence (from a video) as NTU RGB+D's joints

Mappings (source joint names, weights summing to 1), from BlazePose's 33 landmarks:

ntu25 (Kinect v2)             kinect_v1_20 (NW-UCLA)       from blazepose33
spine_base                    hip_centre                   mean of the hips
spine_shoulder                shoulder_centre              mean of the shoulders
spine_middle                  spine (at 1/2; Kinect v1's   mean of hip and shoulder centres
                              spine joint sits low: 1/3)   (v1: 2/3 hips + 1/3 shoulders)
neck                          -                            2/3 shoulder centre + 1/3 mouth centre
head                          head                         mean of the ears
left/right_shoulder, _elbow, _wrist, _hip, _knee, _ankle   the same joints
left/right_hand               left/right_hand              mean of wrist, index and pinky
left/right_hand_tip           -                            index
left/right_thumb              -                            thumb
left/right_foot               left/right_foot              foot index (the toes)

Kinect places the spine, neck and head joints inside the body and BlazePose's on its surface
(the ears, the mouth): the derived joints are approximations, close enough for a model trained
on Kinect skeletons to read a video's (tested by the mapping's joint names and geometry).
"""

from __future__ import annotations

import numpy as np

from skelang.data.layouts import get_layout
from skelang.data.sequence import Sequence

_SIDES = ("left", "right")
_SAME = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")


def _blazepose_common() -> dict[str, dict[str, float]]:
    mapping = {}
    for side in _SIDES:
        for joint in _SAME:
            mapping[f"{side}_{joint}"] = {f"{side}_{joint}": 1.0}
        mapping[f"{side}_hand"] = {f"{side}_wrist": 1 / 3, f"{side}_index": 1 / 3, f"{side}_pinky": 1 / 3}
        mapping[f"{side}_foot"] = {f"{side}_foot_index": 1.0}
    return mapping


HIPS = {"left_hip": 0.5, "right_hip": 0.5}
SHOULDERS = {"left_shoulder": 0.5, "right_shoulder": 0.5}
EARS = {"left_ear": 0.5, "right_ear": 0.5}

MAPPINGS: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    ("blazepose33", "ntu25"): {
        **_blazepose_common(),
        "spine_base": HIPS,
        "spine_shoulder": SHOULDERS,
        "spine_middle": {"left_hip": 0.25, "right_hip": 0.25, "left_shoulder": 0.25, "right_shoulder": 0.25},
        "neck": {"left_shoulder": 1 / 3, "right_shoulder": 1 / 3, "mouth_left": 1 / 6, "mouth_right": 1 / 6},
        "head": EARS,
        "left_hand_tip": {"left_index": 1.0},
        "right_hand_tip": {"right_index": 1.0},
        "left_thumb": {"left_thumb": 1.0},
        "right_thumb": {"right_thumb": 1.0},
    },
    ("blazepose33", "kinect_v1_20"): {
        **_blazepose_common(),
        "hip_centre": HIPS,
        "shoulder_centre": SHOULDERS,
        "spine": {"left_hip": 1 / 3, "right_hip": 1 / 3, "left_shoulder": 1 / 6, "right_shoulder": 1 / 6},
        "head": EARS,
    },
}


def layout_mapping(source: str, target: str) -> np.ndarray:
    """(V_target, V_source) weights: target joint j = sum_i W[j, i] x source joint i. The
    identity for source == target; a ValueError lists the known mappings otherwise."""
    source_layout, target_layout = get_layout(source), get_layout(target)
    if source == target:
        return np.eye(len(source_layout.joint_names), dtype=np.float32)
    if (source, target) not in MAPPINGS:
        known = ", ".join(f"{a} -> {b}" for a, b in MAPPINGS)
        raise ValueError(f"no mapping from layout {source} to {target} (known: {known})")
    mapping = MAPPINGS[(source, target)]
    index = {name: i for i, name in enumerate(source_layout.joint_names)}
    weights = np.zeros((len(target_layout.joint_names), len(source_layout.joint_names)), dtype=np.float32)
    for j, name in enumerate(target_layout.joint_names):
        for source_name, weight in mapping[name].items():
            weights[j, index[source_name]] = weight
    return weights


def map_layout(sequence: Sequence, target: str) -> Sequence:
    """`sequence` in the `target` layout (see the module's documentation). Coordinates are
    mapped as points; a 2D sequence's third channel (the score) becomes the smallest score of
    the joints a target joint is made of. Absent bodies stay zeros."""
    weights = layout_mapping(sequence.layout, target)
    data = np.einsum("ji,ctim->ctjm", weights, sequence.data).astype(np.float32)
    if sequence.meta.get("coordinates") == "xy" and sequence.data.shape[0] == 3:
        scores = sequence.data[2]  # (T, V, M)
        used = weights > 0
        data[2] = np.stack([scores[:, used[j]].min(axis=1) for j in range(len(weights))], axis=1)
    return Sequence(data, target, sequence.label, {**sequence.meta, "mapped_from": sequence.layout})
