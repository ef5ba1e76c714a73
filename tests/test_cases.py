"""The inputs of ../shared/cases, shaped like the files users report in the trackers of PYSKL,
MMAction2, ST-GCN, NTU RGB+D and BVH tools, each read as its README expects (the whole kind:
see also the reader fuzz test in test_formats.py)."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from conftest import skelang_cli

from skelang.data import preprocess
from skelang.data.cache import SequenceCache
from skelang.data.inspect import convert_dataset, inspect_dataset
from skelang.data.layouts import get_layout
from skelang.data.readers import open_sequences
from skelang.data.safe_pickle import load_pickle


def test_an_ntu60_benchmark_holds_ntu60_samples_only(shared_case, tmp_path):
    folder = shared_case("ntu120-in-ntu60")
    report = inspect_dataset(folder, benchmark="ntu60-xsub")
    assert report["sequences"] == 2 and report["split"]["outside"] == 2
    assert sorted(report["outside_benchmark"]) == ["S018C001P008R001A061", "S020C002P045R002A120"]
    assert all(int(label) < 60 for label in report["per_class"])
    result = convert_dataset(folder, tmp_path / "train", benchmark="ntu60-xsub", part="train", progress=False)
    assert len(result["outside_benchmark"]) == 2
    cache = SequenceCache(result["cache"])
    assert all(label < 60 for label in cache.labels) and all(meta["setup"] <= 17 for meta in cache.meta)
    assert all(s.meta["action"] <= 60 for s in open_sequences(folder, "ntu60-xsub", "train"))
    shown = skelang_cli("data", "inspect", str(folder), "--benchmark", "ntu60-xsub")
    assert shown.returncode == 0 and "left out, outside ntu60-xsub: 2" in shown.stdout
    assert inspect_dataset(folder, benchmark="ntu120-xsub")["sequences"] == 4  # NTU-120 holds them all


def test_pyskl_none_fields_are_unknown_and_a_bad_annotation_is_listed(shared_case, tmp_path):
    report = inspect_dataset(shared_case("pyskl-none-fields/custom_none_img_shape.pkl"))
    assert report["sequences"] == 1 and report["bad_files"] == [] and report["frames"]["max"] == 12
    both = open_sequences(shared_case("pyskl-none-fields/custom_none.pkl"))
    assert [s.meta["name"] for s in both] == ["clip_0001", "clip_0002"] and "img_shape" not in both[0].meta
    assert both[0].meta["coordinates"] == "xy" and both[0].data.shape == (3, 12, 17, 1)
    # one annotation really wrong, among good ones: named, listed, the rest read
    data = load_pickle(shared_case("pyskl-none-fields/custom_none.pkl"))  # restricted: containers and arrays
    data["annotations"][1]["img_shape"] = "big"
    data["annotations"].append({**data["annotations"][0], "frame_dir": "clip_0003", "total_frames": 99})
    bad = tmp_path / "mixed.pkl"
    bad.write_bytes(pickle.dumps(data))
    report = inspect_dataset(bad)
    assert report["sequences"] == 1 and len(report["bad_files"]) == 2
    errors = [entry["error"] for entry in report["bad_files"]]
    assert f"{bad}: annotation 1 ('clip_0002'): 'img_shape' must be (height, width)" in errors[0]
    assert f"{bad}: annotation 2 ('clip_0003'): 'total_frames' is 99 but 'keypoint' has 12 frames" in errors[1]
    shown = skelang_cli("data", "inspect", str(bad))
    assert shown.returncode == 0 and "Traceback" not in shown.stderr and "bad files or entries: 2" in shown.stdout
    # convert stops at the first and writes nothing, or with --skip-invalid leaves both out
    stopped = skelang_cli("data", "convert", str(bad), "--out", str(tmp_path / "strict"))
    assert stopped.returncode == 1 and "Traceback" not in stopped.stderr
    assert "annotation 1 ('clip_0002')" in stopped.stderr and "--skip-invalid" in stopped.stderr
    assert not (tmp_path / "strict").exists()
    kept = skelang_cli("data", "convert", str(bad), "--out", str(tmp_path / "kept"), "--skip-invalid")
    assert kept.returncode == 0, kept.stderr
    assert "wrote 1 sequences" in kept.stdout and "2 invalid skipped" in kept.stdout
    assert "annotation 1 ('clip_0002')" in kept.stderr and "annotation 2 ('clip_0003')" in kept.stderr
    assert [meta["name"] for meta in SequenceCache(tmp_path / "kept").meta] == ["clip_0001"]
    data["annotations"] = data["annotations"][1:]  # only the two bad ones: nothing to write, the first named
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps(data))
    none = skelang_cli("data", "convert", str(tmp_path / "bad.pkl"), "--out", str(tmp_path / "none"), "--skip-invalid")
    assert none.returncode == 1 and "no sequence to write" in none.stderr
    assert "2 invalid, the first: " in none.stderr and "annotation 0 ('clip_0002')" in none.stderr


def test_kinetics_clips_without_people_are_skipped_with_a_count(shared_case, tmp_path):
    folder = shared_case("kinetics-no-detections")
    report = inspect_dataset(folder)
    assert report["sequences"] == 1 and report["bad_files"] == [] and len(report["missing_skeletons"]) == 2
    assert any("zzz_no_person_clip.json" in error for error in report["missing_skeletons"])
    assert any("mmm_empty_frames_clip.json" in error for error in report["missing_skeletons"])
    result = skelang_cli("data", "convert", str(folder), "--out", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    assert "wrote 1 sequences" in result.stdout and "2 without a skeleton skipped" in result.stdout
    assert len(SequenceCache(tmp_path / "c")) == 1


def test_a_broken_first_json_does_not_turn_a_kinetics_folder_into_nw_ucla(shared_case, tmp_path):
    import json

    for file in shared_case("kinetics-no-detections").iterdir():
        shutil.copy(file, tmp_path / file.name)
    (tmp_path / "000_empty.json").write_text("")
    report = inspect_dataset(tmp_path)
    assert report["format"] == "kinetics" and report["sequences"] == 1
    assert len(report["missing_skeletons"]) == 2 and len(report["bad_files"]) == 1
    (tmp_path / "nodata.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(ValueError, match="nodata.json: neither a Kinetics-skeleton clip .* pass format="):
        open_sequences(tmp_path / "nodata.json")
    (tmp_path / "truncated.json").write_text('{"data": [\n  {"frame_index": 1,')
    with pytest.raises(ValueError, match=r"truncated.json:2: invalid JSON: .* \(column \d+\)"):
        open_sequences(tmp_path / "truncated.json")  # a single broken file: where it breaks


def test_a_kinetics_person_of_zeros_is_nobody(shared_case, tmp_path):
    import json

    document = json.loads((shared_case("kinetics-no-detections") / "aaa_good_clip.json").read_text())
    for frame in document["data"]:
        for person in frame["skeleton"]:
            person["pose"] = [0.0] * len(person["pose"])
            person["score"] = [0.0] * len(person["score"])
    (tmp_path / "zeros.json").write_text(json.dumps(document))
    from skelang.data.formats import read_kinetics_json
    from skelang.data.sequence import MissingSkeletonError

    with pytest.raises(MissingSkeletonError, match="nobody was detected"):
        read_kinetics_json(tmp_path / "zeros.json")
    assert inspect_dataset(tmp_path / "zeros.json")["sequences"] == 0


def test_a_ragged_pyskl_score_names_the_annotation_and_key(shared_case, tmp_path):
    data = load_pickle(shared_case("pyskl-none-fields") / "custom_none.pkl")
    annotations = data["annotations"] if isinstance(data, dict) else data
    annotations[1]["keypoint"] = np.asarray(annotations[1]["keypoint"])[:, :2]
    annotations[1]["keypoint_score"] = [[1.0, 2.0], [3.0]]
    (tmp_path / "ragged.pkl").write_bytes(pickle.dumps(data))
    report = inspect_dataset(tmp_path / "ragged.pkl")
    assert report["sequences"] == 1
    [bad] = report["bad_files"]
    assert "annotation 1" in bad["error"] and "'keypoint_score' is not an array" in bad["error"]


def test_undetected_openpose_joints_stay_zero_in_every_stream(shared_case):
    [sequence] = open_sequences(shared_case("kinetics-undetected-joints/missing_joints.json"))
    layout = get_layout("openpose18")
    never = np.flatnonzero(sequence.data[2, :, :, 0].max(0) == 0)
    assert list(never) == [7, 16, 17]
    touching = set(never) | {v for v, p in enumerate(layout.parents) if p in never}
    for augment in (preprocess.Augmentation(), preprocess.Augmentation(rotation_degrees=20, scale=0.2, shear=0.1)):
        for minmax in (False, True):
            pipeline = preprocess.Preprocess(
                num_frames=20, streams=preprocess.STREAMS, minmax=minmax, augmentation=augment
            )
            for rng in (None, np.random.default_rng(1)):
                x = pipeline(sequence, rng).reshape(len(preprocess.STREAMS), 3, 20, 18, -1)[..., 0]
                joint, bone, joint_motion, bone_motion, local, direction = x
                assert not joint[:, :, never].any() and not joint_motion[:, :, never].any()
                assert not local[:, :, never].any()
                for stream in (bone, bone_motion, direction):
                    assert not stream[:, :, sorted(touching)].any()
                assert joint[:2, :, 1].any()  # the neck, detected, is where the body is


def test_bvh_names_with_spaces_and_keyword_variants(shared_case, tmp_path):
    path = shared_case("bvh-names-with-spaces/biped_names.bvh")
    [sequence] = open_sequences(path)
    names = sequence.meta["joint_names"]
    assert names[:4] == ["Bip01 Pelvis", "Bip01 Spine", "Bip01 Neck", "Bip01 L UpperArm"]
    assert sequence.data.shape[1] == 8 and np.isfinite(sequence.data).all()
    text = path.read_text()
    variants = {
        "lower case keywords": text.replace("HIERARCHY", "hierarchy")
        .replace("OFFSET", "offset")
        .replace("CHANNELS", "Channels")
        .replace("JOINT", "Joint")
        .replace("End Site", "END SITE")
        .replace("MOTION", "Motion")
        .replace("Frames:", "FRAMES:")
        .replace("Frame Time:", "frame time:"),
        "brace on the name's line": text.replace("ROOT Bip01 Pelvis\n{", "ROOT Bip01 Pelvis {"),
        "EndSite": text.replace("End Site", "EndSite"),
    }
    for name, variant in variants.items():
        file = tmp_path / f"{name.replace(' ', '_')}.bvh"
        file.write_text(variant)
        [read] = open_sequences(file)
        np.testing.assert_allclose(read.data, sequence.data, err_msg=name)
    broken = tmp_path / "broken.bvh"
    broken.write_text(text.replace("CHANNELS 3 Zrotation Xrotation Yrotation", "CHANNELS 3 Zrotation Xrotation", 1))
    with pytest.raises(ValueError, match=r"broken.bvh:\d+: CHANNELS declares 3 channels but lists 2"):
        open_sequences(broken)
    shutil.copy(path, tmp_path / "copy.bvh")
    assert inspect_dataset(tmp_path / "copy.bvh")["sequences"] == 1
