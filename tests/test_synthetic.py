"""The built-in synthetic dataset: shapes, determinism, plausible anatomy for every action,
the second person, sit down against stand up, separability of the classes, argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from skelang.data.layouts import get_layout
from skelang.data.synthetic import (
    HEAD,
    L_FOOT,
    L_SHOULDER,
    R_FOOT,
    R_SHOULDER,
    SPINE_BASE,
    SYNTHETIC_ACTIONS,
    SyntheticSkeletons,
    generate_sequence,
    synthetic_class_names,
)

ACTIONS = synthetic_class_names()
BONES = [(joint, parent) for joint, parent in enumerate(get_layout("ntu25").parents) if parent >= 0]


def room_height(sequence, body=0) -> np.ndarray:
    """(T, V) height above the floor of every joint, from the camera coordinates and the view."""
    view = sequence.meta["view"]
    pitch = np.deg2rad(view["camera_pitch_deg"])
    _, y, z = sequence.data[..., body].astype(np.float64)
    return np.cos(pitch) * y + np.sin(pitch) * z + view["camera_height"]


def bone_lengths(sequence, body=0) -> np.ndarray:
    """(T, number of bones) length of every bone in every frame."""
    joints = sequence.data[..., body].astype(np.float64)
    return np.stack([np.linalg.norm(joints[:, :, j] - joints[:, :, p], axis=0) for j, p in BONES], 1)


def test_at_least_14_named_and_described_actions():
    assert len(ACTIONS) >= 14 and len(set(ACTIONS)) == len(ACTIONS)
    assert {
        "wave",
        "clap",
        "kick",
        "squat",
        "jump",
        "punch",
        "sit down",
        "stand up",
        "bow",
        "raise both arms",
        "turn around",
        "walk in place",
    } <= set(ACTIONS)
    assert all(len(action.description) > 30 and action.description.endswith(".") for action in SYNTHETIC_ACTIONS)


@pytest.mark.parametrize("num_frames", [None, 2, 64])
def test_shape_dtype_and_meta(num_frames):
    sequence = generate_sequence("wave", seed=0, index=3, num_frames=num_frames)
    C, T, V, M = sequence.data.shape
    assert (C, V, M) == (3, 25, 2) and sequence.data.dtype == np.float32
    assert T == num_frames if num_frames else 40 <= T <= 100
    assert sequence.layout == "ntu25" and sequence.label == ACTIONS.index("wave")
    assert sequence.meta["source"] == "synthetic" and sequence.meta["action"] == "wave"
    assert (sequence.meta["seed"], sequence.meta["index"]) == (0, 3)
    assert 0.85 <= sequence.meta["performer"]["body_scale"] <= 1.15
    assert abs(sequence.meta["view"]["yaw_deg"]) <= 45
    # Facing the camera from about 3 m (z is the depth), right side at larger x, as in Kinect data.
    assert 2.0 < sequence.data[2, :, SPINE_BASE, 0].mean() < 4.2
    assert sequence.data[0, 0, R_SHOULDER, 0] > sequence.data[0, 0, L_SHOULDER, 0] + 0.1


def test_deterministic_under_seed_and_index():
    first = generate_sequence("clap", seed=7, index=5).data
    assert np.array_equal(first, generate_sequence("clap", seed=7, index=5).data)
    assert not np.array_equal(first, generate_sequence("clap", seed=8, index=5).data)
    assert not np.array_equal(first, generate_sequence("clap", seed=7, index=6).data)
    dataset = SyntheticSkeletons(samples_per_class=3, seed=7)
    backwards = [dataset[i].data for i in reversed(range(len(dataset)))][::-1]
    assert all(np.array_equal(dataset[i].data, backwards[i]) for i in range(len(dataset)))
    assert np.array_equal(dataset[5].data, generate_sequence(5 % len(ACTIONS), seed=7, index=5).data)


@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_has_plausible_anatomy(action):
    for index in range(4):
        clean = generate_sequence(action, seed=1, index=index, noise_std=0.0, second_person_prob=1.0)
        assert np.isfinite(clean.data).all()
        for body in (0, 1):
            lengths = bone_lengths(clean, body)
            assert np.ptp(lengths, axis=0).max() < 1e-4, "bones keep their length"
            assert lengths.min() > 0.02
            height = room_height(clean, body)
            assert (height[:, HEAD] > height[:, SPINE_BASE] + 0.2).all(), "the head stays above the hips"
            lowest_foot = height[:, [L_FOOT, R_FOOT]].min(1)
            assert (lowest_foot > -0.01).all(), "no foot goes through the floor"
            if action == "jump" and body == 0:
                assert lowest_foot.max() > 0.15, "both feet leave the floor"
            else:
                assert (lowest_foot < 0.01).all(), "a foot stays on the floor"
        noisy = generate_sequence(action, seed=1, index=index)
        deviation = np.abs(bone_lengths(noisy) - bone_lengths(clean))
        assert 0.002 < np.median(deviation) < 0.03 and np.quantile(deviation, 0.95) < 0.05


def test_the_movement_is_not_still():
    for action in ACTIONS:
        data = generate_sequence(action, seed=2, index=0, noise_std=0.0).data[..., 0]
        assert np.ptp(data, axis=1).max() > 0.2, f"{action}: some joint moves more than 20 cm"


def test_second_person():
    alone = generate_sequence("bow", seed=3, index=1, second_person_prob=0.0)
    assert not alone.data[..., 1].any() and alone.num_bodies == 1 and not alone.meta["second_person"]
    together = generate_sequence("bow", seed=3, index=1, second_person_prob=1.0)
    assert together.num_bodies == 2 and together.meta["second_person"]
    assert np.array_equal(together.data[..., 0], alone.data[..., 0]), "the performer is unchanged"
    floor_xz = together.data[[0, 2], :, SPINE_BASE]  # (2, T, M)
    apart = np.linalg.norm(floor_xz[..., 0] - floor_xz[..., 1], axis=0)
    assert (apart > 0.5).all(), "the bystander stands beside the performer"
    dataset = SyntheticSkeletons(samples_per_class=20, seed=0)
    share = np.mean([dataset[i].meta["second_person"] for i in range(len(dataset))])
    assert 0.15 < share < 0.45


def test_stand_up_is_sit_down_played_backwards():
    sit = generate_sequence("sit down", seed=4, index=2, noise_std=0.0, num_frames=60)
    stand = generate_sequence("stand up", seed=4, index=2, noise_std=0.0, num_frames=60)
    assert not np.allclose(sit.data, stand.data, atol=0.05)
    sit_head, stand_head = room_height(sit)[:, HEAD], room_height(stand)[:, HEAD]
    assert sit_head[0] - sit_head[-1] > 0.3 and stand_head[-1] - stand_head[0] > 0.3
    # Same performer and view: the standing and the seated poses match, in reverse order.
    assert abs(sit_head[0] - stand_head[-1]) < 0.03 and abs(sit_head[-1] - stand_head[0]) < 0.03


def features(sequence) -> np.ndarray:
    """Per-joint mean over each third of the sequence and std over time of the first body,
    centred on its average spine base."""
    joints = sequence.data[..., 0].astype(np.float64)
    joints = joints - joints[:, :, SPINE_BASE].mean(1)[:, None, None]
    thirds = [part.mean(1) for part in np.array_split(joints, 3, axis=1)]
    return np.concatenate([*thirds, joints.std(1)], None)


def test_nearest_centroid_separates_the_classes():
    train = SyntheticSkeletons(samples_per_class=8, seed=0)
    test = SyntheticSkeletons(samples_per_class=4, seed=1)
    train_features = np.stack([features(train[i]) for i in range(len(train))])
    centroids = np.stack([train_features[train.labels == label].mean(0) for label in range(len(ACTIONS))])
    test_features = np.stack([features(test[i]) for i in range(len(test))])
    predicted = np.linalg.norm(test_features[:, None] - centroids[None], axis=2).argmin(1)
    assert (predicted == test.labels).mean() > 0.6


def test_dataset_labels_and_subset():
    dataset = SyntheticSkeletons(samples_per_class=2, seed=0)
    assert len(dataset) == 2 * len(ACTIONS) and dataset.class_names == ACTIONS
    assert np.array_equal(dataset.labels, np.arange(len(dataset)) % len(ACTIONS))
    assert [dataset[i].label for i in range(len(ACTIONS))] == list(range(len(ACTIONS)))
    assert dataset[-1].label == dataset.labels[-1]
    subset = SyntheticSkeletons(samples_per_class=3, seed=0, num_frames=32, actions=["stand up", "wave"])
    assert len(subset) == 6 and subset.class_names == ["stand up", "wave"]
    assert [subset[i].label for i in range(6)] == [0, 1, 0, 1, 0, 1]
    assert [subset[i].meta["action"] for i in range(2)] == ["stand up", "wave"]
    assert subset[0].data.shape == (3, 32, 25, 2)
    with pytest.raises(IndexError):
        subset[6]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(action="moonwalk"), "known actions: wave, clap"),
        (dict(action=len(ACTIONS)), "out of range"),
        (dict(seed=-1), "seed"),
        (dict(index=-2), "index"),
        (dict(num_frames=1), "num_frames"),
        (dict(second_person_prob=1.5), "second_person_prob"),
        (dict(noise_std=-0.01), "noise_std"),
        (dict(noise_std=float("nan")), "noise_std"),
    ],
)
def test_generate_sequence_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        generate_sequence(**{"action": "wave", "seed": 0, **arguments})


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(samples_per_class=0), "samples_per_class"),
        (dict(seed=-1), "seed"),
        (dict(actions=[]), "at least one"),
        (dict(actions=["wave", "wave"]), "duplicates"),
        (dict(actions=["wave", "fly"]), "unknown synthetic action 'fly'"),
        (dict(second_person_prob=-0.1), "second_person_prob"),
    ],
)
def test_dataset_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        SyntheticSkeletons(**arguments)
