"""NTU RGB+D 60/120 raw `.skeleton` files: parsing (C++), NTU's standard body denoising,
sample names, and the official list of samples with missing skeletons.

The parser is skelang._C.parse_ntu_skeleton; skelang.reference.parse_ntu_skeleton is its
pure-Python twin.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from skelang import _C
from skelang.data.sequence import BEYOND_FLOAT32, MissingSkeletonError, Sequence, within_float32

SkeletonParseError = _C.SkeletonParseError

NTU_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")

# Denoising thresholds of the NTU RGB+D code bases (get_raw_denoised_data.py in
# CTR-GCN/2s-AGCN): bodies seen for at most 11 frames are noise; a body whose x-spread
# exceeds 0.8 times its y-spread in at least 69.754% of its frames is not a person.
NOISE_LENGTH_FRAMES = 11
NOISE_SPREAD_RATIO = 0.8
NOISE_SPREAD_FRAMES = 0.69754


# What NTU RGB+D 120 names hold (Liu et al., TPAMI 2019): setups S001-S032, cameras C001-C003,
# performers P001-P106, replications R001-R002, actions A001-A120. Splits and labels are
# defined over these only (A000 would become label -1, P107 a test subject of no split).
NTU_NAME_RANGES = {"setup": 32, "camera": 3, "subject": 106, "replication": 2, "action": 120}


def parse_ntu_name(name: str) -> dict[str, int]:
    """'S001C002P003R002A013' (any prefix/suffix) -> setup, camera, subject, replication,
    action (1-based, as in the name). A ValueError when there is no such name, or when a
    field is outside NTU RGB+D 120's range (NTU_NAME_RANGES)."""
    match = NTU_NAME.search(Path(name).name)
    if match is None:
        raise ValueError(f"{name}: not an NTU RGB+D sample name (expected SsssCcccPpppRrrrAaaa)")
    fields = dict(zip(NTU_NAME_RANGES, (int(g) for g in match.groups()), strict=True))
    for field, largest in NTU_NAME_RANGES.items():
        if not 1 <= fields[field] <= largest:
            letter = "SCPRA"[list(NTU_NAME_RANGES).index(field)]
            raise ValueError(
                f"{name}: {field} {letter}{fields[field]:03d} is outside NTU RGB+D 120's "
                f"{letter}001-{letter}{largest:03d}"
            )
    return fields


def parse_ntu_skeleton(path: str | Path) -> dict:
    """The raw records of a .skeleton file (see skelang._C.parse_ntu_skeleton)."""
    return _C.parse_ntu_skeleton(str(path))


def official_body_arrays(parsed: dict) -> dict[str, np.ndarray]:
    """What NTU's own converter (txt2npy) stores: skel_body{k} (F, 25, 3) float64 holds the
    k-th body listed in each frame (zeros where a frame lists fewer), and nbodys (F,)."""
    F = parsed["num_frames"]
    joints = parsed["joints"]
    slot = _slot_in_frame(parsed)
    out = {"nbodys": parsed["bodies_per_frame"].astype(np.int64)}
    for k in range(int(parsed["bodies_per_frame"].max(initial=0))):
        body = np.zeros((F, joints.shape[1], 3))
        records = slot == k
        body[parsed["body_frame"][records]] = joints[records, :, :3]
        out[f"skel_body{k}"] = body
    return out


def _slot_in_frame(parsed: dict) -> np.ndarray:
    """(B,) the position of each body record within its frame."""
    frame = parsed["body_frame"]
    first_of_frame = np.searchsorted(frame, frame, side="left")
    return np.arange(len(frame)) - first_of_frame


def _bodies_by_id(parsed: dict) -> list[dict]:
    """One entry per tracking id in order of first appearance: its frames (K,) and joints (K, V, 3)."""
    ids = parsed["body_id"]
    bodies = []
    for body_id in dict.fromkeys(ids.tolist()):
        records = np.flatnonzero(ids == body_id)
        joints = parsed["joints"][records, :, :3]
        bodies.append(
            {
                "id": body_id,
                "frames": parsed["body_frame"][records],
                "joints": joints,
                "motion": float(np.var(joints.reshape(-1, 3), axis=0).sum()),
            }
        )
    return bodies


def _spread_noise_ratio(joints: np.ndarray) -> tuple[float, np.ndarray]:
    """Fraction of frames where the body is wider (x) than 0.8 x its height (y), and the
    boolean mask of the other (valid) frames."""
    x_spread = np.ptp(joints[:, :, 0], axis=1)
    y_spread = np.ptp(joints[:, :, 1], axis=1)
    valid = x_spread <= NOISE_SPREAD_RATIO * y_spread
    return 1.0 - valid.mean(), valid


def denoise_bodies(parsed: dict) -> list[dict]:
    """NTU's standard body selection: drop bodies seen for at most 11 frames, then bodies
    that are mostly wider than tall (unless one body is left), and order the rest by motion
    (the variance of their joints, measured on valid frames), most moving first."""
    bodies = _bodies_by_id(parsed)
    long_enough = [b for b in bodies if len(b["frames"]) > NOISE_LENGTH_FRAMES]
    if len(long_enough) <= 1:
        return long_enough
    bodies = long_enough
    kept = []
    for index, body in enumerate(bodies):
        remaining = len(kept) + len(bodies) - index
        if remaining == 1:
            kept.append(body)
            continue
        ratio, valid = _spread_noise_ratio(body["joints"])
        if ratio >= NOISE_SPREAD_FRAMES:
            continue
        if ratio > 0:
            valid_motion = float(np.var(body["joints"][valid].reshape(-1, 3), axis=0).sum())
            body = {**body, "motion": min(body["motion"], valid_motion)}
        kept.append(body)
    return sorted(kept, key=lambda b: b["motion"], reverse=True)


def assign_actors(bodies: list[dict], num_frames: int, num_joints: int = 25) -> np.ndarray:
    """Place denoised bodies into two actor slots: (F, 2, V, 3).

    The most moving body is actor 1; each further body joins actor 1 if their frame spans
    do not overlap (a track that was split), else actor 2 if it does not overlap actor 2's
    span, else it is dropped. As in the NTU code bases, actor 2's span starts as (0, 0), so
    it always reaches back to frame 0 once used.
    """
    actors = np.zeros((num_frames, 2, num_joints, 3))
    if not bodies:
        return actors
    first = bodies[0]
    actors[first["frames"], 0] = first["joints"]
    spans = [(int(first["frames"][0]), int(first["frames"][-1])), (0, 0)]
    for body in bodies[1:]:
        start, end = int(body["frames"][0]), int(body["frames"][-1])
        for slot in (0, 1):
            slot_start, slot_end = spans[slot]
            if min(slot_end, end) - max(slot_start, start) <= 0:
                actors[body["frames"], slot] = body["joints"]
                spans[slot] = (min(slot_start, start), max(slot_end, end))
                break
    return actors


def read_ntu_skeleton(path: str | Path, denoise: bool = True, drop_empty_frames: bool = True) -> Sequence:
    """An NTU .skeleton file as a Sequence (3, T, 25, 2) in metres, label = action - 1.

    With `denoise`, NTU's standard body selection keeps at most two people (see
    denoise_bodies and assign_actors); without it, the first two bodies listed in each
    frame. Frames where no body is kept are dropped with `drop_empty_frames`. A file with no
    body in any frame raises MissingSkeletonError (a ValueError naming the file).
    """
    path = Path(path)
    name = parse_ntu_name(str(path))  # a ValueError naming the file
    parsed = parse_ntu_skeleton(path)
    F, V = parsed["num_frames"], parsed["joints"].shape[1]
    if len(parsed["body_id"]) == 0:
        raise MissingSkeletonError(
            f"{path}: no body in any of its {F} frames (NTU lists such samples in samples_with_missing_skeletons.txt)"
        )
    if denoise:
        bodies = denoise_bodies(parsed)
        if not bodies:  # every body was shorter than the noise threshold: keep the longest
            bodies = sorted(_bodies_by_id(parsed), key=lambda b: len(b["frames"]), reverse=True)[:1]
        actors = assign_actors(bodies, F, V)
    else:
        official = official_body_arrays(parsed)
        actors = np.zeros((F, 2, V, 3))
        for k in range(min(2, len(official) - 1)):
            actors[:, k] = official[f"skel_body{k}"]
    if drop_empty_frames:
        actors = actors[np.abs(actors).reshape(F, -1).sum(1) > 0]
    if not within_float32(actors).all():
        raise ValueError(f"{path}: joint coordinates hold {BEYOND_FLOAT32}")
    data = np.ascontiguousarray(actors.transpose(3, 0, 2, 1), dtype=np.float32)  # (3, T, V, 2)
    return Sequence(
        data=data,
        layout="ntu25",
        label=name["action"] - 1,
        meta={"source": str(path), "name": path.stem.split(".")[0], **name},
    )


def read_missing_skeletons(path: str | Path) -> set[str]:
    """Sample names of NTU's samples_with_missing_skeletons.txt (one per line)."""
    names = set()
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if NTU_NAME.fullmatch(line) is None:
            raise ValueError(f"{path}:{number}: expected a sample name like S001C002P003R002A013, got '{line[:40]}'")
        names.add(line)
    return names
