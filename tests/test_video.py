"""Videos to skeletons and actions: BlazePose's pipeline pieces, the layout mappings, pose
extraction on a real clip of two people hugging, skelang data extract and skelang predict."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest

from skelang.data.layouts import get_layout
from skelang.data.mapping import MAPPINGS, layout_mapping, map_layout
from skelang.data.sequence import Sequence

pytest.importorskip("cv2")
pytest.importorskip("ai_edge_litert")

HUG = "videos/ntu_sample_hug.avi"


# --- the pipeline's pieces ------------------------------------------------------------------


def test_ssd_anchors_are_the_detectors_2254_in_cell_order():
    from skelang.video.blazepose import ssd_anchors

    anchors = ssd_anchors()
    assert anchors.shape == (2254, 2)
    assert np.allclose(anchors[0], [0.5 / 28, 0.5 / 28]) and np.allclose(anchors[1], anchors[0])  # 2 per cell
    assert np.allclose(anchors[1568], [0.5 / 14, 0.5 / 14])  # stride 16 starts after 28 x 28 x 2
    assert np.allclose(anchors[1568 + 392 : 1568 + 392 + 6], [0.5 / 7, 0.5 / 7])  # 6 per 7 x 7 cell
    assert anchors.min() > 0 and anchors.max() < 1


def test_region_from_points_is_upright_for_a_standing_body_and_maps_back():
    from skelang.video.blazepose import Region

    upright = Region.from_points(np.array([100.0, 200.0]), np.array([100.0, 120.0]))
    assert upright.rotation == pytest.approx(0.0) and upright.size == pytest.approx(2 * 80 * 1.25)
    tilted = Region.from_points(np.array([100.0, 200.0]), np.array([180.0, 200.0]))  # lying, head right
    assert tilted.rotation == pytest.approx(math.pi / 2)
    matrix = tilted.to_crop(256)
    head = matrix[:, :2] @ np.array([180.0, 200.0]) + matrix[:, 2]
    assert head == pytest.approx([128, 128 - 256 / (2 * 1.25)])  # the head is up in the crop


def test_weighted_nms_merges_overlapping_boxes_by_score():
    from skelang.video.blazepose import weighted_nms

    boxes = np.array([[0, 0, 1, 1], [0.1, 0, 1.1, 1], [3, 3, 4, 4]], dtype=float)
    scores = np.array([0.9, 0.3, 0.8])
    keypoints = np.zeros((3, 4, 2))
    kept = weighted_nms(scores, boxes, keypoints)
    assert [round(score, 2) for score, _, _ in kept] == [0.9, 0.8]
    assert kept[0][1][0] == pytest.approx(0.3 * 0.1 / 1.2)  # the score-weighted mean


# --- layout mappings ------------------------------------------------------------------------


@pytest.mark.parametrize("source, target", list(MAPPINGS))
def test_mappings_name_real_joints_and_keep_same_named_ones(source, target):
    source_names, target_names = get_layout(source).joint_names, get_layout(target).joint_names
    weights = layout_mapping(source, target)
    assert weights.shape == (len(target_names), len(source_names))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    for j, name in enumerate(target_names):  # a joint of the same name maps to itself alone
        if name in source_names:
            assert weights[j, source_names.index(name)] == 1.0, name
    mapping = MAPPINGS[(source, target)]
    assert set(mapping) == set(target_names)
    assert {s for parts in mapping.values() for s in parts} <= set(source_names)


def test_map_layout_places_derived_joints_between_their_sources():
    layout = get_layout("blazepose33")
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, 4, 33, 2)).astype(np.float32)
    data[..., 1] = 0  # an absent body stays absent
    ntu = map_layout(Sequence(data, "blazepose33"), "ntu25")
    names = get_layout("ntu25").joint_names
    hips = (data[:, :, layout.joint_names.index("left_hip")] + data[:, :, layout.joint_names.index("right_hip")]) / 2
    np.testing.assert_allclose(ntu.data[:, :, names.index("spine_base")], hips, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        ntu.data[:, :, names.index("left_elbow")], data[:, :, layout.joint_names.index("left_elbow")]
    )
    assert not ntu.data[..., 1].any() and ntu.layout == "ntu25" and ntu.meta["mapped_from"] == "blazepose33"
    with pytest.raises(ValueError, match="no mapping from layout ntu25 to coco17"):
        layout_mapping("ntu25", "coco17")


# --- a real video ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hug_poses():
    from conftest import require_shared_data

    from skelang.video import extract_poses

    return extract_poses(require_shared_data(HUG), max_people=2)


def test_two_people_are_found_in_most_frames_with_human_proportions(hug_poses):
    poses = hug_poses
    print(f"{poses.frames_per_second:.1f} frames/s, people per frame {np.bincount(poses.found.sum(1))}")
    assert len(poses.found) == 72
    assert (poses.found.sum(axis=1) == 2).mean() > 0.6  # two people in most frames
    for m in range(2):
        found = poses.found[:, m]
        world = poses.world[found, m]
        shoulders = np.median(np.linalg.norm(world[:, 11] - world[:, 12], axis=1))
        upper_arm = np.median(np.linalg.norm(world[:, 11] - world[:, 13], axis=1))
        thigh = np.median(np.linalg.norm(world[:, 23] - world[:, 25], axis=1))
        assert 0.25 < shoulders < 0.5 and 0.18 < upper_arm < 0.4 and 0.3 < thigh < 0.6, (shoulders, upper_arm, thigh)


def test_identities_are_stable_and_people_are_placed_side_by_side(hug_poses):
    poses = hug_poses
    hips = poses.image[:, :, 23:25, 0].mean(axis=2)  # (T, M) hip x in pixels
    for m in range(2):
        track = hips[poses.found[:, m], m]
        assert np.abs(np.diff(track)).max() < 60  # no jump to the other person (they stand ~200 px apart)
    both = poses.found.all(axis=1)
    assert (np.abs(hips[both, 0] - hips[both, 1]) > 100).all()
    camera = poses.sequence().data  # (3, T, 33, M), metres, y up
    depth = camera[2, both][:, 23, :]  # (frames, 2) left hip depths
    assert ((depth > 1.5) & (depth < 10)).all()  # a few metres from the camera
    assert (camera[1, both][:, 0, :] > camera[1, both][:, 23, :]).all()  # the nose above the hips: y up


def test_data_extract_builds_a_cache_and_resumes(shared_data, tmp_path):
    video = shared_data(HUG)
    folder = tmp_path / "videos" / "hug"
    folder.mkdir(parents=True)
    (folder / "clip.avi").symlink_to(video)
    (folder / "broken.mp4").write_bytes(b"not a video")
    command = [
        sys.executable,
        "-m",
        "skelang",
        "data",
        "extract",
        str(tmp_path / "videos"),
        "--out",
        str(tmp_path / "cache"),
        "--layout",
        "ntu25",
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sequences"] == 1 and list(result["skipped"]) == ["broken.mp4"]
    from skelang.data.readers import open_sequences

    [sequence] = open_sequences(str(tmp_path / "cache"))
    assert sequence.layout == "ntu25" and sequence.data.shape == (3, 72, 25, 2)
    assert sequence.label == 0 and sequence.meta["class_names"] == ["hug"]
    # again into PYSKL: the landmarks are read back from the work folder, not extracted
    again = subprocess.run(
        command[:7]
        + [
            str(tmp_path / "hug.pkl"),
            "--format",
            "pyskl",
            "--coordinates",
            "image",
            "--work",
            result["work"],
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["seconds"] == pytest.approx(result["seconds"])
    annotation = pickle.loads((tmp_path / "hug.pkl").read_bytes())["annotations"][0]
    assert annotation["keypoint"].shape == (2, 72, 33, 2) and annotation["keypoint_score"].max() <= 1


def test_predict_a_video_with_a_vst_run_and_render_it(shared_data, synthetic_vst_run, tmp_path):
    import cv2

    run, _ = synthetic_vst_run
    out = tmp_path / "out.mp4"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "skelang",
            "predict",
            str(run),
            shared_data(HUG),
            "--window",
            "48",
            "--render",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(w["start"], w["end"]) for w in report["windows"]] == [(0, 48), (24, 72)]
    for window in report["windows"]:
        assert len(window["top5"]) == 5 and 0 < window["top5"][0]["probability"] <= 1
        assert window["narrative"].startswith("<a") and window["glossary"]
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 72 and capture.read()[0]


def test_predict_with_a_language_model_run_explains(shared_data, synthetic_lm_run_for_video):
    from skelang.runs.predict import predict_video

    report = predict_video(synthetic_lm_run_for_video, shared_data(HUG))
    [window] = report["windows"]
    assert window["top5"][0]["name"] and window["narrative"] and isinstance(window["explanation"], str)
    print(window["top5"][0], window["narrative"], window["explanation"])


@pytest.fixture(scope="module")
def synthetic_lm_run_for_video(synthetic_vst_run, tiny_language_model, tmp_path_factory):
    from conftest import lm_config

    from skelang.runs import train

    config = lm_config(synthetic_vst_run[0], tiny_language_model, explain_samples=0)
    config["train"]["epochs"] = 1
    folder = tmp_path_factory.mktemp("lm_for_video")
    train(config, folder / "run", progress=False)
    return folder / "run"


def test_a_file_that_is_not_a_video_is_a_clear_error(tmp_path):
    from skelang.video import VideoError, video_info

    (tmp_path / "fake.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(VideoError, match="fake.mp4: not a video OpenCV can decode"):
        video_info(tmp_path / "fake.mp4")
    with pytest.raises(VideoError, match="no such video file"):
        video_info(tmp_path / "missing.mp4")


def test_the_predict_command_passes_every_option(monkeypatch, capsys):
    import skelang.runs.predict as predict
    from skelang.cli import main

    seen = {}

    def fake(run_dir, video, **options):
        seen.update(options, run_dir=run_dir, video=video)
        return {"stage": "encoder"}

    monkeypatch.setattr(predict, "predict_video", fake)
    arguments = ["predict", "RUN", "clip.mp4", "--window", "32", "--stride", "8", "--max-people", "1"]
    assert main([*arguments, "--pose-model", "lite", "--coordinates", "world", "--render", "out.mp4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"stage": "encoder"}
    assert seen == {
        "run_dir": "RUN",
        "video": "clip.mp4",
        "window": 32,
        "stride": 8,
        "max_people": 1,
        "landmark_model": "lite",
        "coordinates": "world",
        "render": "out.mp4",
        "progress": False,
    }


def test_a_render_target_of_the_wrong_kind_fails_before_the_pose_extraction(tmp_path, monkeypatch):
    """--render out.gif failed only after minutes of pose extraction."""
    import skelang.video.extract
    from skelang.runs.predict import predict_video

    def no_extraction(*args, **kwargs):
        raise AssertionError("the pose extraction ran")

    monkeypatch.setattr(skelang.video.extract, "extract_poses", no_extraction)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    with pytest.raises(ValueError, match=r"--render .*out\.gif: expected one of \.mp4"):
        predict_video(tmp_path / "no-run", video, render=tmp_path / "out.gif")
    with pytest.raises(ValueError, match="the input video itself"):
        predict_video(tmp_path / "no-run", video, render=video)
