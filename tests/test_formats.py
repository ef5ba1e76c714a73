"""Array formats of other code bases: PYSKL pickles, CTR-GCN .npz, Kinetics-skeleton JSON
(ST-GCN) and generic arrays, each written small in tmp_path and read back exactly; malformed
files raise ValueErrors naming the file; pickles that would build other objects are refused."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from skelang.data import formats
from skelang.data.sequence import MissingSkeletonError


def ramp(*shape) -> np.ndarray:
    """Distinct non-zero values, so every element's position can be checked."""
    return np.arange(1, np.prod(shape) + 1, dtype=np.float32).reshape(shape)


# ---------------------------------------------------------------------------------------
# PYSKL


def annotation(frame_dir, label, keypoint, **extra):
    return {"frame_dir": frame_dir, "label": label, "total_frames": keypoint.shape[1], "keypoint": keypoint, **extra}


def write_pickle(path, contents):
    with open(path, "wb") as f:
        pickle.dump(contents, f, protocol=4)
    return path


def test_pyskl_3d_ntu_names_and_split(tmp_path):
    kp_a, kp_b = ramp(2, 4, 25, 3), -ramp(1, 6, 25, 3)  # (M, T, V, C)
    path = write_pickle(
        tmp_path / "ntu60_3danno.pkl",
        {
            "split": {"xsub_train": ["S001C002P003R002A013"], "xsub_val": ["custom_clip"]},
            "annotations": [annotation("S001C002P003R002A013", 12, kp_a), annotation("custom_clip", 3, kp_b)],
        },
    )
    a, b = formats.read_pyskl(path)
    assert a.data.shape == (3, 4, 25, 2) and a.data.dtype == np.float32 and a.layout == "ntu25"
    assert a.data[2, 3, 24, 1] == kp_a[1, 3, 24, 2] and a.data[0, 1, 5, 0] == kp_a[0, 1, 5, 0]
    np.testing.assert_array_equal(a.data, kp_a.transpose(3, 1, 2, 0))
    assert a.label == 12
    assert a.meta == {
        "source": str(path),
        "name": "S001C002P003R002A013",
        "setup": 1,
        "camera": 2,
        "subject": 3,
        "replication": 2,
        "action": 13,
    }
    assert b.data.shape == (3, 6, 25, 1) and b.meta == {"source": str(path), "name": "custom_clip"}

    (val,) = formats.read_pyskl(path, split="xsub_val")
    assert val.meta["name"] == "custom_clip" and val.label == 3
    with pytest.raises(ValueError, match=r"no split 'xview_val'; known splits: xsub_train, xsub_val"):
        formats.read_pyskl(path, split="xview_val")


def test_pyskl_label_minus_one_is_unlabelled_as_extract_writes_it(tmp_path):
    kp = ramp(1, 4, 17, 2)
    path = write_pickle(tmp_path / "mine.pkl", [annotation("clip", -1, kp), annotation("other", -2, kp)])
    clip = next(formats.iter_pyskl(path))
    assert clip.label is None and clip.meta["name"] == "clip"
    with pytest.raises(ValueError, match=r"annotation 1 \('other'\): 'label' must be a non-negative integer \(or -1"):
        formats.read_pyskl(path)


def test_pyskl_2d_scores_and_layouts(tmp_path):
    kp = ramp(2, 3, 17, 2)
    kp[1, 2] = 0  # body 1 absent from the last frame
    score = ramp(2, 3, 17) / 100
    path = write_pickle(
        tmp_path / "hrnet.pkl",
        {
            "annotations": [
                annotation("clip_with_scores", 0, kp, keypoint_score=score, img_shape=(480, 640)),
                annotation("clip_without_scores", 1, kp),
            ]
        },
    )
    with_scores, without_scores = formats.read_pyskl(path)
    assert with_scores.layout == "coco17" and with_scores.data.shape == (3, 3, 17, 2)
    assert with_scores.data[0, 1, 16, 1] == kp[1, 1, 16, 0] and with_scores.data[1, 1, 16, 1] == kp[1, 1, 16, 1]
    assert with_scores.data[2, 1, 16, 1] == np.float32(score[1, 1, 16])
    assert with_scores.meta["img_shape"] == (480, 640)
    # no keypoint_score: 1.0 for detected joints, 0 for the zero padding
    np.testing.assert_array_equal(without_scores.data[:2], with_scores.data[:2])
    assert (without_scores.data[2, :, :, 0] == 1).all()
    assert (without_scores.data[2, :2, :, 1] == 1).all() and (without_scores.data[:, 2, :, 1] == 0).all()

    assert formats.read_pyskl(path, layout="coco17")[0].layout == "coco17"
    openpose = write_pickle(tmp_path / "openpose.pkl", {"annotations": [annotation("c", 0, ramp(1, 2, 18, 2))]})
    assert formats.read_pyskl(openpose)[0].layout == "openpose18"


def test_pyskl_layout_inference_and_its_error(tmp_path):
    path = write_pickle(tmp_path / "odd.pkl", {"annotations": [annotation("hand", 0, ramp(1, 2, 21, 3))]})
    with pytest.raises(
        ValueError, match=r"odd\.pkl: annotation 0 \('hand'\): cannot tell .* 21 joints; pass it \(--layout"
    ):
        formats.read_pyskl(path)
    with pytest.raises(ValueError, match=r"odd\.pkl: .*21 joints, but layout 'ntu25' has 25"):
        formats.read_pyskl(path, layout="ntu25")


def bad_annotations():
    good = annotation("clip", 1, ramp(1, 3, 25, 3))
    nan = ramp(1, 3, 25, 3)
    nan[0, 1, 4, 2] = np.nan
    return [
        ({k: v for k, v in good.items() if k != "keypoint"}, "missing key.* keypoint"),
        ({**good, "keypoint": ramp(3, 25, 3)}, r"\(M, T, V, C\).*got shape \(3, 25, 3\)"),
        ({**good, "keypoint": ramp(1, 3, 25, 4)}, "C = 2 or 3"),
        ({**good, "keypoint": nan}, "NaN"),
        ({**good, "label": 1.0}, "'label' must be a non-negative integer"),
        ({**good, "label": "1"}, "'label' must be a non-negative integer"),
        ({**good, "total_frames": 4}, "'total_frames' is 4 but 'keypoint' has 3 frames"),
        (
            annotation("clip", 1, ramp(2, 3, 17, 2), keypoint_score=ramp(2, 3, 18)),
            r"'keypoint_score' must be real of shape \(2, 3, 17\)",
        ),
        (annotation("clip", 1, ramp(1, 3, 17, 2), keypoint_score=np.full((1, 3, 17), np.inf)), "infinite"),
        ({**good, "keypoint": ramp(1, 3, 25, 3) * (1 + 1j)}, r"'keypoint' must be a real .*complex64"),
        ({**good, "keypoint": ramp(1, 3, 25, 3).astype(np.float64) * 1e37}, "beyond float32's range"),
    ]


@pytest.mark.parametrize("bad, message", bad_annotations())
def test_pyskl_malformed_annotation_names_file_and_frame_dir(tmp_path, bad, message):
    good = annotation("first", 0, ramp(1, 3, 25, 3))
    path = write_pickle(tmp_path / "bad.pkl", {"annotations": [good, bad]})
    with pytest.raises(ValueError, match=rf"bad\.pkl: annotation 1 \('clip'\): .*{message}"):
        formats.read_pyskl(path)


def test_pyskl_ntu_name_outside_ntu_ranges(tmp_path):
    bad = annotation("S001C001P001R001A000", 0, ramp(1, 3, 25, 3))
    path = write_pickle(tmp_path / "ntu.pkl", {"annotations": [bad]})
    with pytest.raises(ValueError, match=r"ntu\.pkl: annotation 0 .*: S001C001P001R001A000: action A000 is outside"):
        formats.read_pyskl(path)


def test_pyskl_malformed_files(tmp_path):
    (tmp_path / "truncated.pkl").write_bytes(pickle.dumps({"annotations": []})[:-3])
    with pytest.raises(ValueError, match=r"truncated\.pkl: cannot read as a PYSKL pickle"):
        formats.read_pyskl(tmp_path / "truncated.pkl")
    write_pickle(tmp_path / "tuple.pkl", ("annotations",))
    with pytest.raises(ValueError, match=r"tuple\.pkl: expected a dict with an 'annotations' list"):
        formats.read_pyskl(tmp_path / "tuple.pkl")


class Payload:
    """Unpickling it would call os.system."""

    def __reduce__(self):
        return os.system, ("touch pwned",)


class CustomAnnotation(dict):
    pass


@pytest.mark.parametrize("hostile", [Payload(), CustomAnnotation(frame_dir="x")])
def test_pyskl_refuses_pickles_of_other_objects(tmp_path, monkeypatch, hostile):
    monkeypatch.chdir(tmp_path)
    path = write_pickle(tmp_path / "hostile.pkl", {"annotations": [hostile]})
    with pytest.raises(ValueError, match=r"hostile\.pkl: .*refusing to load"):
        formats.read_pyskl(path)
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------
# CTR-GCN .npz


def ctrgcn_x(N, T, valid):
    """(N, T, 150) with sample n's first valid[n] frames filled, body-major (2 x 25 x 3)."""
    x = np.zeros((N, T, 150), dtype=np.float32)
    for n, frames in enumerate(valid):
        x[n, :frames] = ramp(frames, 150) + 1000 * n
    return x


def test_ctrgcn_npz_bodies_joints_and_trailing_zero_frames(tmp_path):
    x_test = ctrgcn_x(3, 10, valid=[4, 10, 0])
    x_test[0, 2] = 0  # an all-zero frame inside the sequence is kept
    x_test[1, :, 75:] = 0  # one body only
    y_test = np.eye(5, dtype=np.float32)[[2, 0, 4]]
    path = tmp_path / "NTU60_CS.npz"
    np.savez(path, x_train=ctrgcn_x(1, 10, [10]), y_train=np.array([1]), x_test=x_test, y_test=y_test)

    first, second, empty = formats.read_ctrgcn_npz(path)
    assert [s.data.shape for s in (first, second, empty)] == [(3, 4, 25, 2), (3, 10, 25, 2), (3, 1, 25, 2)]
    assert [s.label for s in (first, second, empty)] == [2, 0, 4]
    # frame t, body m, joint v, coordinate c is x[n, t, 75 m + 3 v + c]
    assert first.data[0, 1, 0, 0] == x_test[0, 1, 0]
    assert first.data[2, 3, 24, 0] == x_test[0, 3, 74]
    assert first.data[1, 3, 0, 1] == x_test[0, 3, 76]
    assert first.data[2, 1, 24, 1] == x_test[0, 1, 149]
    assert (first.data[:, 2] == 0).all()
    assert second.num_bodies == 1 and (empty.data == 0).all()
    assert first.layout == "ntu25" and first.meta == {"source": str(path), "part": "test", "index": 0}

    (train,) = formats.read_ctrgcn_npz(path, part="train")
    assert train.label == 1 and train.data.shape == (3, 10, 25, 2) and train.meta["part"] == "train"


def test_ctrgcn_npz_nw_ucla_shape(tmp_path):
    x = ctrgcn_x(1, 5, [5])[:, :, :60]  # one body of 20 joints
    np.savez(tmp_path / "ucla.npz", x_test=x, y_test=np.array([7]))
    (sequence,) = formats.read_ctrgcn_npz(tmp_path / "ucla.npz", layout="kinect_v1_20")
    assert sequence.data.shape == (3, 5, 20, 1) and sequence.label == 7
    assert sequence.data[1, 4, 19, 0] == x[0, 4, 58]
    with pytest.raises(ValueError, match=r"ucla\.npz: 'x_test' must be real \(N, T, M\*25\*3\)"):
        formats.read_ctrgcn_npz(tmp_path / "ucla.npz")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_test": np.zeros((2, 4, 150))}, r"no array 'y_test' \(arrays: x_test\)"),
        (
            {"x_test": np.zeros((2, 150)), "y_test": np.zeros(2)},
            r"'x_test' must be real \(N, T, M\*25\*3\).*\(2, 150\)",
        ),
        ({"x_test": np.zeros((2, 4, 140)), "y_test": np.zeros(2)}, r"'x_test' .*got shape \(2, 4, 140\)"),
        (
            {"x_test": np.zeros((2, 4, 150)), "y_test": np.zeros(3)},
            r"'y_test' must be .* \(2,\) or one-hot \(2, num_classes\)",
        ),
        ({"x_test": np.zeros((2, 4, 150)), "y_test": np.ones((2, 3))}, "'y_test' row 0 is not one-hot"),
        ({"x_test": np.zeros((2, 4, 150)), "y_test": np.array([0.0, 1.5])}, r"'y_test'\[1\] is not a class index"),
        ({"x_test": np.full((2, 4, 150), np.nan), "y_test": np.zeros(2)}, "'x_test' sample 0 holds NaN"),
        ({"x_test": np.zeros((2, 4, 150), np.complex64), "y_test": np.zeros(2)}, "'x_test' must be real"),
        (
            {"x_test": np.stack([np.zeros((4, 150)), np.full((4, 150), -1e39)]), "y_test": np.zeros(2)},
            "'x_test' sample 1 holds .* beyond float32's range",
        ),
    ],
)
def test_ctrgcn_npz_malformed(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=rf"bad\.npz: {message}"):
        formats.read_ctrgcn_npz(tmp_path / "bad.npz")


def test_ctrgcn_npz_never_unpickles(tmp_path):
    np.savez(tmp_path / "objects.npz", x_test=np.array([{"a": 1}], dtype=object), y_test=np.zeros(1))
    with pytest.raises(ValueError, match=r"objects\.npz: array 'x_test'"):
        formats.read_ctrgcn_npz(tmp_path / "objects.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: not a \.npy or \.npz file"):
        formats.read_ctrgcn_npz(tmp_path / "junk.npz")


# ---------------------------------------------------------------------------------------
# Kinetics-skeleton (ST-GCN)


def person(value, score):
    """A skeleton whose joint v is at (value + v, -value - v) with confidence `score`."""
    return {"pose": [c for v in range(18) for c in (value + v, -value - v)], "score": [score] * 18}


def write_json(path, document):
    path.write_text(json.dumps(document))
    return path


def test_kinetics_people_by_score_and_missing_frames(tmp_path):
    path = write_json(
        tmp_path / "abseiling_clip.json",
        {
            "data": [
                {"frame_index": 1, "skeleton": [person(10, 0.2), person(20, 0.9), person(30, 0.5)]},
                {"frame_index": 4, "skeleton": [person(40, 0.7)]},
                {"frame_index": 2, "skeleton": []},
            ],
            "label": "abseiling",
            "label_index": 0,
        },
    )
    sequence = formats.read_kinetics_json(path)
    assert sequence.data.shape == (3, 4, 18, 2) and sequence.layout == "openpose18"
    assert sequence.label == 0
    assert sequence.meta == {
        "source": str(path),
        "name": "abseiling_clip",
        "label_name": "abseiling",
        "coordinates": "xy",
    }
    # frame 1: the most confident person in slot 0, the next in slot 1, the least dropped
    assert sequence.data[0, 0, 0, 0] == 20 and sequence.data[1, 0, 3, 0] == -23
    assert sequence.data[2, 0, 17, 0] == np.float32(0.9)
    assert sequence.data[0, 0, 17, 1] == 47 and sequence.data[2, 0, 0, 1] == np.float32(0.5)
    assert sequence.data[0, 3, 5, 0] == 45 and (sequence.data[:, 3, :, 1] == 0).all()
    assert (sequence.data[:, 1:3] == 0).all()  # frame 2 lists nobody, frame 3 is missing

    three = formats.read_kinetics_json(path, max_people=3)
    assert three.data.shape == (3, 4, 18, 3) and three.data[0, 0, 0, 2] == 10


def test_kinetics_unknown_label_and_folder(tmp_path):
    write_json(
        tmp_path / "b.json",
        {"data": [{"frame_index": 1, "skeleton": [person(1, 1.0)]}], "label": "unknown", "label_index": -1},
    )
    write_json(tmp_path / "a.json", {"data": [{"frame_index": 2, "skeleton": []}]})
    (tmp_path / "c.json").write_text('{"data": [\n{"frame_index": 1,}\n]}')
    (tmp_path / "notes.txt").write_text("not a skeleton")
    a, b, c = formats.iter_kinetics(tmp_path)
    assert isinstance(a, MissingSkeletonError) and "nobody was detected in any of its 1 frames" in str(a)
    assert b.label is None and b.meta["label_name"] == "unknown"
    assert isinstance(c, ValueError) and str(c).startswith(f"{tmp_path / 'c.json'}:2: invalid JSON")
    with pytest.raises(ValueError, match="expected a folder"):
        list(formats.iter_kinetics(tmp_path / "a.json"))


@pytest.mark.parametrize(
    "frames, message",
    [
        (
            [{"frame_index": 3, "skeleton": [{"pose": [0.0] * 34, "score": [1.0] * 18}]}],
            r"frame 3, person 0: 'pose' must be 36 finite float32 numbers",
        ),
        (
            [{"frame_index": 1, "skeleton": [{"pose": [0.0] * 36, "score": [1.0] * 17}]}],
            r"frame 1, person 0: 'score' must be 18 finite float32 numbers",
        ),
        (  # past float32 as a float, and an integer past any float (json reads it exactly)
            [{"frame_index": 1, "skeleton": [{"pose": [0.0] * 35 + [1e39], "score": [1.0] * 18}]}],
            r"frame 1, person 0: 'pose' must be 36 finite float32 numbers",
        ),
        (
            [{"frame_index": 1, "skeleton": [{"pose": [0.0] * 36, "score": [10**400] + [1.0] * 17}]}],
            r"frame 1, person 0: 'score' must be 18 finite float32 numbers",
        ),
        (
            [{"frame_index": 2, "skeleton": [person(0, 1.0), {"pose": ["a"] * 36, "score": [1.0] * 18}]}],
            r"frame 2, person 1: 'pose'",
        ),
        ([{"frame_index": 1, "skeleton": [{"pose": [0.0] * 36, "score": [None] * 18}]}], r"frame 1, person 0: 'score'"),
        ([{"frame_index": 0, "skeleton": []}], r"data\[0\]: 'frame_index' must be an integer from 1 to 108,000"),
        ([{"frame_index": 1, "skeleton": []}, {"frame_index": 1, "skeleton": []}], "frame 1: listed twice"),
        ([], "nobody was detected: 'data' holds no frame"),
    ],
)
def test_kinetics_malformed(tmp_path, frames, message):
    path = write_json(tmp_path / "bad.json", {"data": frames, "label_index": 3})
    with pytest.raises(ValueError, match=rf"bad\.json: {message}"):
        formats.read_kinetics_json(path)


# ---------------------------------------------------------------------------------------
# Generic arrays


def test_from_array_any_dimension_order():
    nctvm = ramp(3, 2, 5, 25, 2)  # (N, C, T, V, M)
    reference = formats.from_array(nctvm, "ntu25", labels=[4, 0, 9], names=["a", "b", "c"])
    assert [s.label for s in reference] == [4, 0, 9]
    assert reference[1].meta == {"source": "array", "index": 1, "name": "b"}
    np.testing.assert_array_equal(reference[2].data, nctvm[2])
    for order in ("NTVMC", "NMTVC", "CNVTM"):
        permuted = nctvm.transpose(["NCTVM".index(axis) for axis in order])
        for got, want in zip(formats.from_array(permuted, "ntu25", array_layout=order), reference):
            assert got.data.shape == (2, 5, 25, 2) and got.data.flags.c_contiguous
            np.testing.assert_array_equal(got.data, want.data)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"array_layout": "NCTVV"}, "array_layout 'NCTVV' must order the letters N, C, T, V, M"),
        ({"layout": "coco17"}, "V = 25 joints, but layout 'coco17' has 17"),
        ({"labels": [1]}, "1 labels for 2 sequences"),
        ({"names": ["a", "b", "c"]}, "3 names for 2 sequences"),
        ({"labels": [0, -1]}, "label 1 must be a non-negative integer"),
        ({"labels": [0, 1.5]}, "label 1 must be a non-negative integer"),
    ],
)
def test_from_array_errors(kwargs, message):
    kwargs = {"layout": "ntu25", **kwargs}
    with pytest.raises(ValueError, match=message):
        formats.from_array(np.zeros((2, 3, 4, 25, 1)), **kwargs)
    with pytest.raises(ValueError, match=r"array: expected a real 5-dimensional"):
        formats.from_array(np.zeros((3, 4, 25, 1)), "ntu25")
    with pytest.raises(ValueError, match=r"array: expected a real 5-dimensional"):
        formats.from_array(np.zeros((2, 3, 4, 25, 1), np.complex128), "ntu25")
    beyond = np.zeros((2, 3, 4, 25, 1))
    beyond[1, 0, 2, 3, 0] = 4e38
    with pytest.raises(ValueError, match=r"array: sequence 1 holds .* beyond float32's range"):
        formats.from_array(beyond, "ntu25")


def test_pyskl_repeated_frame_dir_is_a_bad_annotation(tmp_path):
    """frame_dir names the sample in scores.npz and ensembles: a second annotation with the
    same name is listed as bad (read_pyskl raises), naming both annotations."""
    path = write_pickle(
        tmp_path / "twice.pkl",
        {"annotations": [annotation(name, 0, ramp(1, 3, 25, 3)) for name in ("a", "b", "a")]},
    )
    items = list(formats.iter_pyskl(path))
    assert [s.meta["name"] for s in items[:2]] == ["a", "b"]
    assert str(items[2]) == (
        f"{path}: annotation 2 ('a'): 'frame_dir' repeats annotation 0's; a sample's name must be "
        "unique (scores and ensembles match by it)"
    )
    with pytest.raises(ValueError, match="repeats annotation 0's"):
        formats.read_pyskl(path)


def test_read_array_file_npy_and_npz(tmp_path):
    ntvmc = ramp(2, 4, 17, 1, 3)
    np.save(tmp_path / "poses.npy", ntvmc)
    from_npy = formats.read_array_file(tmp_path / "poses.npy", "coco17", array_layout="NTVMC")
    assert [s.data.shape for s in from_npy] == [(3, 4, 17, 1)] * 2
    assert from_npy[1].data[2, 3, 16, 0] == ntvmc[1, 3, 16, 0, 2]
    assert from_npy[0].meta == {"source": str(tmp_path / "poses.npy"), "index": 0} and from_npy[0].label is None

    np.savez(tmp_path / "named.npz", y=np.array([3, 1]), data=ntvmc)
    np.savez(tmp_path / "first.npz", poses=ntvmc, y=np.eye(4)[[2, 0]])
    for name, labels in (("named.npz", [3, 1]), ("first.npz", [2, 0])):
        sequences = formats.read_array_file(tmp_path / name, "coco17", "NTVMC", labels_key="y")
        assert [s.label for s in sequences] == labels
        np.testing.assert_array_equal(sequences[1].data, from_npy[1].data)

    with pytest.raises(ValueError, match=r"poses\.npy: a \.npy file holds one array; labels_key='y' needs a \.npz"):
        formats.read_array_file(tmp_path / "poses.npy", "coco17", "NTVMC", labels_key="y")
    with pytest.raises(ValueError, match=r"named\.npz: no array 'labels' \(arrays: y, data\)"):
        formats.read_array_file(tmp_path / "named.npz", "coco17", "NTVMC", labels_key="labels")
    np.save(tmp_path / "objects.npy", np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match=r"objects\.npy: not a \.npy or \.npz file without pickled objects"):
        formats.read_array_file(tmp_path / "objects.npy", "coco17")
    nan = ntvmc.copy()
    nan[1, 0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match=r"nan\.npy: sequence 1 holds NaN"):
        formats.read_array_file(tmp_path / "nan.npy", "coco17", "NTVMC")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pyskl_every_pickle_protocol(tmp_path, protocol):
    # mmcv (hence PYSKL) writes protocol 2; pickle.HIGHEST_PROTOCOL is 5.
    keypoint = ramp(1, 3, 17, 2)
    path = tmp_path / f"p{protocol}.pkl"
    with open(path, "wb") as f:
        pickle.dump(
            {
                "split": {"train": ["clip"]},
                "annotations": [annotation("clip", 1, keypoint, keypoint_score=np.ones((1, 3, 17), np.float32))],
            },
            f,
            protocol=protocol,
        )
    (sequence,) = formats.read_pyskl(path)
    np.testing.assert_array_equal(sequence.data[:2, :, :, 0], keypoint[0].transpose(2, 0, 1))


def test_from_sequences_takes_clips_of_any_length_and_named_labels():
    from skelang.data import from_sequences

    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(T, 17, 2)).astype(np.float32) for T in (5, 9, 3)]
    clips[1][:, 4] = 0  # an undetected joint (x = y = 0)
    sequences = from_sequences(clips, ["wave", "kick", "wave"], "coco17", names=["a", "b", "c"])
    assert [s.label for s in sequences] == [1, 0, 1] and sequences[0].meta["class_names"] == ["kick", "wave"]
    assert [s.num_frames for s in sequences] == [5, 9, 3] and sequences[1].data.shape == (3, 9, 17, 1)
    assert sequences[1].meta["coordinates"] == "xy" and not sequences[1].data[2, :, 4].any()  # score 0
    given = from_sequences(clips, ["wave", "kick", "wave"], "coco17", class_names=["wave", "kick", "jump"])
    assert [s.label for s in given] == [0, 1, 0]
    people = from_sequences([rng.normal(size=(2, 4, 17, 3))], [2], "coco17", dims="MTVC")
    assert people[0].data.shape == (3, 4, 17, 2) and "coordinates" not in people[0].meta
    scored = from_sequences([np.abs(rng.normal(size=(4, 17, 3)))], None, "coco17", coordinates="xy+score")
    assert scored[0].meta["coordinates"] == "xy" and scored[0].label is None
    for call, message in [
        (lambda: from_sequences(clips, ["wave", 1, "kick"], "coco17"), "labels mix class names and numbers"),
        (lambda: from_sequences(clips, ["x"] * 3, "coco17", class_names=["y"]), r"labels \['x'\] are not in"),
        (lambda: from_sequences(clips, [0, 1], "coco17"), "2 labels for 3 clips"),
        (lambda: from_sequences([np.zeros((5, 18, 2))], [0], "coco17"), "clip 0: 18 joints, but layout 'coco17'"),
        (lambda: from_sequences([np.full((5, 17, 2), np.nan)], [0], "coco17"), "clip 0: NaN, infinite"),
        (lambda: from_sequences([np.full((5, 17, 2), 1e39)], [0], "coco17"), "clip 0: .* beyond float32's range"),
        (lambda: from_sequences([np.ones((5, 17, 2), complex)], [0], "coco17"), "expected a real 3-D"),
        (lambda: from_sequences([np.ones((5, 17))], [0], "coco17"), r"expected a real 3-D \(T, V, C\) array"),
        (lambda: from_sequences(clips, [0, -1, 2], "coco17"), "clip 1: label must be a non-negative integer"),
        (lambda: from_sequences(clips, None, "coco17", dims="TXC"), "dims 'TXC' must order"),
        (lambda: from_sequences([np.zeros((5, 17, 2))], [0], "coco17"), "clip 0: nobody in the clip"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


def test_clip_folders_flat_and_in_class_subfolders(tmp_path):
    """One .npy per clip: named by its stem in a flat folder (labels from a name,label CSV);
    in class-named subfolders the folder is the label and part of the name, so clips of two
    classes may share a file name without sharing a sample id."""
    rng = np.random.default_rng(0)
    for folder, stem in (("run", "0001"), ("walk", "0001"), ("walk", "0002")):
        (tmp_path / "by_class" / folder).mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "by_class" / folder / f"{stem}.npy", rng.normal(size=(4, 17, 2)).astype(np.float32))
    sequences = list(formats.read_clip_arrays(tmp_path / "by_class"))
    assert [s.meta["name"] for s in sequences] == ["run/0001", "walk/0001", "walk/0002"]
    assert [s.meta["label_name"] for s in sequences] == ["run", "walk", "walk"]
    (tmp_path / "flat").mkdir()
    for stem in ("a", "b"):
        np.save(tmp_path / "flat" / f"{stem}.npy", rng.normal(size=(4, 17, 2)).astype(np.float32))
    (tmp_path / "labels.csv").write_text("name,label\na,kick\nb,wave\n")
    flat = list(formats.read_clip_arrays(tmp_path / "flat", labels=tmp_path / "labels.csv"))
    assert [(s.meta["name"], s.meta["label_name"]) for s in flat] == [("a", "kick"), ("b", "wave")]
    (tmp_path / "stems.csv").write_text("0001,jump\n0002,sit\n")  # a table of stems relabels subfolders
    relabelled = list(formats.read_clip_arrays(tmp_path / "by_class", labels=tmp_path / "stems.csv"))
    assert [(s.meta["name"], s.meta["label_name"]) for s in relabelled] == [
        ("run/0001", "jump"),
        ("walk/0001", "jump"),
        ("walk/0002", "sit"),
    ]


def test_clips_read_for_a_model_take_its_layout_when_the_joints_match(tmp_path, monkeypatch):
    """Clip arrays do not name their layout (guessed from the joint count); read for a model
    of a layout with that joint count (one of the user's own), they take the model's."""
    from skelang.data import layouts
    from skelang.data.readers import open_sequences_for

    mine = {"name": "mine17", "joints": [f"j{i}" for i in range(17)], "parents": [-1] + [0] * 16}
    mine.update(centre=0, spine=[0, 1], shoulders=[2, 3])
    monkeypatch.setitem(layouts._LAYOUTS, "mine17", layouts.layout_from_dict(mine))  # registered for this test
    np.savez(tmp_path / "clips.npz", a=np.ones((6, 17, 2), dtype=np.float32))
    assert [s.layout for s in open_sequences_for(tmp_path / "clips.npz", "mine17")] == ["mine17"]
    assert [s.layout for s in open_sequences_for(tmp_path / "clips.npz", "ntu25")] == ["coco17"]  # guessed
