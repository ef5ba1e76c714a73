"""Skeleton geometry: C++ against the numpy reference, the properties each step promises,
the Preprocess pipeline's determinism, and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest

from skelang import _C
from skelang.data import preprocess
from skelang.data.layouts import get_layout
from skelang.data.sequence import Sequence
from skelang.data.synthetic import generate_sequence
from skelang.reference import preprocess as reference

NTU = get_layout("ntu25")


def random_sequence(seed=0, C=3, T=12, V=25, M=2):
    """Random joints with a body missing in some frames and an empty frame."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (C, T, V, M)).astype(np.float32)
    x[:, 2:5, :, 1] = 0  # body 1 absent in frames 2-4
    x[:, 7] = 0  # nobody in frame 7
    return x


@pytest.mark.parametrize("seed", range(3))
def test_present_frames(seed):
    x = random_sequence(seed)
    np.testing.assert_array_equal(_C.present_frames(x), reference.present_frames(x))
    assert 7 not in _C.present_frames(x)


@pytest.mark.parametrize("rotate,scale", [(True, False), (True, True), (False, False), (False, True)])
def test_normalize_parity(rotate, scale):
    x = random_sequence(1)
    args = (NTU.centre, *NTU.spine, *NTU.shoulders, rotate, scale)
    out, rotation = _C.normalize_skeleton(x, *args)
    out_ref, rotation_ref = reference.normalize_skeleton(x, *args)
    np.testing.assert_allclose(out, out_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(rotation, rotation_ref, atol=1e-5)


def test_normalize_gives_the_canonical_body_frame():
    sequence = generate_sequence("wave", seed=3, second_person_prob=0.0, noise_std=0.0)
    out = preprocess.normalize(sequence, rotate=True, scale=True).data
    body = out[:, :, :, 0]
    np.testing.assert_allclose(body[:, 0, NTU.centre], 0, atol=1e-5)  # centred at frame 0
    spine = (body[:, :, NTU.spine[1]] - body[:, :, NTU.spine[0]]).mean(1)
    assert spine[1] > 0 and abs(spine[0]) < 1e-4 and abs(spine[2]) < 1e-4  # along +y
    shoulders = (body[:, :, NTU.shoulders[0]] - body[:, :, NTU.shoulders[1]]).mean(1)
    assert shoulders[0] > 0 and abs(shoulders[1]) < 1e-4  # right -> left along +x
    lengths = np.linalg.norm(body[:, :, NTU.spine[1]] - body[:, :, NTU.spine[0]], axis=0)
    assert lengths.mean() == pytest.approx(1.0, rel=1e-4)


def test_normalize_removes_the_viewpoint():
    sequence = generate_sequence("kick", seed=4, second_person_prob=0.0, noise_std=0.0)
    angle = np.radians(70)
    turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]], np.float32)
    turned = Sequence(
        _C.apply_linear_transform(sequence.data, turn) + np.float32(0.5) * (sequence.data != 0), "ntu25", 0
    )
    a = preprocess.normalize(sequence).data
    b = preprocess.normalize(turned).data
    np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("start,step,num_frames", [(0, 1, 12), (0, 11 / 63, 64), (2.5, 0.3, 10), (0, 0, 1), (-3, 2, 9)])
def test_resample_parity(start, step, num_frames):
    x = random_sequence(2)
    np.testing.assert_allclose(
        _C.resample_frames(x, start, step, num_frames),
        reference.resample_frames(x, start, step, num_frames),
        rtol=1e-5,
        atol=1e-6,
    )


def test_resample_keeps_frames_at_integer_positions_and_absent_bodies_absent():
    x = random_sequence(3)
    np.testing.assert_array_equal(_C.resample_frames(x, 0, 1, 12), x)
    out = _C.resample_frames(x, 1.5, 1.0, 4)  # positions 1.5, 2.5, 3.5, 4.5
    assert not out[:, 1:3, :, 1].any()  # body 1 absent in frames 2-4 stays absent


def test_linear_transform_parity_and_zeros():
    x = random_sequence(4, C=4)
    matrix = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    out = _C.apply_linear_transform(x, matrix)
    np.testing.assert_allclose(out, reference.apply_linear_transform(x, matrix), rtol=1e-5, atol=1e-5)
    assert not out[:, 7].any()
    np.testing.assert_array_equal(out[3], x[3])  # a score channel is left alone


@pytest.mark.parametrize("name", preprocess.STREAMS)
@pytest.mark.parametrize("C", [3, 4])
def test_stream_parity(name, C):
    x = random_sequence(5, C=C)
    out = _C.compute_stream(x, name, list(NTU.parents), NTU.centre)
    expected = reference.compute_stream(x, name, NTU.parents, NTU.centre)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert not out[:, 7].any() and not out[:, 2:5, :, 1].any()


def test_stream_definitions():
    x = random_sequence(6)
    bone = _C.compute_stream(x, "bone", list(NTU.parents), NTU.centre)
    child, parent = NTU.bones[0]
    np.testing.assert_allclose(bone[:, 0, child, 0], x[:, 0, child, 0] - x[:, 0, parent, 0], rtol=1e-6)
    root = NTU.parents.index(-1)
    assert not bone[:, :, root].any()
    direction = _C.compute_stream(x, "bone_direction", list(NTU.parents), NTU.centre)
    lengths = np.linalg.norm(direction[:3, 0, [c for c, _ in NTU.bones], 0], axis=0)
    np.testing.assert_allclose(lengths, 1, rtol=1e-5)
    motion = _C.compute_stream(x, "joint_motion", list(NTU.parents), NTU.centre)
    np.testing.assert_allclose(motion[:, 0], x[:, 1] - x[:, 0], rtol=1e-6)
    assert not motion[:, -1].any()
    local = _C.compute_stream(x, "joint_local", list(NTU.parents), NTU.centre)
    assert not local[:, :, NTU.centre].any()


def test_pipeline_is_deterministic_under_a_seed():
    sequence = generate_sequence("jump", seed=1)
    pipeline = preprocess.Preprocess(
        num_frames=32, streams=("joint", "bone"), augmentation=preprocess.Augmentation(15, 0.1, 0.1, 0.05)
    )
    a = pipeline(sequence, np.random.default_rng(7))
    b = pipeline(sequence, np.random.default_rng(7))
    c = pipeline(sequence, np.random.default_rng(8))
    assert a.shape == (6, 32, 25, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    evaluation = pipeline(sequence)
    np.testing.assert_array_equal(evaluation, pipeline(sequence))


def test_every_step_can_be_switched_off():
    sequence = generate_sequence("clap", seed=2, second_person_prob=0.0)
    identity = preprocess.Preprocess(num_frames=sequence.num_frames, normalize=False, eval_crop=1.0)
    np.testing.assert_allclose(identity(sequence), sequence.data, rtol=1e-6, atol=1e-6)


def test_one_frame_sequence():
    x = random_sequence(7)[:, :1]
    out = preprocess.Preprocess(num_frames=16)(Sequence(x, "ntu25", 0))
    assert out.shape == (3, 16, 25, 2)
    np.testing.assert_array_equal(out[:, 0], out[:, 15])


def test_bad_arguments():
    x = random_sequence(8)
    with pytest.raises(
        ValueError, match=r"normalize_skeleton: centre = 30 is not a joint index of a skeleton with 25 joints"
    ):
        _C.normalize_skeleton(x, 30, 0, 20, 4, 8)
    with pytest.raises(ValueError, match=r"must be a \(C, T, V, M\) array, got 3 dimensions"):
        _C.present_frames(x[0])
    with pytest.raises(ValueError, match="at least 3 channels"):
        _C.present_frames(x[:2])
    with pytest.raises(ValueError, match="unknown stream 'angles'"):
        _C.compute_stream(x, "angles", list(NTU.parents), 1)
    with pytest.raises(ValueError, match="parents must list 25 joints, got 3"):
        _C.compute_stream(x, "bone", [0, 1, 2], 1)
    with pytest.raises(ValueError, match="unknown or no stream"):
        preprocess.Preprocess(streams=("joints",))


def test_two_dimensional_data_keeps_its_score_channel():
    x = random_sequence(9)
    x[2] = np.abs(x[2]) * (x[0] != 0)  # a score channel, zero where the body is absent
    args = (NTU.centre, *NTU.spine, *NTU.shoulders, True, True, 2)
    out, rotation = _C.normalize_skeleton(x, *args)
    out_ref, _ = reference.normalize_skeleton(x, *args)
    np.testing.assert_allclose(out, out_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(rotation, np.eye(3))  # 2D data is never rotated
    np.testing.assert_array_equal(out[2], x[2])
    for name in preprocess.STREAMS:
        streamed = _C.compute_stream(x, name, list(NTU.parents), NTU.centre, 2)
        np.testing.assert_allclose(
            streamed, reference.compute_stream(x, name, NTU.parents, NTU.centre, 2), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_array_equal(streamed[2], x[2])
    sequence = Sequence(x, "ntu25", 0, {"coordinates": "xy"})
    augmented = preprocess.Augmentation(rotation_degrees=30, scale=0.2, shear=0.2)(sequence, np.random.default_rng(0))
    np.testing.assert_array_equal(augmented.data[2], x[2])
    assert not np.allclose(augmented.data[:2], x[:2])


def two_d_sequence(seed=0, T=10, V=18, M=2):
    """x, y, score with undetected joints (0, 0, 0), an absent body in some frames."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(0.2, 0.8, (2, T, V, M)), rng.uniform(0.1, 1.0, (1, T, V, M))]).astype(np.float32)
    undetected = rng.random((T, V, M)) < 0.2
    undetected[:, [3, 8]] = True  # two joints never detected
    x[:, undetected] = 0
    x[:, 4:6, :, 1] = 0  # body 1 absent in frames 4-5
    return x


@pytest.mark.parametrize("seed", range(3))
def test_minmax_parity_and_range(seed):
    x = random_sequence(seed)
    out = _C.minmax_scale(x)
    np.testing.assert_allclose(out, reference.minmax_scale(x), atol=1e-6)
    present = np.any(x != 0, axis=(0, 2))[None, :, None, :].repeat(25, 2)
    for c in range(3):
        values = out[c][present[0]]
        assert values.min() == pytest.approx(-1) and values.max() == pytest.approx(1)
    assert not out[:, 7].any() and not out[:, 2:5, :, 1].any()  # absent stays zero
    flat = np.ones((3, 4, 25, 1), np.float32)  # no spread: 0, never NaN
    assert np.array_equal(_C.minmax_scale(flat), np.zeros_like(flat))


@pytest.mark.parametrize("seed", range(2))
def test_undetected_2d_joints_stay_zero_in_every_step(seed):
    """OpenPose's undetected joints (score 0) are never moved, blended, or differenced."""
    x = two_d_sequence(seed)
    layout = get_layout("openpose18")
    undetected = x[2] == 0
    args = (layout.centre, *layout.spine, *layout.shoulders, False, True)
    out, _ = _C.normalize_skeleton(x, *args, coordinates=2)
    np.testing.assert_allclose(out, reference.normalize_skeleton(x, *args, coordinates=2)[0], atol=1e-5)
    assert not out[:, undetected].any()
    np.testing.assert_allclose(
        _C.minmax_scale(out, coordinates=2), reference.minmax_scale(out, coordinates=2), atol=1e-6
    )
    assert not _C.minmax_scale(out, coordinates=2)[:, undetected].any()
    resampled = _C.resample_frames(out, 0.3, 0.7, 12, coordinates=2)
    np.testing.assert_allclose(resampled, reference.resample_frames(out, 0.3, 0.7, 12, coordinates=2), atol=1e-6)
    assert not resampled[:, :, [3, 8]].any()
    for name in preprocess.STREAMS:
        streamed = _C.compute_stream(out, name, list(layout.parents), layout.centre, 2)
        np.testing.assert_allclose(
            streamed, reference.compute_stream(out, name, layout.parents, layout.centre, 2), atol=1e-5, err_msg=name
        )
        assert not streamed[:, undetected].any(), name
        children = [v for v, p in enumerate(layout.parents) if p in (3, 8)]
        if name in ("bone", "bone_motion", "bone_direction"):  # bones from an undetected parent
            assert not streamed[:2, :, children].any(), name


def test_index_sampling_follows_ctrgcn():
    sequence = generate_sequence("wave", seed=1, second_person_prob=0.0)
    T = sequence.num_frames
    pipeline = preprocess.Preprocess(
        num_frames=20,
        sampling="index",
        minmax=True,
        rotate=False,
        augmentation=preprocess.Augmentation(rotation_degrees=30),
    )
    test_input = pipeline(sequence)
    moved = preprocess.minmax_scale(preprocess.normalize(preprocess.drop_empty_frames(sequence), rotate=False))
    np.testing.assert_array_equal(test_input, moved.data[:, np.linspace(0, T - 1, 20).astype(int)])
    a = pipeline(sequence, np.random.default_rng(5))
    assert np.array_equal(a, pipeline(sequence, np.random.default_rng(5)))
    assert a.shape == (3, 20, 25, 2) and a.min() >= -1 - 1e-6 and a.max() <= 1 + 1e-6
    indices = preprocess.random_frame_indices(T, 200, np.random.default_rng(0))
    assert np.all(np.diff(indices) >= 0) and indices.min() >= 0 and indices.max() < T
    with pytest.raises(ValueError, match="sampling"):
        preprocess.Preprocess(sampling="nearest")


def test_repeat_makes_one_epoch_several_passes():
    from skelang.data.dataset import SkeletonDataset

    sequences = [generate_sequence(action, seed=0) for action in ("wave", "kick", "jump")]
    dataset = SkeletonDataset(sequences, preprocess.Preprocess(num_frames=8), train=True, seed=0, repeat=3)
    assert len(dataset) == 9 and len(dataset.labels) == 3
    assert dataset[4][1] == dataset[1][1]
    assert not np.array_equal(dataset[4][0], dataset[1][0])  # its own random draws
    with pytest.raises(ValueError, match="repeat"):
        SkeletonDataset(sequences, preprocess.Preprocess(), repeat=0)


def test_a_score_zero_joint_with_coordinates_is_zero_in_every_stream():
    """Kinetics-skeleton rounds scores to 3 decimals: a joint may have score 0 and non-zero
    x, y. It is undetected: zero in every stream, as ST-GCN's feeder zeroes it."""
    x = two_d_sequence(3)
    layout = get_layout("openpose18")
    x[0, :, 7, 0], x[1, :, 7, 0], x[2, :, 7, 0] = 0.61, 0.47, 0.0  # score 0, coordinates kept
    for name in preprocess.STREAMS:
        streamed = _C.compute_stream(x, name, list(layout.parents), layout.centre, 2)
        np.testing.assert_allclose(
            streamed, reference.compute_stream(x, name, layout.parents, layout.centre, 2), atol=1e-5, err_msg=name
        )
        assert not streamed[:, :, 7, 0].any(), name
