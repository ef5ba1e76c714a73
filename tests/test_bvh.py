"""BVH files: forward kinematics checked by hand on a tiny hierarchy, channel order, CRLF and
whitespace, End Sites, frame-rate subsampling, the CMU files, and malformed input."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skelang.data.bvh import CMU_SCALE, hierarchy_layout_name, nearest_frames, parse_bvh, read_bvh
from skelang.data.layouts import get_layout

# Hips -> Upper -> Lower -> End Site, offsets +y, +x, +y, +z. Frames: 0 root moved by +10 x;
# 1 root Zrotation 90; 2 Upper Zrotation 90 and Xrotation 90; 3 root Yrotation 90.
TINY = """\
HIERARCHY
ROOT Hips
{
  OFFSET 0 1 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Upper
  {
    OFFSET 1 0 0
    CHANNELS 3 {upper_channels}
    JOINT Lower
    {
      OFFSET 0 2 0
      CHANNELS 3 Zrotation Xrotation Yrotation
      End Site
      {
        OFFSET 0 0 3
      }
    }
  }
}
MOTION
Frames: 4
Frame Time: 0.0083333
10 0 0  0 0 0   0 0 0   0 0 0
0 0 0   90 0 0  0 0 0   0 0 0
0 0 0   0 0 0   {upper_angles} 0 0 0
0 0 0   0 90 0  0 0 0   0 0 0
"""
ZXY = {"upper_channels": "Zrotation Xrotation Yrotation", "upper_angles": "90 90 0"}
XYZ = {"upper_channels": "Xrotation Yrotation Zrotation", "upper_angles": "90 0 90"}

# (T, joints + End Site, 3) by hand. Rz(90): x -> y, y -> -x; Rx(90): y -> z, z -> -y;
# Ry(90): x -> -z, z -> x.
EXPECTED_ZXY = np.array(
    [
        [[10, 1, 0], [11, 1, 0], [11, 3, 0], [11, 3, 3]],
        [[0, 1, 0], [0, 2, 0], [-2, 2, 0], [-2, 2, 3]],
        # Rz @ Rx: Lower's offset (0, 2, 0) -> (0, 0, 2); the End Site's (0, 0, 3) -> (3, 0, 0).
        [[0, 1, 0], [1, 1, 0], [1, 1, 2], [4, 1, 2]],
        [[0, 1, 0], [0, 1, -1], [0, 3, -1], [3, 3, -1]],
    ],
    dtype=np.float64,
)
# Rx @ Rz: (0, 2, 0) -> (-2, 0, 0); (0, 0, 3) -> (0, -3, 0). The other frames are the same.
EXPECTED_XYZ_FRAME_2 = np.array([[0, 1, 0], [1, 1, 0], [-1, 1, 0], [-1, -2, 0]], dtype=np.float64)


def write(tmp_path, text: str | bytes, name: str = "tiny.bvh"):
    path = tmp_path / name
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def tiny(order=ZXY) -> str:
    return TINY.replace("{upper_channels}", order["upper_channels"]).replace("{upper_angles}", order["upper_angles"])


def test_tiny_hierarchy_by_hand(tmp_path):
    bvh = parse_bvh(write(tmp_path, tiny()))
    assert bvh.joint_names == ["Hips", "Upper", "Lower"]
    assert bvh.parents.tolist() == [-1, 0, 1]
    assert bvh.offsets.tolist() == [[0, 1, 0], [1, 0, 0], [0, 2, 0]]
    assert bvh.channels[0] == ["Xposition", "Yposition", "Zposition", "Zrotation", "Yrotation", "Xrotation"]
    assert bvh.channels[1] == ["Zrotation", "Xrotation", "Yrotation"]
    assert bvh.end_site_parents.tolist() == [2] and bvh.end_site_offsets.tolist() == [[0, 0, 3]]
    assert bvh.frame_time == 0.0083333 and bvh.fps == 120.0
    assert bvh.motion.shape == (4, 12) and bvh.motion.dtype == np.float64
    np.testing.assert_allclose(bvh.positions(), EXPECTED_ZXY[:, :3], rtol=0, atol=1e-9)
    np.testing.assert_allclose(bvh.positions(include_end_sites=True), EXPECTED_ZXY, rtol=0, atol=1e-9)


def test_channel_order_matters(tmp_path):
    zxy = parse_bvh(write(tmp_path, tiny(ZXY), "zxy.bvh")).positions(include_end_sites=True)
    xyz = parse_bvh(write(tmp_path, tiny(XYZ), "xyz.bvh")).positions(include_end_sites=True)
    np.testing.assert_allclose(zxy[2], EXPECTED_ZXY[2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(xyz[2], EXPECTED_XYZ_FRAME_2, rtol=0, atol=1e-9)
    np.testing.assert_allclose(xyz[[0, 1, 3]], EXPECTED_ZXY[[0, 1, 3]], rtol=0, atol=1e-9)


def _rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {
        "X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def test_matches_a_per_frame_4x4_chain(tmp_path):
    """Random angles and positions, position channels on a child too: the vectorised
    kinematics equal parent global @ translate(offset + positions) @ rotations, frame by
    frame with homogeneous matrices."""
    text = tiny().replace(
        "CHANNELS 3 Zrotation Xrotation Yrotation\n    JOINT Lower",
        "CHANNELS 4 Zrotation Xposition Xrotation Yrotation\n    JOINT Lower",
    )
    rows = np.random.default_rng(0).uniform(-180, 180, size=(5, 13))
    motion = "\n".join(" ".join(f"{v:.6f}" for v in row) for row in rows)
    text = text[: text.index("Frames:")] + f"Frames: 5\nFrame Time: 0.04\n{motion}\n"
    bvh = parse_bvh(write(tmp_path, text))
    assert bvh.fps == 25.0
    expected = np.empty((5, 4, 3))
    for t, row in enumerate(bvh.motion):
        values = iter(row)
        globals_ = []
        for joint, parent in enumerate(bvh.parents):
            local = np.eye(4)
            local[:3, 3] = bvh.offsets[joint]
            for channel in bvh.channels[joint]:
                value, axis = next(values), channel[0]
                if channel.endswith("position"):
                    local[:3, 3] += np.eye(3)["XYZ".index(axis)] * value
                else:
                    transform = np.eye(4)
                    transform[:3, :3] = _rotation(axis, value)
                    local = local @ transform
            globals_.append(local if parent == -1 else globals_[parent] @ local)
            expected[t, joint] = globals_[joint][:3, 3]
        expected[t, 3] = (globals_[2] @ np.array([0, 0, 3, 1]))[:3]
    np.testing.assert_allclose(bvh.positions(include_end_sites=True), expected, rtol=0, atol=1e-9)


def test_read_bvh_sequence_layout_and_end_sites(tmp_path):
    path = write(tmp_path, tiny())
    sequence = read_bvh(path, scale=1.0)
    assert sequence.data.shape == (3, 4, 3, 1) and sequence.data.dtype == np.float32
    np.testing.assert_allclose(sequence.data[..., 0].transpose(1, 2, 0), EXPECTED_ZXY[:, :3], rtol=0, atol=1e-6)
    assert sequence.label is None
    assert sequence.meta == {
        "source": str(path),
        "name": "tiny",
        "fps": 120.0,
        "frame_time": 0.0083333,
        "joint_names": ["Hips", "Upper", "Lower"],
        "parents": [-1, 0, 1],
    }
    assert re.fullmatch(r"bvh-3-[0-9a-f]{8}", sequence.layout)
    assert get_layout(sequence.layout).parents == (-1, 0, 1)
    assert read_bvh(path).layout == sequence.layout  # registered once, then reused
    assert hierarchy_layout_name(["Hips", "Upper", "Lower"], [-1, 0, 1]) == sequence.layout
    np.testing.assert_allclose(read_bvh(path).data, sequence.data * CMU_SCALE, rtol=1e-6)

    with_ends = read_bvh(path, scale=1.0, include_end_sites=True)
    assert with_ends.meta["joint_names"] == ["Hips", "Upper", "Lower", "Lower_end"]
    assert get_layout(with_ends.layout).parents == (-1, 0, 1, 2)
    assert with_ends.layout.startswith("bvh-4-")
    np.testing.assert_allclose(with_ends.data[..., 0].transpose(1, 2, 0), EXPECTED_ZXY, rtol=0, atol=1e-6)


def test_crlf_tabs_and_spacing(tmp_path):
    plain = parse_bvh(write(tmp_path, tiny(), "plain.bvh"))
    text = "\n\n" + tiny().replace("  ", "\t \t").replace("Frame Time:", "Frame \t Time:  ")
    text = text.replace("Frames: 4", "Frames:4").replace("\n", "  \r\n") + "\r\n\r\n"
    messy = parse_bvh(write(tmp_path, text, "messy.bvh"))
    assert messy.joint_names == plain.joint_names and messy.channels == plain.channels
    np.testing.assert_array_equal(messy.motion, plain.motion)
    np.testing.assert_array_equal(messy.positions(True), plain.positions(True))


def test_target_fps_takes_the_nearest_frames(tmp_path):
    assert nearest_frames(994, 120, 30).tolist() == list(range(0, 994, 4))
    assert nearest_frames(10, 120, 50).tolist() == [0, 2, 5, 7]  # times 0, 2.4, 4.8, 7.2
    assert nearest_frames(3, 25, 50).tolist() == [0, 1, 1, 2, 2]  # repeats when upsampling
    assert nearest_frames(0, 120, 30).tolist() == []
    path = write(tmp_path, tiny())
    sequence = read_bvh(path, scale=1.0, target_fps=60)
    assert sequence.meta["fps"] == 60.0 and sequence.meta["frame_time"] == 0.0083333
    np.testing.assert_array_equal(sequence.data, read_bvh(path, scale=1.0).data[:, [0, 2]])
    with pytest.raises(ValueError, match="target_fps"):
        read_bvh(path, target_fps=0)


# --- CMU Graphics Lab files -------------------------------------------------------------

CMU_FRAMES = {"131_01": 994, "131_02": 1247, "131_03": 1102}
WALKS = ("131_01", "131_02")


@pytest.fixture(scope="module")
def cmu():
    from conftest import require_shared_data

    return {name: read_bvh(require_shared_data(f"cmu-bvh/{name}.bvh")) for name in CMU_FRAMES}


def joint(sequence, name: str) -> np.ndarray:
    """(T, 3) positions of the joint called `name`."""
    return sequence.data[:, :, sequence.meta["joint_names"].index(name), 0].T


def test_cmu_files_parse(shared_data):
    for name, frames in CMU_FRAMES.items():
        bvh = parse_bvh(shared_data(f"cmu-bvh/{name}.bvh"))
        assert len(bvh.joint_names) == 31 and bvh.joint_names[0] == "Hips"
        assert [len(c) for c in bvh.channels] == [6] + [3] * 30
        assert bvh.frame_time == 0.0083333 and bvh.fps == 120.0
        assert bvh.motion.shape == (frames, 96)
        assert len(bvh.end_site_parents) == 7


def test_cmu_bones_are_rigid_and_human_sized(cmu):
    for name, sequence in cmu.items():
        assert sequence.data.shape == (3, CMU_FRAMES[name], 31, 1)
        layout = get_layout(sequence.layout)
        positions = sequence.data[..., 0].astype(np.float64)  # (3, T, V)
        child, parent = np.array(layout.bones).T
        lengths = np.linalg.norm(positions[:, :, child] - positions[:, :, parent], axis=0)
        assert np.ptp(lengths, axis=0).max() < 1e-4  # metres
        thigh = np.linalg.norm(joint(sequence, "LeftKnee") - joint(sequence, "LeftHip"), axis=1)
        assert 0.3 < thigh[0] < 0.6
        # y is up; this skeleton's torso is short (its lowerneck has a zero offset), so the
        # Head joint stands about 1.25 m above the toes and the top of the head about 1.35 m.
        feet = np.minimum(joint(sequence, "LeftToe")[:, 1], joint(sequence, "RightToe")[:, 1])
        assert 1.1 < np.median(joint(sequence, "Head")[:, 1] - feet) < 2.0
        assert 0.7 < np.median(joint(sequence, "Hips")[:, 1] - feet) < 1.2


def test_cmu_walks_move_forward_with_feet_on_the_floor(cmu):
    for name in WALKS:
        hips = joint(cmu[name], "Hips")
        assert np.linalg.norm((hips - hips[0])[:, [0, 2]], axis=1).max() > 1.0
        # With the channels' rotation order right, the lower foot stays on the floor while
        # walking; reversing the order lifts it by more than a metre.
        feet = np.minimum(joint(cmu[name], "LeftToe")[:, 1], joint(cmu[name], "RightToe")[:, 1])
        assert np.ptp(feet) < 0.15


def test_cmu_layout(cmu):
    names = {sequence.layout for sequence in cmu.values()}
    assert len(names) == 1 and names.pop().startswith("bvh-31-")
    layout = get_layout(cmu["131_01"].layout)
    index = layout.joint_names.index
    assert layout.centre == index("Hips")
    assert layout.spine == (index("Hips"), index("Chest"))
    assert layout.shoulders == (index("LeftShoulder"), index("RightShoulder"))
    for pair in [
        ("LeftHip", "RightHip"),
        ("LHipJoint", "RHipJoint"),
        ("LThumb", "RThumb"),
        ("LeftWrist", "RightWrist"),
    ]:
        assert (index(pair[0]), index(pair[1])) in layout.left_right


def test_cmu_target_fps(cmu, shared_data):
    sequence = read_bvh(shared_data("cmu-bvh/131_01.bvh"), target_fps=30)
    assert sequence.meta["fps"] == 30.0 and sequence.num_frames == len(range(0, 994, 4))
    np.testing.assert_array_equal(sequence.data, cmu["131_01"].data[:, ::4])


# --- malformed input --------------------------------------------------------------------


def error_line(path, error) -> int:
    """The line number of a "<path>:<line>: <what>" error."""
    match = re.match(rf"{re.escape(str(path))}:(\d+): ", str(error))
    assert match, f"no file:line in {error}"
    return int(match.group(1))


def test_truncated_at_every_byte(tmp_path):
    """Every cut before the last value fails, naming a line of what is left."""
    data = tiny().encode()
    path = tmp_path / "cut.bvh"
    for size in range(1, len(data.rstrip()) - 1):
        path.write_bytes(data[:size])
        with pytest.raises(ValueError) as error:
            parse_bvh(path)
        assert 1 <= error_line(path, error.value) <= data[:size].count(b"\n") + 1


LINES = tiny().splitlines()


def edited(line: int, new: str | None) -> str:
    """The tiny file with its 1-based `line` replaced by `new` (None deletes it)."""
    lines = LINES[: line - 1] + ([] if new is None else [new]) + LINES[line:]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text, line, message",
    [
        (edited(7, None), 7, "expected '{' after JOINT Upper, found 'OFFSET'"),  # JOINT Upper's {
        (edited(20, None), 20, "found 'MOTION'"),  # the root's closing brace
        (edited(19, "  }\n  }"), 21, "expected 'MOTION' after the hierarchy, found '}'"),
        (edited(9, "    CHANNELS 3 Zrotation Xrotation"), 9, "declares 3 channels but lists 2"),
        (edited(9, "    CHANNELS 2 Zrotation Xrotation Yrotation"), 9, "declares 2 channels"),
        (edited(9, "    CHANNELS 3 Zrotation Xrotation Wrotation"), 9, "unknown channel 'Wrotation'"),
        (edited(9, "    ROTATION 0 0 0"), 9, "expected OFFSET, CHANNELS, JOINT, End Site or '}'"),
        (edited(14, "      End Joint"), 14, "expected 'Site' after End, found 'Joint'"),
        (edited(16, "        CHANNELS 1 Xrotation"), 16, "expected OFFSET or '}' in End Site"),
        (edited(8, "    OFFSET 1 0"), 8, "expected 3 numbers after OFFSET, found 2"),
        (edited(8, "    OFFSET 1 nan 0"), 8, "'nan' is not a finite number"),
        (edited(8, None), 18, "JOINT Upper (line 6) has no OFFSET"),
        (edited(10, "    JOINT Hips"), 10, "joint name 'Hips' is used twice"),
        (edited(1, "HIERARCHY;"), 1, "expected 'HIERARCHY' at the start of the file"),
        (edited(22, "Frames: four"), 22, "'four' is not a frame count"),
        (edited(22, "Frames: 5"), 22, "'Frames: 5' but 4 rows of values follow (truncated?)"),
        (edited(22, "Frames: 3"), 22, "'Frames: 3' but 4 rows of values follow"),
        (edited(23, "Frame Time: 0"), 23, "frame time '0' is not a positive number"),
        (edited(23, None), 23, "expected 'Frame Time: <seconds>'"),
        (edited(26, "0 0 0   0 0 0   90 90 0 0 0"), 26, "expected 12 values"),
        (edited(26, "0 0 0   0 0 0   90 90 0 0 0 0 0"), 26, "expected 12 values"),
        (edited(25, "0 0 0   nan 0 0  0 0 0   0 0 0"), 25, "NaN or infinite"),
        (edited(25, "0 0 0   -inf 0 0  0 0 0   0 0 0"), 25, "NaN or infinite"),
        (edited(25, "0 0 0   9O 0 0  0 0 0   0 0 0"), 25, "non-numeric"),
    ],
)
def test_malformed_input_names_the_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        parse_bvh(path)
    assert error_line(path, error.value) == line


@pytest.mark.parametrize(
    "data, message", [(b"", "empty file"), (b" \r\n\t\n", "empty file"), (b"HIERARCHY\0\xff\n", "a binary file")]
)
def test_empty_and_binary_files(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {message}"):
        parse_bvh(path)


def test_names_in_a_legacy_code_page(tmp_path):
    """3ds Max and MotionBuilder write joint names in the machine's 8-bit code page: the file
    is not UTF-8, and the names are read as Latin-1 (keywords and numbers are ASCII)."""
    text = tiny().replace("ROOT Hips", "ROOT Hüfte")
    latin1 = write(tmp_path, text.encode("latin-1"))
    assert parse_bvh(latin1).joint_names[0] == "Hüfte"
    assert parse_bvh(write(tmp_path, text.encode("utf-8"), "utf8.bvh")).joint_names[0] == "Hüfte"


def test_values_beyond_float32_are_an_error(tmp_path):
    text = tiny().replace("OFFSET 0 0 3", "OFFSET 0 0 1e40", 1)
    with pytest.raises(ValueError, match="beyond float32's range"):
        read_bvh(write(tmp_path, text), include_end_sites=True)


def test_deep_nesting_is_not_a_recursion(tmp_path):
    text = "HIERARCHY\nROOT j0 {\n" + "".join(f"JOINT j{i} {{\n" for i in range(1, 20000))
    with pytest.raises(ValueError, match="end of the file"):
        parse_bvh(write(tmp_path, text))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(tiny())),
            st.integers(0, 4),
            st.sampled_from(
                [
                    "",
                    "{",
                    "}",
                    "\n",
                    " ",
                    "nan",
                    "9",
                    "-",
                    ".",
                    "JOINT",
                    "End Site",
                    "OFFSET",
                    "CHANNELS 1",
                    "MOTION",
                    "Frames: 9",
                ]
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_random_edits_fail_cleanly(tmp_path_factory, edits):
    """Cutting and inserting anywhere gives a BvhMotion or a ValueError, never another error."""
    text = tiny()
    for position, cut, insert in edits:
        text = text[:position] + insert + text[position + cut :]
    path = write(tmp_path_factory.mktemp("fuzz"), text)
    try:
        bvh = parse_bvh(path)
    except ValueError as error:
        assert str(error).startswith(str(path))
    else:
        assert bvh.positions(include_end_sites=True).shape[1] == len(bvh.joint_names) + len(bvh.end_site_parents)
