"""Skeleton layouts: the built-ins against their reference definitions, the derived graph and
flip helpers, user layouts from dicts and joint hierarchies, and the validation errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from skelang.data import layouts
from skelang.data.layouts import (
    SkeletonLayout,
    get_layout,
    layout_from_dict,
    layout_from_hierarchy,
    layout_names,
    register_layout,
)

NUM_JOINTS = {"ntu25": 25, "kinect_v1_20": 20, "openpose18": 18, "coco17": 17, "blazepose33": 33, "jhmdb15": 15}

# (centre, (spine lower, spine upper)) by joint name; shoulders are always left/right_shoulder.
LANDMARKS = {
    "ntu25": ("spine_middle", ("spine_base", "spine_shoulder")),
    "kinect_v1_20": ("spine", ("hip_centre", "shoulder_centre")),
    "openpose18": ("neck", ("left_hip", "left_shoulder")),
    "coco17": ("left_hip", ("left_hip", "left_shoulder")),
    "blazepose33": ("left_hip", ("left_hip", "left_shoulder")),
    "jhmdb15": ("belly", ("belly", "neck")),
}

# CTR-GCN's graph/ntu_rgb_d.py and graph/ucla.py: inward edges, 1-based (child, parent).
CTRGCN_NTU = [
    (1, 2),
    (2, 21),
    (3, 21),
    (4, 3),
    (5, 21),
    (6, 5),
    (7, 6),
    (8, 7),
    (9, 21),
    (10, 9),
    (11, 10),
    (12, 11),
    (13, 1),
    (14, 13),
    (15, 14),
    (16, 15),
    (17, 1),
    (18, 17),
    (19, 18),
    (20, 19),
    (22, 23),
    (23, 8),
    (24, 25),
    (25, 12),
]
CTRGCN_UCLA = [
    (1, 2),
    (2, 3),
    (4, 3),
    (5, 3),
    (6, 5),
    (7, 6),
    (8, 7),
    (9, 3),
    (10, 9),
    (11, 10),
    (12, 11),
    (13, 1),
    (14, 13),
    (15, 14),
    (16, 15),
    (17, 1),
    (18, 17),
    (19, 18),
    (20, 19),
]
# ST-GCN's openpose graph, 0-based.
STGCN_OPENPOSE = [
    (4, 3),
    (3, 2),
    (7, 6),
    (6, 5),
    (13, 12),
    (12, 11),
    (10, 9),
    (9, 8),
    (11, 5),
    (8, 2),
    (5, 1),
    (2, 1),
    (0, 1),
    (15, 0),
    (14, 0),
    (17, 15),
    (16, 14),
]
# MediaPipe's POSE_CONNECTIONS, 0-based.
BLAZEPOSE_CONNECTIONS = [
    (0, 1),
    (1, 2),
    (2, 3),
    (3, 7),
    (0, 4),
    (4, 5),
    (5, 6),
    (6, 8),
    (9, 10),
    (11, 12),
    (11, 13),
    (13, 15),
    (15, 17),
    (15, 19),
    (15, 21),
    (17, 19),
    (12, 14),
    (14, 16),
    (16, 18),
    (16, 20),
    (16, 22),
    (18, 20),
    (11, 23),
    (12, 24),
    (23, 24),
    (23, 25),
    (24, 26),
    (25, 27),
    (26, 28),
    (27, 29),
    (28, 30),
    (29, 31),
    (30, 32),
    (27, 31),
    (28, 32),
]


def undirected(edges):
    return {frozenset(edge) for edge in edges}


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the layout registry, so tests can register freely."""
    monkeypatch.setattr(layouts, "_LAYOUTS", dict(layouts._LAYOUTS))


def test_builtins_registered():
    assert set(NUM_JOINTS) <= set(layout_names())
    assert layout_names() == sorted(layout_names())


@pytest.mark.parametrize("name", NUM_JOINTS)
def test_builtin_structure(name):
    layout = get_layout(name)
    V = NUM_JOINTS[name]
    assert layout.name == name and layout.description
    assert layout.num_joints == V == len(layout.parents)
    assert len(layout.bones) == V - 1
    assert [child for child, _ in layout.bones] == [j for j in range(V) if layout.parents[j] != -1]
    assert dataclasses.replace(layout) == layout  # validates again
    hash(layout)


@pytest.mark.parametrize("name", NUM_JOINTS)
def test_builtin_landmarks(name):
    layout = get_layout(name)
    joint = layout.joint_names.index
    centre, spine = LANDMARKS[name]
    assert layout.centre == joint(centre)
    assert layout.spine == (joint(spine[0]), joint(spine[1]))
    assert layout.shoulders == (joint("left_shoulder"), joint("right_shoulder"))


@pytest.mark.parametrize("name", NUM_JOINTS)
def test_adjacency(name):
    layout = get_layout(name)
    V = layout.num_joints
    A = layout.adjacency()
    assert A.shape == (V, V) and A.dtype == np.float32
    np.testing.assert_array_equal(A, A.T)
    np.testing.assert_array_equal(np.diag(A), np.ones(V))
    assert set(np.unique(A)) == {0.0, 1.0}
    for child, parent in layout.bones:
        assert A[child, parent] == A[parent, child] == 1
    without_loops = layout.adjacency(self_loops=False)
    np.testing.assert_array_equal(without_loops, A - np.eye(V, dtype=np.float32))
    assert without_loops.sum() == 2 * (V - 1)
    # Connected: every joint is reached within V - 1 hops.
    assert (np.linalg.matrix_power(A.astype(np.float64), V - 1) > 0).all()


@pytest.mark.parametrize("name", NUM_JOINTS)
def test_flip_permutation(name):
    layout = get_layout(name)
    names = layout.joint_names
    perm = layout.flip_permutation()
    assert perm.shape == (layout.num_joints,) and np.issubdtype(perm.dtype, np.integer)
    np.testing.assert_array_equal(perm[perm], np.arange(layout.num_joints))
    for j, joint in enumerate(names):
        if "left" in joint:
            assert names[perm[j]] == joint.replace("left", "right")
        elif "right" in joint:
            assert names[perm[j]] == joint.replace("right", "left")
        else:
            assert perm[j] == j
    # Mirroring maps the skeleton onto itself.
    assert undirected((perm[c], perm[p]) for c, p in layout.bones) == undirected(layout.bones)


def test_ntu25_matches_ctrgcn():
    layout = get_layout("ntu25")
    assert set(layout.bones) == {(c - 1, p - 1) for c, p in CTRGCN_NTU}
    assert layout.parents[20] == -1
    names = layout.joint_names
    assert names[0] == "spine_base" and names[1] == "spine_middle" and names[20] == "spine_shoulder"
    assert names[4] == "left_shoulder" and names[8] == "right_shoulder"
    assert names[21:] == ("left_hand_tip", "left_thumb", "right_hand_tip", "right_thumb")
    assert (21, 22) in layout.bones and (22, 7) in layout.bones  # hand tip -> thumb -> hand
    assert (12, 0) in layout.bones and (16, 0) in layout.bones  # hips -> spine base


def test_kinect_v1_20_matches_ctrgcn_ucla():
    layout = get_layout("kinect_v1_20")
    assert set(layout.bones) == {(c - 1, p - 1) for c, p in CTRGCN_UCLA}
    assert layout.parents[2] == -1 and layout.joint_names[2] == "shoulder_centre"
    assert layout.joint_names[0] == "hip_centre" and layout.joint_names[19] == "right_foot"


def test_openpose18_matches_stgcn():
    layout = get_layout("openpose18")
    assert undirected(layout.bones) == undirected(STGCN_OPENPOSE)
    assert layout.parents[1] == -1
    assert layout.joint_names[:3] == ("nose", "neck", "right_shoulder")
    assert layout.joint_names[14:] == ("right_eye", "left_eye", "right_ear", "left_ear")


def test_coco17_tree():
    layout = get_layout("coco17")
    names = layout.joint_names
    assert names[0] == "nose" and names[5:7] == ("left_shoulder", "right_shoulder")
    assert names[-2:] == ("left_ankle", "right_ankle")
    assert layout.parents[0] == -1
    assert {(5, 0), (6, 0), (11, 5), (12, 6), (3, 1), (4, 2), (15, 13)} <= set(layout.bones)


def test_blazepose33_is_a_tree_of_the_official_connections():
    layout = get_layout("blazepose33")
    names = layout.joint_names
    assert names[0] == "nose" and names[7:9] == ("left_ear", "right_ear")
    assert names[11:13] == ("left_shoulder", "right_shoulder")
    assert names[23:25] == ("left_hip", "right_hip")
    assert names[31:] == ("left_foot_index", "right_foot_index")
    # Only the links joining the face, mouth and body come from outside the official list.
    added = undirected(layout.bones) - undirected(BLAZEPOSE_CONNECTIONS)
    assert added == undirected([(9, 0), (10, 0), (11, 0), (12, 0)])


def test_jhmdb15_tree():
    layout = get_layout("jhmdb15")
    assert layout.joint_names[:3] == ("neck", "belly", "face")
    assert layout.joint_names[-2:] == ("right_ankle", "left_ankle")
    assert layout.parents[1] == -1
    assert {(0, 1), (2, 0), (3, 0), (5, 1), (13, 9)} <= set(layout.bones)


# A small user layout: a torso with two arms.
ARMS_BY_NAME = {
    "name": "arms",
    "joints": ["pelvis", "chest", "left_shoulder", "left_hand", "right_shoulder", "right_hand"],
    "parents": [None, "pelvis", "chest", "left_shoulder", "chest", "right_shoulder"],
    "centre": "pelvis",
    "spine": ["pelvis", "chest"],
    "shoulders": ["left_shoulder", "right_shoulder"],
    "left_right": [["left_shoulder", "right_shoulder"], ["left_hand", "right_hand"]],
    "description": "test skeleton",
}
ARMS_BY_INDEX = {
    **ARMS_BY_NAME,
    "parents": [-1, 0, 1, 2, 1, 4],
    "centre": 0,
    "spine": [0, 1],
    "shoulders": [2, 4],
    "left_right": [[2, 4], [3, 5]],
}


@pytest.mark.parametrize("spec", [ARMS_BY_NAME, ARMS_BY_INDEX], ids=["names", "indices"])
def test_layout_from_dict(spec, registry):
    layout = layout_from_dict(spec)
    assert layout == SkeletonLayout(
        name="arms",
        joint_names=tuple(ARMS_BY_NAME["joints"]),
        parents=(-1, 0, 1, 2, 1, 4),
        centre=0,
        spine=(0, 1),
        shoulders=(2, 4),
        left_right=((2, 4), (3, 5)),
        description="test skeleton",
    )
    assert layout.bones == ((1, 0), (2, 1), (3, 2), (4, 1), (5, 4))
    np.testing.assert_array_equal(layout.flip_permutation(), [0, 1, 4, 5, 2, 3])
    register_layout(layout)
    assert get_layout("arms") is layout


def test_layout_from_dict_optional_keys():
    spec = {key: value for key, value in ARMS_BY_NAME.items() if key not in ("left_right", "description")}
    layout = layout_from_dict(spec)
    assert layout.left_right == () and layout.description == ""
    np.testing.assert_array_equal(layout.flip_permutation(), np.arange(6))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"centre": None}, r"missing keys \['centre'\]"),
        ({"shoulders": None, "spine": None}, r"missing keys \['spine', 'shoulders'\]"),
        ({"center": 0}, r"unknown keys \['center'\]"),
        ({"centre": "hips"}, r"unknown joint name 'hips' in centre"),
        (
            {"parents": [None, "pelvis", "chest", "left_shoulder", "chest", "rigth_shoulder"]},
            r"unknown joint name 'rigth_shoulder' in parents",
        ),
        ({"left_right": [["left_hand", "right_hand", "chest"]]}, r"left_right entries must be pairs"),
        ({"spine": [0.5, 1]}, r"spine must give joints as indices or names"),
        ({"joints": "pelvis"}, r"joints must be a list of names"),
    ],
)
def test_layout_from_dict_errors(change, message):
    spec = {**ARMS_BY_NAME, **change}
    spec = {key: value for key, value in spec.items() if value is not None}
    with pytest.raises(ValueError, match=r"'arms'.*" + message):
        layout_from_dict(spec)


VALID = dict(
    name="broken",
    joint_names=("a", "b", "c", "d"),
    parents=(-1, 0, 0, 1),
    centre=0,
    spine=(0, 1),
    shoulders=(2, 3),
    left_right=((2, 3),),
)


def test_valid_template():
    layout = SkeletonLayout(**VALID)
    assert layout.bones == ((1, 0), (2, 0), (3, 1))
    # Lists (as loaded from YAML) are stored as tuples.
    as_lists = SkeletonLayout(**{**VALID, "parents": [-1, 0, 0, 1], "spine": [0, 1], "left_right": [[2, 3]]})
    assert as_lists == layout and hash(as_lists) == hash(layout)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"joint_names": ()}, "has no joints"),
        ({"joint_names": ("a", "b", "a", "d")}, r"duplicate joint names \['a'\]"),
        ({"parents": (-1, 0, 0)}, "4 joint names but 3 parents"),
        ({"parents": (-1, 0, 0, 4)}, r"parent 4 of joint 3 \('d'\) is out of range"),
        ({"parents": (-1, 0, -2, 1)}, r"parent -2 of joint 2 \('c'\) is out of range"),
        ({"parents": (-1, -1, 0, 1)}, r"exactly one root .* found 2: \[0, 1\]"),
        ({"parents": (1, 0, 0, 1)}, r"exactly one root .* found 0"),
        ({"parents": (-1, 3, 0, 1)}, r"joint 1 \('b'\) form a cycle"),
        ({"parents": (-1, 1, 0, 1)}, r"joint 1 \('b'\) form a cycle"),
        ({"centre": 4}, r"centre joint index out of range \[0, 4\)"),
        ({"centre": -1}, r"centre joint index out of range"),
        ({"spine": (0, 9)}, r"spine joint index out of range"),
        ({"spine": (0, 1, 2)}, r"spine must be a pair of joints"),
        ({"shoulders": (-1, 3)}, r"shoulders joint index out of range"),
        ({"left_right": ((2, 2),)}, r"left_right pair \(2, 2\) repeats a joint"),
        ({"left_right": ((2, 3), (3, 1))}, r"left_right pair \(3, 1\) repeats a joint"),
        ({"left_right": ((2, 7),)}, r"left_right pair \(2, 7\) has a joint index out of range"),
        ({"left_right": ((2,),)}, r"left_right entry \(2,\) is not a \(left, right\) pair"),
    ],
)
def test_malformed_layouts(change, message):
    with pytest.raises(ValueError, match=r"skeleton layout 'broken': .*" + message):
        SkeletonLayout(**{**VALID, **change})


def test_get_layout_unknown_lists_known_names():
    with pytest.raises(KeyError, match="unknown skeleton layout 'ntu26'") as error:
        get_layout("ntu26")
    for name in NUM_JOINTS:
        assert name in str(error.value)


def test_register_layout(registry):
    layout = SkeletonLayout(**{**VALID, "name": "ntu25"})
    with pytest.raises(ValueError, match="'ntu25' is already registered"):
        register_layout(layout)
    assert get_layout("ntu25").num_joints == 25
    register_layout(layout, overwrite=True)
    assert get_layout("ntu25") is layout
    with pytest.raises(TypeError, match="expects a SkeletonLayout"):
        register_layout(VALID)


# (name, parent) in BVH order, like a CMU/Mixamo skeleton.
CMU_LIKE = [
    ("Hips", None),
    ("LeftUpLeg", "Hips"),
    ("LeftLeg", "LeftUpLeg"),
    ("LeftFoot", "LeftLeg"),
    ("RightUpLeg", "Hips"),
    ("RightLeg", "RightUpLeg"),
    ("RightFoot", "RightLeg"),
    ("Spine", "Hips"),
    ("Neck", "Spine"),
    ("Head", "Neck"),
    ("LeftShoulder", "Neck"),
    ("LeftArm", "LeftShoulder"),
    ("LeftForeArm", "LeftArm"),
    ("LeftHand", "LeftForeArm"),
    ("RightShoulder", "Neck"),
    ("RightArm", "RightShoulder"),
    ("RightForeArm", "RightArm"),
    ("RightHand", "RightForeArm"),
]


def hierarchy(joints):
    names = [joint for joint, _ in joints]
    return names, [-1 if parent is None else names.index(parent) for _, parent in joints]


def test_layout_from_hierarchy_cmu_like():
    names, parents = hierarchy(CMU_LIKE)
    layout = layout_from_hierarchy("cmu_like", names, parents)
    joint = names.index
    assert layout.num_joints == 18 and len(layout.bones) == 17
    assert layout.centre == joint("Hips")
    assert layout.spine == (joint("Hips"), joint("Spine"))
    # LeftShoulder is the clavicle in BVH rigs; the upper arm is the shoulder joint.
    assert layout.shoulders == (joint("LeftArm"), joint("RightArm"))
    pairs = {(names[left], names[right]) for left, right in layout.left_right}
    assert pairs == {(n, n.replace("Left", "Right")) for n in names if n.startswith("Left")}
    assert len(pairs) == 7
    perm = layout.flip_permutation()
    np.testing.assert_array_equal(perm[perm], np.arange(18))
    assert layout == layout_from_hierarchy("cmu_like", names, [p for _, p in CMU_LIKE])


def test_layout_from_hierarchy_finds_a_deeper_spine_and_cmu_prefixes():
    # CMU's BVH: the root's children are the hip joints and LowerBack, then Spine, Spine1.
    names, parents = hierarchy(
        [
            ("Hips", None),
            ("LHipJoint", "Hips"),
            ("LeftUpLeg", "LHipJoint"),
            ("RHipJoint", "Hips"),
            ("RightUpLeg", "RHipJoint"),
            ("LowerBack", "Hips"),
            ("Spine", "LowerBack"),
            ("Spine1", "Spine"),
            ("LeftShoulder", "Spine1"),
            ("RightShoulder", "Spine1"),
            ("LThumb", "LeftShoulder"),
            ("RThumb", "RightShoulder"),
        ]
    )
    layout = layout_from_hierarchy("cmu", names, parents)
    assert layout.spine == (0, names.index("Spine"))
    assert layout.shoulders == (names.index("LeftShoulder"), names.index("RightShoulder"))
    assert {(names[l], names[r]) for l, r in layout.left_right} == {
        ("LHipJoint", "RHipJoint"),
        ("LeftUpLeg", "RightUpLeg"),
        ("LeftShoulder", "RightShoulder"),
        ("LThumb", "RThumb"),
    }
    midline = [names.index(n) for n in ("Hips", "LowerBack", "Spine", "Spine1")]
    np.testing.assert_array_equal(layout.flip_permutation()[midline], midline)


def test_layout_from_hierarchy_fallbacks():
    names, parents = hierarchy([("root", None), ("a", "root"), ("b", "a"), ("c", "root")])
    layout = layout_from_hierarchy("plain", names, parents)
    assert layout.centre == 0 and layout.spine == (0, 1) and layout.shoulders == (0, 0)
    assert layout.left_right == ()
    single = layout_from_hierarchy("single", ["root"], [-1])
    assert single.spine == (0, 0) and single.bones == ()


def test_layout_from_hierarchy_validates():
    with pytest.raises(ValueError, match="'two_roots': needs exactly one root"):
        layout_from_hierarchy("two_roots", ["a", "b"], [-1, -1])
    with pytest.raises(ValueError, match="'short': 2 joint names but 1 parents"):
        layout_from_hierarchy("short", ["a", "b"], [-1])
    with pytest.raises(ValueError, match="unknown joint name 'x' in parents"):
        layout_from_hierarchy("bad_parent", ["a", "b"], [None, "x"])
