"""NW-UCLA JSON sequences: the full archive against its manifest, the view-3 split, the
one-frame sequence, and malformed input."""

from __future__ import annotations

import collections
import csv
import json
import shutil

import numpy as np
import pytest

from skelang.data import nw_ucla
from skelang.data.splits import split_of


@pytest.fixture(scope="module")
def manifest():
    from conftest import require_shared_data

    with open(require_shared_data("nw-ucla/manifest_all1484.csv")) as f:
        return {row["file"].removesuffix(".json"): row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def all_sequences():
    from conftest import require_shared_data

    return list(nw_ucla.iter_nw_ucla(require_shared_data("nw-ucla/all_sqe.tar.xz")))


def test_archive_matches_manifest_and_view3_split(all_sequences, manifest):
    assert len(all_sequences) == 1484
    bad = [s for s in all_sequences if isinstance(s, Exception)]
    assert not bad
    splits = collections.Counter()
    per_class = collections.Counter()
    for sequence in all_sequences:
        row = manifest[sequence.meta["name"]]
        assert sequence.data.shape == (3, int(row["frames"]), 20, 1)
        assert nw_ucla.NW_UCLA_CLASSES[sequence.label][0] == row["action_code"]
        assert nw_ucla.NW_UCLA_CLASSES[sequence.label][1] == row["action_name"]
        split = split_of("nw-ucla-view3", sequence.meta)
        assert split == row["split"]
        splits[split] += 1
        per_class[(split, sequence.label)] += 1
    assert splits == {"train": 1020, "test": 464}
    expected = collections.Counter((row["split"], int(row["label"]) - 1) for row in manifest.values())
    assert per_class == expected


def test_raw_examples_and_the_one_frame_sequence(shared_data):
    folder = shared_data("nw-ucla/raw_examples")
    sequences = list(nw_ucla.iter_nw_ucla(folder))
    assert len(sequences) == 11 and all(isinstance(s, nw_ucla.Sequence) for s in sequences)
    one_frame = nw_ucla.read_nw_ucla_json(folder / "a02_s09_e04_v02.json")
    assert one_frame.data.shape == (3, 1, 20, 1)
    assert one_frame.label == 1 and one_frame.meta["view"] == 2 and one_frame.meta["subject"] == 9
    assert {s.label for s in sequences} == set(range(10))


def _document(frames=2, joints=20, label=3, value=0.5):
    return {
        "file_name": "a04_s01_e00_v03",
        "skeletons": [[[value, 1.0, 3.0] for _ in range(joints)] for _ in range(frames)],
        "label": label,
    }


BAD_DOCUMENTS = [
    ('{"skeletons": [[[0, 0, 0]]], "label": 1', r"x\.json:1: invalid JSON"),
    ("[1, 2]", r"x\.json: expected a JSON object"),
    (json.dumps({"label": 1}), r"x\.json: missing key 'skeletons'"),
    (json.dumps(_document(label=11)), r"'label' must be an integer 1\.\.10, got 11"),
    (json.dumps(_document(label="3")), r"'label' must be an integer 1\.\.10, got '3'"),
    (json.dumps(_document(frames=0)), r"nobody was recorded: 'skeletons' holds no frame"),
    (json.dumps(_document(joints=25)), r"x\.json: frame 0: expected 20 joints, got 25"),
    (json.dumps(_document()).replace("0.5", "NaN", 3), r"frame 0, joint 0: expected 3 finite float32 numbers"),
    (json.dumps(_document()).replace("0.5", '"a"', 1), r"frame 0, joint 0: expected 3 finite float32 numbers"),
    (json.dumps(_document()).replace("[0.5, 1.0, 3.0]", "[0.5, 1.0]", 1), r"frame 0, joint 0: expected 3 finite"),
    (json.dumps(_document()).replace("0.5", "1e39", 1), r"frame 0, joint 0: expected 3 finite float32 numbers"),
    (json.dumps(_document()).replace("0.5", "1" + "0" * 400, 1), r"frame 0, joint 0: expected 3 finite float32"),
]


@pytest.mark.parametrize("text,message", BAD_DOCUMENTS)
def test_malformed_documents_name_the_file(text, message):
    with pytest.raises(ValueError, match=message):
        nw_ucla.parse_nw_ucla_json(text, "x.json")


def test_cut_files_never_parse_silently():
    text = json.dumps(_document(frames=3))
    for cut in range(0, len(text) - 1, 7):
        with pytest.raises(ValueError, match=r"x\.json"):
            nw_ucla.parse_nw_ucla_json(text[:cut], "x.json")


def test_folder_with_one_bad_file(tmp_path, shared_data):
    folder = shared_data("nw-ucla/raw_examples")
    for name in ("a01_s04_e05_v01.json", "a02_s08_e01_v01.json"):
        shutil.copy(folder / name, tmp_path / name)
    (tmp_path / "a03_s01_e01_v01.json").write_text('{"skeletons": [[[1, 2')
    results = list(nw_ucla.iter_nw_ucla(tmp_path))
    assert [type(r).__name__ for r in results] == ["Sequence", "Sequence", "ValueError"]
    assert "a03_s01_e01_v01.json:1: invalid JSON" in str(results[2])
    assert np.isfinite(results[0].data).all()


def test_not_a_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="expected a folder of NW-UCLA .json files or a .tar"):
        list(nw_ucla.iter_nw_ucla(tmp_path / "notes.txt"))
