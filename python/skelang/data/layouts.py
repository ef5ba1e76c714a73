"""Skeleton layouts: joint order, bone tree and body landmarks, defined once for every format.

Conventions: joints are 0-based indices into `joint_names`; every joint but the root has one
parent, and a bone is the pair (child, parent), so bones point towards the root (the
"inward" edges of ST-GCN/CTR-GCN). `centre`, `spine` and `shoulders` name the joints that
preprocessing uses to centre a sequence and rotate it to a canonical frame; `left_right`
lists the symmetric joints swapped by flip augmentation.

Built-in layouts (registered at import): ntu25, kinect_v1_20, openpose18, coco17,
blazepose33, jhmdb15. User layouts come from `layout_from_dict` (YAML/JSON) or
`layout_from_hierarchy` (BVH joint trees) and are added with `register_layout`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class SkeletonLayout:
    """A named skeleton of V joints whose bones form a tree.

    joint_names: (V,) joint names; the index of a name is its joint index.
    parents:     (V,) parent joint index of each joint, -1 for the single root.
    centre:      joint that sequences are centred on.
    spine:       (lower, upper) joints; lower -> upper defines "up".
    shoulders:   (left, right) joints; left -> right defines the body's left-right axis.
    left_right:  symmetric (left, right) joint pairs, swapped when mirroring.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    centre: int
    spine: tuple[int, int]
    shoulders: tuple[int, int]
    left_right: tuple[tuple[int, int], ...]
    description: str = ""

    def __post_init__(self):
        # Accept lists (from YAML/JSON) and numpy integers; store hashable tuples of ints.
        set_field = object.__setattr__
        set_field(self, "joint_names", tuple(self.joint_names))
        set_field(self, "parents", tuple(int(p) for p in self.parents))
        set_field(self, "centre", int(self.centre))
        set_field(self, "spine", tuple(int(j) for j in self.spine))
        set_field(self, "shoulders", tuple(int(j) for j in self.shoulders))
        set_field(self, "left_right", tuple(tuple(int(j) for j in pair) for pair in self.left_right))
        self._validate()

    def _fail(self, problem: str):
        raise ValueError(f"skeleton layout {self.name!r}: {problem}")

    def _validate(self):
        V = len(self.joint_names)
        if V == 0:
            self._fail("has no joints")
        duplicates = sorted({n for n in self.joint_names if self.joint_names.count(n) > 1})
        if duplicates:
            self._fail(f"duplicate joint names {duplicates}")
        if len(self.parents) != V:
            self._fail(f"{V} joint names but {len(self.parents)} parents")
        for joint, parent in enumerate(self.parents):
            if not -1 <= parent < V:
                self._fail(
                    f"parent {parent} of joint {joint} ({self.joint_names[joint]!r}) "
                    f"is out of range [0, {V}) (use -1 for the root)"
                )
        roots = [joint for joint, parent in enumerate(self.parents) if parent == -1]
        if len(roots) != 1:
            self._fail(f"needs exactly one root (parent -1), found {len(roots)}: {roots}")
        for joint in range(V):
            # A path from a joint to the root visits at most V joints; a longer one loops.
            ancestor, steps = joint, 0
            while ancestor != -1:
                ancestor, steps = self.parents[ancestor], steps + 1
                if steps > V:
                    self._fail(
                        f"the parents of joint {joint} ({self.joint_names[joint]!r}) "
                        f"form a cycle that never reaches the root"
                    )
        landmarks = {"centre": (self.centre,), "spine": self.spine, "shoulders": self.shoulders}
        for field, joints in landmarks.items():
            if field != "centre" and len(joints) != 2:
                self._fail(f"{field} must be a pair of joints, got {joints}")
            if any(not 0 <= j < V for j in joints):
                self._fail(f"{field} joint index out of range [0, {V}): {joints}")
        seen: set[int] = set()
        for pair in self.left_right:
            if len(pair) != 2:
                self._fail(f"left_right entry {pair} is not a (left, right) pair")
            if any(not 0 <= j < V for j in pair):
                self._fail(f"left_right pair {pair} has a joint index out of range [0, {V})")
            if pair[0] == pair[1] or seen.intersection(pair):
                self._fail(f"left_right pair {pair} repeats a joint (each joint is in at most one pair)")
            seen.update(pair)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def bones(self) -> tuple[tuple[int, int], ...]:
        """(V - 1) bones (child, parent), one per non-root joint, in joint order."""
        return tuple((child, parent) for child, parent in enumerate(self.parents) if parent != -1)

    def adjacency(self, self_loops: bool = True) -> np.ndarray:
        """(V, V) float32 symmetric 0/1 matrix of the bones, with ones on the diagonal if
        `self_loops`."""
        V = self.num_joints
        A = np.eye(V, dtype=np.float32) if self_loops else np.zeros((V, V), dtype=np.float32)
        for child, parent in self.bones:
            A[child, parent] = A[parent, child] = 1
        return A

    def flip_permutation(self) -> np.ndarray:
        """(V,) int64: index of each joint after mirroring left and right, an involution.
        Mirror (C, T, V, M) data with `data[:, :, perm]` (after negating the lateral axis)."""
        perm = np.arange(self.num_joints, dtype=np.int64)
        for left, right in self.left_right:
            perm[left], perm[right] = right, left
        return perm


_LAYOUTS: dict[str, SkeletonLayout] = {}


def register_layout(layout: SkeletonLayout, overwrite: bool = False) -> SkeletonLayout:
    """Make `layout` available to `get_layout` under its name; returns it."""
    if not isinstance(layout, SkeletonLayout):
        raise TypeError(f"register_layout expects a SkeletonLayout, got {type(layout).__name__}")
    if layout.name in _LAYOUTS and not overwrite:
        raise ValueError(f"skeleton layout {layout.name!r} is already registered (pass overwrite=True to replace it)")
    _LAYOUTS[layout.name] = layout
    return layout


def get_layout(name: str) -> SkeletonLayout:
    try:
        return _LAYOUTS[name]
    except KeyError:
        raise KeyError(f"unknown skeleton layout {name!r}; known layouts: {', '.join(layout_names())}") from None


def layout_names() -> list[str]:
    return sorted(_LAYOUTS)


def layout_to_dict(name: str) -> dict:
    """The registered layout `name` as layout_from_dict reads it: caches and checkpoints keep
    it, so that a layout made at run time (a BVH hierarchy, a user's) is known in any process."""
    layout = get_layout(name)
    return {
        "name": layout.name,
        "joints": list(layout.joint_names),
        "parents": list(layout.parents),
        "centre": layout.centre,
        "spine": list(layout.spine),
        "shoulders": list(layout.shoulders),
        "left_right": [list(pair) for pair in layout.left_right],
        "description": layout.description,
    }


def ensure_layout(definition: Mapping[str, Any]) -> SkeletonLayout:
    """The layout of a kept definition (layout_to_dict), registered unless its name is known."""
    name = definition.get("name")
    return get_layout(name) if name in _LAYOUTS else register_layout(layout_from_dict(definition))


def _joint_index(name: str, joint_names: Sequence[str], ref: Any, field: str) -> int:
    """Joint index of `ref`, given as an index or a joint name; None means -1 (no joint)."""
    if ref is None:
        return -1
    if isinstance(ref, str):
        if ref not in joint_names:
            raise ValueError(
                f"skeleton layout {name!r}: unknown joint name {ref!r} in {field}; joints are {list(joint_names)}"
            )
        return joint_names.index(ref)
    if isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
        return int(ref)
    raise ValueError(f"skeleton layout {name!r}: {field} must give joints as indices or names, got {ref!r}")


def _joint_pair(name: str, joint_names: Sequence[str], pair: Any, field: str) -> tuple[int, int]:
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ValueError(f"skeleton layout {name!r}: {field} entries must be pairs of joints, got {pair!r}")
    return (_joint_index(name, joint_names, pair[0], field), _joint_index(name, joint_names, pair[1], field))


_REQUIRED_KEYS = ("name", "joints", "parents", "centre", "spine", "shoulders")
_OPTIONAL_KEYS = ("left_right", "description")


def layout_from_dict(d: Mapping[str, Any]) -> SkeletonLayout:
    """Layout from a YAML/JSON mapping with keys name, joints (list of names), parents (index
    or name of each joint's parent, None or -1 for the root), centre, spine, shoulders
    (joints as indices or names) and optionally left_right (pairs) and description."""
    name = d.get("name", "<unnamed>")
    missing = [key for key in _REQUIRED_KEYS if key not in d]
    if missing:
        raise ValueError(f"skeleton layout {name!r}: missing keys {missing} (required: {list(_REQUIRED_KEYS)})")
    unknown = sorted(set(d) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise ValueError(
            f"skeleton layout {name!r}: unknown keys {unknown} (allowed: {list(_REQUIRED_KEYS + _OPTIONAL_KEYS)})"
        )
    joints = d["joints"]
    if isinstance(joints, str) or not all(isinstance(j, str) for j in joints):
        raise ValueError(f"skeleton layout {name!r}: joints must be a list of names, got {joints!r}")
    return SkeletonLayout(
        name=name,
        joint_names=tuple(joints),
        parents=tuple(_joint_index(name, joints, p, "parents") for p in d["parents"]),
        centre=_joint_index(name, joints, d["centre"], "centre"),
        spine=_joint_pair(name, joints, d["spine"], "spine"),
        shoulders=_joint_pair(name, joints, d["shoulders"], "shoulders"),
        left_right=tuple(_joint_pair(name, joints, pair, "left_right") for pair in d.get("left_right", ())),
        description=d.get("description", ""),
    )


def _mirrored_name(joint: str) -> str | None:
    """`joint` with left and right swapped: "left" <-> "right" in any of the cases left, Left,
    LEFT, or CMU's one-letter prefix (LHipJoint <-> RHipJoint); None if it names no left side."""
    for left, right in (("left", "right"), ("Left", "Right"), ("LEFT", "RIGHT")):
        if left in joint:
            return joint.replace(left, right)
    if len(joint) > 1 and joint[0] == "L" and joint[1].isupper():
        return "R" + joint[1:]
    return None


def _mirror_pairs(joint_names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """(left, right) index pairs of the joints whose mirrored names exist, in left-joint order."""
    index = {joint: i for i, joint in enumerate(joint_names)}
    return tuple(
        (i, index[_mirrored_name(joint)]) for i, joint in enumerate(joint_names) if _mirrored_name(joint) in index
    )


def _first_side_joint(joint_names: Sequence[str], side: str) -> int | None:
    """First joint of `side` ("left"/"right") at the shoulder: an upper-arm joint ("LeftArm",
    "LeftUpperArm"; not the forearm) or else a "shoulder" joint."""
    named = [(i, joint.lower()) for i, joint in enumerate(joint_names) if side in joint.lower()]
    for i, joint in named:
        if "arm" in joint and "fore" not in joint and "lower" not in joint:
            return i
    for i, joint in named:
        if "shoulder" in joint:
            return i
    return None


def layout_from_hierarchy(name: str, joint_names: Sequence[str], parents: Sequence[int | str | None]) -> SkeletonLayout:
    """Layout of a joint tree such as a BVH skeleton, with its landmarks guessed from names.

    parents: (V,) parent index or name per joint, None or -1 for the root.
    centre = the root; spine = (root, nearest descendant named *spine*, *chest* or *neck*,
    else the root's first child); shoulders = the first left and right upper-arm joints
    (CMU/Mixamo "LeftArm": their "LeftShoulder" is the clavicle, which starts at the spine),
    else the first left and right *shoulder* joints, else (root, root); left_right pairs
    names that differ by Left <-> Right (any case) or by CMU's L/R prefix (LHipJoint).
    """
    joint_names = tuple(joint_names)
    if len(parents) != len(joint_names):
        raise ValueError(f"skeleton layout {name!r}: {len(joint_names)} joint names but {len(parents)} parents")
    parents = tuple(_joint_index(name, joint_names, p, "parents") for p in parents)
    root = parents.index(-1) if -1 in parents else 0  # SkeletonLayout reports a missing root
    children = collections.defaultdict(list)
    for joint, parent in enumerate(parents):
        if parent != -1:
            children[parent].append(joint)

    spine_top = children[root][0] if children[root] else root
    queue = collections.deque(children[root])
    while queue:  # breadth first, so the nearest match wins
        joint = queue.popleft()
        if any(word in joint_names[joint].lower() for word in ("spine", "chest", "neck")):
            spine_top = joint
            break
        queue.extend(children[joint])

    left = _first_side_joint(joint_names, "left")
    right = _first_side_joint(joint_names, "right")
    shoulders = (left, right) if left is not None and right is not None else (root, root)
    return SkeletonLayout(
        name=name,
        joint_names=joint_names,
        parents=parents,
        centre=root,
        spine=(root, spine_top),
        shoulders=shoulders,
        left_right=_mirror_pairs(joint_names),
        description="derived from a joint hierarchy",
    )


def _builtin(
    name: str,
    joints_and_parents: Sequence[tuple[str, int]],
    centre: int,
    spine: tuple[int, int],
    shoulders: tuple[int, int],
    description: str,
):
    """Register a built-in layout given (joint name, parent index) in joint order."""
    joint_names = tuple(joint for joint, _ in joints_and_parents)
    register_layout(
        SkeletonLayout(
            name=name,
            joint_names=joint_names,
            parents=tuple(p for _, p in joints_and_parents),
            centre=centre,
            spine=spine,
            shoulders=shoulders,
            left_right=_mirror_pairs(joint_names),
            description=description,
        )
    )


_builtin(
    "ntu25",
    [
        ("spine_base", 1),  # 0
        ("spine_middle", 20),  # 1
        ("neck", 20),  # 2
        ("head", 2),  # 3
        ("left_shoulder", 20),  # 4
        ("left_elbow", 4),  # 5
        ("left_wrist", 5),  # 6
        ("left_hand", 6),  # 7
        ("right_shoulder", 20),  # 8
        ("right_elbow", 8),  # 9
        ("right_wrist", 9),  # 10
        ("right_hand", 10),  # 11
        ("left_hip", 0),  # 12
        ("left_knee", 12),  # 13
        ("left_ankle", 13),  # 14
        ("left_foot", 14),  # 15
        ("right_hip", 0),  # 16
        ("right_knee", 16),  # 17
        ("right_ankle", 17),  # 18
        ("right_foot", 18),  # 19
        ("spine_shoulder", -1),  # 20
        ("left_hand_tip", 22),  # 21
        ("left_thumb", 7),  # 22
        ("right_hand_tip", 24),  # 23
        ("right_thumb", 11),  # 24
    ],
    centre=1,
    spine=(0, 20),
    shoulders=(4, 8),
    description=(
        "NTU RGB+D 60/120 (Kinect v2), 25 joints in the official order. Bones are the 24 edges "
        "of the ST-GCN/CTR-GCN NTU graph, rooted at the spine shoulder (20); as there, each hand "
        "tip hangs off the thumb. Centred on the middle of the spine (1), as CTR-GCN does."
    ),
)

_builtin(
    "kinect_v1_20",
    [
        ("hip_centre", 1),  # 0
        ("spine", 2),  # 1
        ("shoulder_centre", -1),  # 2
        ("head", 2),  # 3
        ("left_shoulder", 2),  # 4
        ("left_elbow", 4),  # 5
        ("left_wrist", 5),  # 6
        ("left_hand", 6),  # 7
        ("right_shoulder", 2),  # 8
        ("right_elbow", 8),  # 9
        ("right_wrist", 9),  # 10
        ("right_hand", 10),  # 11
        ("left_hip", 0),  # 12
        ("left_knee", 12),  # 13
        ("left_ankle", 13),  # 14
        ("left_foot", 14),  # 15
        ("right_hip", 0),  # 16
        ("right_knee", 16),  # 17
        ("right_ankle", 17),  # 18
        ("right_foot", 18),  # 19
    ],
    centre=1,
    spine=(0, 2),
    shoulders=(4, 8),
    description=(
        "Kinect v1, 20 joints (NW-UCLA, MSR Action3D order). Bones are the 19 edges of "
        "CTR-GCN's NW-UCLA graph, rooted at the shoulder centre (2)."
    ),
)

_builtin(
    "openpose18",
    [
        ("nose", 1),  # 0
        ("neck", -1),  # 1
        ("right_shoulder", 1),  # 2
        ("right_elbow", 2),  # 3
        ("right_wrist", 3),  # 4
        ("left_shoulder", 1),  # 5
        ("left_elbow", 5),  # 6
        ("left_wrist", 6),  # 7
        ("right_hip", 2),  # 8
        ("right_knee", 8),  # 9
        ("right_ankle", 9),  # 10
        ("left_hip", 5),  # 11
        ("left_knee", 11),  # 12
        ("left_ankle", 12),  # 13
        ("right_eye", 0),  # 14
        ("left_eye", 0),  # 15
        ("right_ear", 14),  # 16
        ("left_ear", 15),  # 17
    ],
    centre=1,
    spine=(11, 5),
    shoulders=(5, 2),
    description=(
        "OpenPose COCO-18 (Kinetics-Skeleton), with the 17 edges of ST-GCN's openpose graph "
        "rooted at the neck (1); each hip hangs off its shoulder. There is no pelvis joint, so "
        "the spine is left hip -> left shoulder (11 -> 5), parallel to the body's midline for an "
        "upright torso, whereas left hip -> neck would lean by half the hip width."
    ),
)

_builtin(
    "coco17",
    [
        ("nose", -1),  # 0
        ("left_eye", 0),  # 1
        ("right_eye", 0),  # 2
        ("left_ear", 1),  # 3
        ("right_ear", 2),  # 4
        ("left_shoulder", 0),  # 5
        ("right_shoulder", 0),  # 6
        ("left_elbow", 5),  # 7
        ("right_elbow", 6),  # 8
        ("left_wrist", 7),  # 9
        ("right_wrist", 8),  # 10
        ("left_hip", 5),  # 11
        ("right_hip", 6),  # 12
        ("left_knee", 11),  # 13
        ("right_knee", 12),  # 14
        ("left_ankle", 13),  # 15
        ("right_ankle", 14),  # 16
    ],
    centre=11,
    spine=(11, 5),
    shoulders=(5, 6),
    description=(
        "COCO keypoints, 17 joints. The COCO skeleton links form cycles (shoulder and hip "
        "girdles, eyes, ears to shoulders); the tree keeps the limbs and the eye -> ear chains, "
        "hangs the eyes and shoulders off the nose (root, 0) and each hip off its shoulder, as "
        "PYSKL's coco graph does. No pelvis or neck joint: centred on the left hip (11), spine "
        "left hip -> left shoulder (11 -> 5), parallel to the body's midline."
    ),
)

_builtin(
    "blazepose33",
    [
        ("nose", -1),  # 0
        ("left_eye_inner", 0),  # 1
        ("left_eye", 1),  # 2
        ("left_eye_outer", 2),  # 3
        ("right_eye_inner", 0),  # 4
        ("right_eye", 4),  # 5
        ("right_eye_outer", 5),  # 6
        ("left_ear", 3),  # 7
        ("right_ear", 6),  # 8
        ("mouth_left", 0),  # 9
        ("mouth_right", 0),  # 10
        ("left_shoulder", 0),  # 11
        ("right_shoulder", 0),  # 12
        ("left_elbow", 11),  # 13
        ("right_elbow", 12),  # 14
        ("left_wrist", 13),  # 15
        ("right_wrist", 14),  # 16
        ("left_pinky", 15),  # 17
        ("right_pinky", 16),  # 18
        ("left_index", 15),  # 19
        ("right_index", 16),  # 20
        ("left_thumb", 15),  # 21
        ("right_thumb", 16),  # 22
        ("left_hip", 11),  # 23
        ("right_hip", 12),  # 24
        ("left_knee", 23),  # 25
        ("right_knee", 24),  # 26
        ("left_ankle", 25),  # 27
        ("right_ankle", 26),  # 28
        ("left_heel", 27),  # 29
        ("right_heel", 28),  # 30
        ("left_foot_index", 27),  # 31
        ("right_foot_index", 28),  # 32
    ],
    centre=23,
    spine=(23, 11),
    shoulders=(11, 12),
    description=(
        "MediaPipe BlazePose, 33 landmarks in the official order. Tree of the official "
        "connections: the shoulder-shoulder, hip-hip, pinky-index and heel-foot_index links are "
        "dropped (fingers, heel and toe hang off wrist and ankle); the face, the mouth corners "
        "and the shoulders, which the connections leave apart, hang off the nose (root, 0), and "
        "each hip off its shoulder, as in coco17. Centred on the left hip (23; MediaPipe's world "
        "landmarks are centred between the hips), spine left hip -> left shoulder (23 -> 11)."
    ),
)

_builtin(
    "jhmdb15",
    [
        ("neck", 1),  # 0
        ("belly", -1),  # 1
        ("face", 0),  # 2
        ("right_shoulder", 0),  # 3
        ("left_shoulder", 0),  # 4
        ("right_hip", 1),  # 5
        ("left_hip", 1),  # 6
        ("right_elbow", 3),  # 7
        ("left_elbow", 4),  # 8
        ("right_knee", 5),  # 9
        ("left_knee", 6),  # 10
        ("right_wrist", 7),  # 11
        ("left_wrist", 8),  # 12
        ("right_ankle", 9),  # 13
        ("left_ankle", 10),  # 14
    ],
    centre=1,
    spine=(1, 0),
    shoulders=(4, 3),
    description=(
        "JHMDB puppet joints, 15 in the dataset's order, as a tree rooted at the belly (1): "
        "neck and hips off the belly, face and shoulders off the neck."
    ),
)
