"""Every reader, fed truncated, re-typed and None-valued variants of a valid file, either
reads it or raises a ValueError naming the file (MissingSkeletonError for nobody in it):
never another exception type, never a traceback from inside the reader."""

from __future__ import annotations

import copy
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from skelang.data.readers import open_sequences
from skelang.data.synthetic import generate_sequence

REPLACEMENTS = [None, "text", -1, 1e308, [], {}, [[1, 2]], True, float("nan")]


def leaves(node, path=()):
    """(path, value) of every value in a JSON-like tree, containers included."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:3]):  # the first few items of long lists
            yield from leaves(value, (*path, index))


def replaced(tree, path, value):
    tree = copy.deepcopy(tree)
    if not path:
        return value
    target = tree
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return tree


def variants(tree, count: int, seed: int):
    rng = random.Random(seed)
    paths = [path for path, _ in leaves(tree)]
    for _ in range(count):
        yield replaced(tree, rng.choice(paths), rng.choice(REPLACEMENTS))


def assert_reads_or_names(path: Path):
    try:
        open_sequences(path)
    except ValueError as error:
        assert str(path) in str(error) or path.name in str(error), str(error)


def truncations(data: bytes, count: int = 25):
    for end in np.linspace(0, len(data) - 1, count).astype(int):
        yield data[:end]


@pytest.fixture(scope="module")
def synthetic():
    return generate_sequence("wave", seed=1, second_person_prob=0.0)


def kinetics_document(synthetic):
    frames = []
    for t in range(6):
        pose = [float(v) for xy in synthetic.data[:2, t, :18, 0].T for v in xy]
        frames.append({"frame_index": t + 1, "skeleton": [{"pose": pose, "score": [0.9] * 18}]})
    return {"data": frames, "label": "waving", "label_index": 2}


def nw_ucla_document(synthetic):
    return {
        "file_name": "a01_s01_e01_v01",
        "label": 1,
        "skeletons": synthetic.data[:, :5, :20, 0].transpose(1, 2, 0).tolist(),
    }


@pytest.mark.parametrize("kind", ["kinetics", "nw-ucla"])
def test_json_readers(kind, synthetic, tmp_path):
    document = kinetics_document(synthetic) if kind == "kinetics" else nw_ucla_document(synthetic)
    name = "clip.json" if kind == "kinetics" else "a01_s01_e01_v01.json"
    path = tmp_path / name
    path.write_text(json.dumps(document))
    assert len(open_sequences(path, format=kind)) == 1
    for i, variant in enumerate(variants(document, 400, seed=len(kind))):
        path.write_text(json.dumps(variant, allow_nan=True))
        try:
            open_sequences(path, format=kind)
        except ValueError as error:
            assert str(path) in str(error), (i, str(error))
    for data in truncations(json.dumps(document).encode()):
        path.write_bytes(data)
        try:
            open_sequences(path, format=kind)
        except ValueError as error:
            assert str(path) in str(error)


def test_pyskl_reader(synthetic, tmp_path):
    keypoint = synthetic.data[:2, :, :17].transpose(3, 1, 2, 0)[:1].astype(np.float32)  # (1, T, 17, 2)
    annotation = {
        "frame_dir": "clip",
        "label": 1,
        "img_shape": (480, 640),
        "original_shape": (480, 640),
        "total_frames": keypoint.shape[1],
        "keypoint": keypoint,
        "keypoint_score": np.ones(keypoint.shape[:3], np.float32),
    }
    document = {"split": {"train": ["clip"]}, "annotations": [annotation]}
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(document))
    assert len(open_sequences(path)) == 1
    rng = random.Random(0)
    keys = list(annotation)
    for _ in range(300):
        key = rng.choice(keys)
        value = rng.choice([*REPLACEMENTS, np.zeros((2, 3)), np.array(["a"]), keypoint[:, :, :5]])
        broken = {**document, "annotations": [{**annotation, key: value}, annotation]}
        path.write_bytes(pickle.dumps(broken))
        assert_reads_or_names(path)
    for variant in ({"annotations": None}, {"annotations": [None, 3]}, [annotation, "x"], None, {"split": 3}):
        path.write_bytes(pickle.dumps(variant))
        assert_reads_or_names(path)
    for data in truncations(pickle.dumps(document)):
        path.write_bytes(data)
        assert_reads_or_names(path)


def test_ntu_reader(shared_data, tmp_path):
    source = shared_data("ntu60/raw_examples/S001C001P005R001A009.skeleton")
    text = source.read_text()
    path = tmp_path / "S001C001P005R001A009.skeleton"
    for data in truncations(text.encode(), 40):
        path.write_bytes(data)
        assert_reads_or_names(path)
    rng = random.Random(1)
    lines = text.splitlines()
    for _ in range(200):
        edited = list(lines)
        index = rng.randrange(len(edited))
        words = edited[index].split()
        if words:
            words[rng.randrange(len(words))] = rng.choice(["x", "-1", "nan", "1e999", "", "3.5.1"])
        edited[index] = " ".join(words)
        path.write_text("\n".join(edited))
        assert_reads_or_names(path)


def test_ctrgcn_npz_reader(tmp_path):
    path = tmp_path / "data.npz"
    x = np.random.default_rng(0).normal(size=(3, 8, 150)).astype(np.float32)
    y = np.eye(60, dtype=np.float32)[[0, 1, 2]]
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    assert len(open_sequences(path)) == 6
    for arrays in (
        {"x_train": x[..., :149], "y_train": y},
        {"x_train": x, "y_train": y[:, :1] * 3},
        {"x_train": x.astype(str), "y_train": y},
        {"x_train": x, "y_train": np.array([0.5, 1, 2])},
        {"x_train": np.full_like(x, np.nan), "y_train": y},
        {"y_train": y},
        {},
    ):
        np.savez(path, **arrays)
        assert_reads_or_names(path)
    np.savez(path, x_train=np.array([object()], dtype=object), y_train=y)
    assert_reads_or_names(path)
    for data in truncations(path.read_bytes()):
        path.write_bytes(data)
        assert_reads_or_names(path)
