"""NTU RGB+D raw .skeleton files: the C++ parser against NTU's own converter and the
pure-Python reference, denoising, every real example, and malformed input."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skelang import _C
from skelang.data import ntu
from skelang.data.safe_pickle import load_npy_object
from skelang.data.sequence import MissingSkeletonError
from skelang.reference.ntu_skeleton import parse_ntu_skeleton as parse_python

CONVERTER_PAIR = "ntu60/converter_pair/S001C001P001R001A001.skeleton"
RAW = "ntu60/raw_examples"


def test_parse_equals_ntu_converter_exactly(shared_data):
    path = shared_data(CONVERTER_PAIR)
    official = load_npy_object(str(path) + ".npy")
    ours = ntu.official_body_arrays(ntu.parse_ntu_skeleton(path))
    assert official["skel_body0"].shape == (103, 25, 3)
    assert np.array_equal(ours["skel_body0"], official["skel_body0"])  # bit-exact
    assert ours["nbodys"].tolist() == list(official["nbodys"])


def test_every_raw_example(shared_data):
    folder = shared_data(RAW)
    with open(shared_data("ntu60/manifest_raw_examples.csv")) as f:
        manifest = {row["file"]: row for row in csv.DictReader(f)}
    assert len(manifest) == 22
    for name, row in manifest.items():
        path = folder / name
        parsed = ntu.parse_ntu_skeleton(path)
        reference = parse_python(str(path))
        for key in ("bodies_per_frame", "body_frame", "body_id", "body_info", "joints"):
            np.testing.assert_array_equal(parsed[key], reference[key], err_msg=f"{name} {key}")
        assert parsed["num_frames"] == int(row["frames"])
        assert int(parsed["bodies_per_frame"].max(initial=0)) == int(row["max_bodies"])
        if int(row["max_bodies"]) == 0:  # S005C003P016R002A009: the documented outcome
            with pytest.raises(MissingSkeletonError, match=f"{name}: no body in any of its 69 frames"):
                ntu.read_ntu_skeleton(path)
            continue
        sequence = ntu.read_ntu_skeleton(path)
        assert sequence.data.shape[0] == 3 and sequence.data.shape[2:] == (25, 2)
        assert sequence.label == int(row["action_id"]) - 1
        assert sequence.meta["subject"] == int(row["subject"])
        assert np.isfinite(sequence.data).all()
        assert sequence.num_bodies == 1  # all examples are one-person actions


def test_two_body_example_keeps_one_person_after_denoising(shared_data):
    # Its second body is Kinect noise: two bodies in one frame, none elsewhere.
    path = shared_data(f"{RAW}/S005C002P004R001A003.skeleton")
    parsed = ntu.parse_ntu_skeleton(path)
    assert len(set(parsed["body_id"].tolist())) == 2
    assert ntu.read_ntu_skeleton(path).num_bodies == 1
    raw = ntu.read_ntu_skeleton(path, denoise=False)
    assert raw.num_bodies == 2


def test_untracked_joints_keep_nan_projections(shared_data):
    # Kinect writes NaN depth/colour projections for untracked joints; x y z stay finite.
    parsed = ntu.parse_ntu_skeleton(shared_data(f"{RAW}/S008C003P007R001A008.skeleton"))
    assert np.isnan(parsed["joints"][..., 3:7]).any()
    assert np.isfinite(parsed["joints"][..., :3]).all()


def test_missing_skeleton_list(shared_data):
    names = ntu.read_missing_skeletons(shared_data("ntu60/ntu60_samples_with_missing_skeletons.txt"))
    assert len(names) == 302
    assert "S005C003P016R002A009" in names


def test_sample_names():
    assert ntu.parse_ntu_name("S017C003P020R002A060.skeleton") == {
        "setup": 17,
        "camera": 3,
        "subject": 20,
        "replication": 2,
        "action": 60,
    }
    with pytest.raises(ValueError, match="not an NTU RGB\\+D sample name"):
        ntu.parse_ntu_name("video.avi")
    assert ntu.parse_ntu_name("S032C001P106R001A120")["action"] == 120
    for bad, message in (
        ("S001C001P001R001A000", "action A000 is outside NTU RGB\\+D 120's A001-A120"),
        ("S001C001P001R001A121.skeleton", "action A121 is outside"),
        ("S000C001P001R001A001", "setup S000 is outside NTU RGB\\+D 120's S001-S032"),
        ("S001C004P001R001A001", "camera C004 is outside"),
        ("S001C001P107R001A001", "subject P107 is outside"),
        ("S001C001P001R003A001", "replication R003 is outside"),
    ):
        with pytest.raises(ValueError, match=f"^{bad}: {message}"):
            ntu.parse_ntu_name(bad)


def _body_text(body_id, joints):
    lines = [f"{body_id} 0 1 1 1 1 0 0.1 -0.2 2", str(len(joints))]
    lines += [" ".join(repr(float(v)) for v in joint) + " 10 20 30 40 1 0 0 0 2" for joint in joints]
    return lines


def make_skeleton_text(frames):
    """frames: list of lists of (body_id, (25, 3) joints)."""
    lines = [str(len(frames))]
    for bodies in frames:
        lines.append(str(len(bodies)))
        for body_id, joints in bodies:
            lines += _body_text(body_id, joints)
    return "\n".join(lines) + "\n"


coordinates = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.integers(0, 2**64 - 1),
                st.lists(st.tuples(coordinates, coordinates, coordinates), min_size=25, max_size=25),
            ),
            max_size=3,
        ),
        max_size=5,
    )
)
def test_parser_round_trips_generated_files(frames):
    parsed = _C.parse_ntu_skeleton_text(make_skeleton_text(frames), "generated.skeleton")
    assert parsed["num_frames"] == len(frames)
    assert parsed["bodies_per_frame"].tolist() == [len(bodies) for bodies in frames]
    records = [(t, body_id, joints) for t, bodies in enumerate(frames) for body_id, joints in bodies]
    assert parsed["body_id"].tolist() == [r[1] for r in records]
    assert parsed["body_frame"].tolist() == [r[0] for r in records]
    if records:
        expected = np.array([r[2] for r in records], dtype=np.float64)
        assert np.array_equal(parsed["joints"][..., :3], expected)  # repr() round-trips exactly


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_truncated_files_fail_with_file_and_line(data):
    joints = np.linspace(-1, 1, 75).reshape(25, 3)
    text = make_skeleton_text([[(7, joints)], [(7, joints), (9, joints)]])
    cut = data.draw(st.integers(0, len(text) - 2))
    truncated = text[:cut]
    if truncated.strip() == "":
        expected = "empty file"
    else:
        expected = r"truncated\.skeleton:\d+: "
    with pytest.raises(ntu.SkeletonParseError, match=expected):
        _C.parse_ntu_skeleton_text(truncated, "truncated.skeleton")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(blob):
    text = blob.decode("latin-1")
    try:
        _C.parse_ntu_skeleton_text(text, "random.skeleton")
    except ntu.SkeletonParseError as error:
        assert str(error).startswith("random.skeleton:")


BAD_FILES = [
    ("", r"bad\.skeleton:1: empty file"),
    ("2\n0\n", r"bad\.skeleton:3: unexpected end of file, expected a body count"),
    ("x\n", r"bad\.skeleton:1: expected the frame count, got 'x'"),
    ("1\n1\n5 0 0 0 0 0 0 0 0 2\n24\n", r"bad\.skeleton:4: expected 25 joints per body, got 24"),
    ("1\n1\n5 0 0 0 0 0 0 0 2\n25\n", r"bad\.skeleton:3: the body info line .* must have 9 values, got 8"),
    ("1\n1\n5 0 0 0 0 0 0 0 0 2\n25\n1 2 3\n", r"bad\.skeleton:5: a joint line .* must have 12 values, got 3"),
    (
        "1\n1\n5 0 0 0 0 0 0 0 0 2\n25\n" + "1 2 abc 0 0 0 0 0 0 0 0 0\n" * 25,
        r"bad\.skeleton:5: expected a number .* got 'abc'",
    ),
    (
        "1\n1\n5 0 0 0 0 0 0 0 0 2\n25\n" + "1 2 3 0 0 0 0 0 0 0 0 0\n" * 3 + "inf 2 3 0 0 0 0 0 0 0 0 0\n",
        r"bad\.skeleton:8: non-finite value 'inf'",
    ),
    ("1\n1\n5 0 0 0 0 0 0 0 0 2\n25\n" + "NaN 2 3 0 0 0 0 0 0 0 0 0\n", r"bad\.skeleton:5: non-finite value 'NaN'"),
    ("1\n0\n0\n", r"bad\.skeleton:3: unexpected content after the 1 frames"),
    ("99999999999\n", r"bad\.skeleton:1: the frame count 99999999999 is implausibly large"),
]


@pytest.mark.parametrize("text,message", BAD_FILES)
def test_malformed_files_name_file_and_line(text, message):
    with pytest.raises(ntu.SkeletonParseError, match=message):
        _C.parse_ntu_skeleton_text(text, "bad.skeleton")


def test_missing_file(tmp_path):
    with pytest.raises(ntu.SkeletonParseError, match="cannot open the file"):
        ntu.parse_ntu_skeleton(tmp_path / "absent.skeleton")


def test_denoising_drops_short_and_wide_bodies():
    rng = np.random.default_rng(0)
    person = np.zeros((25, 3))
    person[:, 1] = np.linspace(0, 1.7, 25)  # tall and thin: a person
    wide = np.zeros((25, 3))
    wide[:, 0] = np.linspace(0, 2.0, 25)  # wider than tall: furniture
    frames = []
    for t in range(40):
        bodies = [(1, person + rng.normal(0, 0.01, (25, 3)))]
        bodies.append((2, wide + rng.normal(0, 0.01, (25, 3))))
        if t < 5:
            bodies.append((3, person + 1.0))  # a flicker of 5 frames
        frames.append(bodies)
    parsed = _C.parse_ntu_skeleton_text(make_skeleton_text(frames))
    kept = ntu.denoise_bodies(parsed)
    assert [body["id"] for body in kept] == [1]


def test_two_people_fill_two_actor_slots():
    a = np.zeros((25, 3))
    a[:, 1] = np.linspace(0, 1.7, 25)
    b = a + np.array([1.0, 0, 0])
    frames = [[(1, a + 0.01 * t), (2, b - 0.02 * t)] for t in range(30)]
    sequence_path_text = make_skeleton_text(frames)
    parsed = _C.parse_ntu_skeleton_text(sequence_path_text)
    actors = ntu.assign_actors(ntu.denoise_bodies(parsed), 30)
    assert np.abs(actors[:, 0]).sum() > 0 and np.abs(actors[:, 1]).sum() > 0
    # the body that moves more is actor 1
    assert np.allclose(actors[5, 0], b - 0.1)


decimal_text = st.builds(
    lambda sign, digits, point: sign + (digits[:point] or "0") + ("." + digits[point:] if point < len(digits) else ""),
    st.sampled_from(["", "-", "+"]),
    st.text("0123456789", min_size=1, max_size=18),
    st.integers(0, 18),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(decimal_text, min_size=12, max_size=12))
def test_decimals_parse_exactly_as_python_float(values):
    # Short decimals take a fast path; it must round exactly as strtod (and float()) do.
    text = "1\n1\n5 0 0 0 0 0 0 0 0 2\n25\n" + (" ".join(values) + "\n") * 25
    parsed = _C.parse_ntu_skeleton_text(text)
    assert parsed["joints"][0, 0].tolist() == [float(v) for v in values]


def test_a_file_named_outside_ntu_ranges_is_an_error_naming_it(tmp_path):
    """S001C001P001R001A000.skeleton was read with label -1."""
    path = tmp_path / "S001C001P001R001A000.skeleton"
    path.write_text("0\n")
    with pytest.raises(ValueError, match=r"S001C001P001R001A000\.skeleton: action A000 is outside"):
        ntu.read_ntu_skeleton(path)
