"""Code glossary for VST: a short English description of what each code's motion does.

Each used code vector is decoded by the `MotionDecoder` into a clip (C, L, V), and
`describe_motion` describes the clip from its kinematics: which body-part groups move, in which
direction of the performer's own body frame and how fast, and posture facts that hold at the
end of the clip, e.g. "right hand rises quickly; right hand above the head".

Body frame (rows right, up, forward), computed from the clip itself:
  up      = spine lower -> upper, averaged over the clip;
  right   = left shoulder -> right shoulder, averaged, made orthogonal to up;
  forward = up x right, the direction the chest faces: for a performer facing the camera
            (up +y, right +x) it is -z, toward the camera.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from skelang.data.layouts import SkeletonLayout
from skelang.files import write_text_atomic
from skelang.vst.decoder import MotionDecoder
from skelang.vst.narrative import parse_narrative, token_name

# Thresholds. Positions are in normalised metres, speeds in metres per frame.
STILL_SPEED = 0.002  # a group whose mean joint speed is below this is not moving
QUICK_SPEED = 0.015  # at or above: "quickly" (~0.45 m/s at 30 fps); below: "slowly"
RELATIVE_SPEED = 0.5  # report groups at least this fraction as fast as the fastest one
MAX_GROUPS = 3  # report at most this many moving groups
MIN_DISPLACEMENT = 0.03  # net start-to-end shift needed to name a direction
DIRECTION_FRACTION = 0.5  # name each body axis holding at least this share of the largest shift
HANDS_TOGETHER_RATIO = 0.3  # hands closer than this times the shoulder width are "together"
CROUCH_RATIO = 0.7  # hips above the ankles by less than this times the leg length
BEND_RATIO = 0.5  # no legs: head above the hips by less than this times the spine length
LEAN_SINE = 0.35  # spine tilted from the vertical y by more than asin(0.35) ~ 20 degrees

GROUPS = ("head", "torso", "left hand", "right hand", "left leg", "right leg")
_LEG_WORDS = ("knee", "ankle", "foot", "heel", "toe", "leg")
_ARM_WORDS = ("hand", "wrist", "elbow", "thumb", "pinky", "index", "finger", "arm")
_TORSO_WORDS = ("shoulder", "hip", "spine", "belly", "chest", "pelvis")
_HEAD_WORDS = ("head", "neck", "nose", "face", "eye", "ear", "mouth")
# (negative, positive) words for a shift along each body axis: right, up, forward.
_DIRECTION_WORDS = (("to the left", "to the right"), ("lowers", "rises"), ("backward", "forward"))


def body_groups(layout: SkeletonLayout) -> dict[str, list[int]]:
    """Joint indices of each body-part group of `GROUPS` found in the layout's joint names
    (legs, then arms, torso and head are matched in that order); empty groups are left out."""
    groups: dict[str, list[int]] = {group: [] for group in GROUPS}
    for joint, name in enumerate(layout.joint_names):
        name = name.lower()
        side = "left" if "left" in name else "right" if "right" in name else None
        group = None
        if any(word in name for word in _LEG_WORDS):
            group = side and f"{side} leg"
        elif any(word in name for word in _ARM_WORDS):
            group = side and f"{side} hand"
        elif any(word in name for word in _TORSO_WORDS):
            group = "torso"
        elif any(word in name for word in _HEAD_WORDS):
            group = "head"
        if group:
            groups[group].append(joint)
    return {group: joints for group, joints in groups.items() if joints}


def _body_axes(xyz: np.ndarray, layout: SkeletonLayout) -> np.ndarray:
    """(3, 3) unit rows right, up, forward of the body frame (module docstring) of xyz (3, L, V)."""
    lower, upper = layout.spine
    left, right = layout.shoulders
    up = (xyz[:, :, upper] - xyz[:, :, lower]).mean(axis=1)
    up = up / np.linalg.norm(up) if np.linalg.norm(up) > 1e-8 else np.array([0.0, 1.0, 0.0])
    lateral = (xyz[:, :, right] - xyz[:, :, left]).mean(axis=1)
    if np.linalg.norm(lateral) <= 1e-8:
        lateral = np.array([1.0, 0.0, 0.0])
    lateral = lateral - lateral.dot(up) * up
    lateral = lateral / (np.linalg.norm(lateral) + 1e-12)
    return np.stack([lateral, up, np.cross(up, lateral)])


def _named(layout: SkeletonLayout, joints: list[int], words: tuple[str, ...]) -> list[int]:
    """The joints among `joints` whose names contain one of `words`, else all of `joints`."""
    chosen = [j for j in joints if any(w in layout.joint_names[j].lower() for w in words)]
    return chosen or joints


def _motion_phrase(group: str, shift: np.ndarray, speed: float) -> str:
    """e.g. "right hand rises and moves forward and to the left quickly"; shift (3,) in the
    body frame, its axes named from the largest shift down (vertical word first)."""
    largest = np.abs(shift).max()
    if largest < MIN_DISPLACEMENT:
        direction = "moves back and forth"
    else:
        axes = [
            a for a in sorted(range(3), key=lambda a: -abs(shift[a])) if abs(shift[a]) >= DIRECTION_FRACTION * largest
        ]
        words = {a: _DIRECTION_WORDS[a][int(shift[a] > 0)] for a in axes}
        horizontal = " and ".join(words[a] for a in axes if a != 1)
        direction = " and ".join(([words[1]] if 1 in words else []) + ([f"moves {horizontal}"] if horizontal else []))
    return f"{group} {direction} {'quickly' if speed >= QUICK_SPEED else 'slowly'}"


def _posture(
    xyz: np.ndarray, body: np.ndarray, axes: np.ndarray, layout: SkeletonLayout, groups: dict[str, list[int]]
) -> list[str]:
    """Posture facts at the last frame; xyz and body (3, L, V) in camera and body frame."""
    facts = []
    end = body[:, -1]  # (3, V) last frame in the body frame
    hands = {
        side: _named(layout, groups[f"{side} hand"], ("hand", "wrist"))
        for side in ("left", "right")
        if f"{side} hand" in groups
    }
    head = _named(layout, groups["head"], ("head", "nose", "face")) if "head" in groups else []
    if head:
        above = [side for side, joints in hands.items() if end[1, joints].mean() > end[1, head].mean()]
        if len(above) == 2:
            facts.append("both hands above the head")
        elif above:
            facts.append(f"{above[0]} hand above the head")
    left, right = layout.shoulders
    width = np.linalg.norm(xyz[:, :, right] - xyz[:, :, left], axis=0).mean()
    if len(hands) == 2 and width > 1e-8:
        gap = np.linalg.norm(end[:, hands["left"]].mean(axis=1) - end[:, hands["right"]].mean(axis=1))
        if gap < HANDS_TOGETHER_RATIO * width:
            facts.append("hands together")

    legs = []  # (hip, knee, ankle) per side
    for side in ("left", "right"):
        found = [
            next((j for j, n in enumerate(layout.joint_names) if side in n.lower() and word in n.lower()), None)
            for word in ("hip", "knee", "ankle")
        ]
        if None not in found:
            legs.append(found)
    lower, upper = layout.spine
    if legs:
        heights = [
            (end[1, hip] - end[1, ankle])
            / (np.linalg.norm(end[:, hip] - end[:, knee]) + np.linalg.norm(end[:, knee] - end[:, ankle]) + 1e-12)
            for hip, knee, ankle in legs
        ]
        if np.mean(heights) < CROUCH_RATIO:
            facts.append("crouching")
    elif head:
        spine_length = np.linalg.norm(xyz[:, :, upper] - xyz[:, :, lower], axis=0).mean()
        if end[1, head].mean() - end[1, lower] < BEND_RATIO * spine_length:
            facts.append("bending down")

    # Leaning is measured against the data's vertical y, since the body's up leans with it.
    spine = xyz[:, -1, upper] - xyz[:, -1, lower]
    facing = axes[2] * np.array([1.0, 0.0, 1.0])  # forward, made horizontal
    if np.linalg.norm(spine) > 1e-8 and np.linalg.norm(facing) > 1e-8:
        lean = spine.dot(facing) / np.linalg.norm(spine) / np.linalg.norm(facing)
        if abs(lean) > LEAN_SINE:
            facts.append("leaning forward" if lean > 0 else "leaning backward")
    return facts


def describe_motion(clip: np.ndarray, layout: SkeletonLayout) -> str:
    """One short description of a clip (C, L, V), C >= 3 with x, y, z first: the one to
    `MAX_GROUPS` fastest moving body-part groups (direction in the body frame, speed word),
    or "the body holds still", then posture facts at the last frame, joined by "; "."""
    clip = np.asarray(clip, dtype=np.float64)
    if clip.ndim != 3 or clip.shape[0] < 3 or clip.shape[1] < 1:
        raise ValueError(f"clip must have shape (C, L, V) with C >= 3 and L >= 1, got {clip.shape}")
    if clip.shape[2] != layout.num_joints:
        raise ValueError(f"clip has {clip.shape[2]} joints but layout {layout.name!r} has {layout.num_joints}")
    xyz = clip[:3]  # (3, L, V)
    axes = _body_axes(xyz, layout)
    body = np.einsum("ac,clv->alv", axes, xyz)  # (3, L, V): right, up, forward coordinates
    groups = body_groups(layout)

    moving = []  # (speed, group, shift)
    for group, joints in groups.items():
        part = body[:, :, joints]  # (3, L, J)
        steps = np.linalg.norm(np.diff(part, axis=1), axis=0)  # (L - 1, J) per-frame speeds
        speed = float(steps.mean()) if steps.size else 0.0
        if speed >= STILL_SPEED:
            moving.append((speed, group, part[:, -1].mean(axis=1) - part[:, 0].mean(axis=1)))
    moving.sort(key=lambda item: -item[0])
    phrases = [
        _motion_phrase(group, shift, speed)
        for speed, group, shift in moving[:MAX_GROUPS]
        if speed >= RELATIVE_SPEED * moving[0][0]
    ]
    facts = _posture(xyz, body, axes, layout, groups)
    return "; ".join((phrases or ["the body holds still"]) + facts)


@dataclasses.dataclass
class GlossaryEntry:
    """Code `code`, used `uses` times, with the description of its decoded motion."""

    code: int
    uses: int
    description: str


def build_glossary(
    decoder: MotionDecoder, codebook: torch.Tensor, usage: torch.Tensor, layout: SkeletonLayout, min_uses: int = 1
) -> list[GlossaryEntry]:
    """Describe the decoded clip of every code used at least `min_uses` times, by code id.
    codebook: (K, D) code vectors; usage: (K,) counts of each code."""
    if codebook.ndim != 2:
        raise ValueError(f"codebook must have shape (K, D), got {tuple(codebook.shape)}")
    if tuple(usage.shape) != (codebook.shape[0],):
        raise ValueError(
            f"usage must have shape ({codebook.shape[0]},) to match the codebook, got {tuple(usage.shape)}"
        )
    codes = [k for k in range(codebook.shape[0]) if usage[k] >= min_uses]
    if not codes:
        return []
    parameter = next(decoder.parameters())
    was_training = decoder.training
    decoder.eval()
    try:
        with torch.no_grad():
            clips = decoder(codebook[codes].to(parameter.device, parameter.dtype))  # (n, C, L, V)
    finally:
        decoder.train(was_training)
    return [
        GlossaryEntry(code, int(usage[code]), describe_motion(clip.cpu().numpy(), layout))
        for code, clip in zip(codes, clips)
    ]


def format_glossary(entries: Sequence[GlossaryEntry]) -> str:
    """Aligned text table with columns code (<aN>), uses and description."""
    rows = [("code", "uses", "description")] + [(token_name(e.code), str(e.uses), e.description) for e in entries]
    code_width = max(len(row[0]) for row in rows)
    uses_width = max(len(row[1]) for row in rows)
    return "\n".join(f"{code:<{code_width}}  {uses:>{uses_width}}  {description}" for code, uses, description in rows)


def glossary_lines(narrative: str, entries: Sequence[GlossaryEntry]) -> list[str]:
    """ "<aN>: description" for each distinct token of `narrative` in order of appearance; a
    token the glossary does not hold (a code never used on the run's training data, which the
    glossary describes) says so."""
    meaning = {entry.code: entry.description for entry in entries}
    codes = dict.fromkeys(code for code, _ in parse_narrative(narrative))
    return [
        f"{token_name(code)}: {meaning.get(code, 'not in the glossary (never used on the training data)')}"
        for code in codes
    ]


def save_glossary(entries: Sequence[GlossaryEntry], path: str | os.PathLike) -> None:
    """Write the entries as a JSON list of objects, atomically (temporary file + os.replace)."""
    write_text_atomic(path, json.dumps([dataclasses.asdict(e) for e in entries], indent=2) + "\n")


def load_glossary(path: str | os.PathLike) -> list[GlossaryEntry]:
    """Entries written by `save_glossary`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"glossary file {path}: not valid JSON ({error})") from error
    if not isinstance(data, list):
        raise ValueError(f"glossary file {path}: expected a JSON list of entries, got {type(data).__name__}")
    entries = []
    for i, item in enumerate(data):
        if not (
            isinstance(item, dict)
            and set(item) == {"code", "uses", "description"}
            and type(item["code"]) is int
            and type(item["uses"]) is int
            and isinstance(item["description"], str)
        ):
            raise ValueError(
                f"glossary file {path}: entry {i} must be an object with integer "
                f"'code' and 'uses' and a string 'description', got {item!r}"
            )
        entries.append(GlossaryEntry(item["code"], item["uses"], item["description"]))
    return entries
