"""From files to batches: format detection, the cache, the dataset and its loader, and the
`skelang data` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest
import torch
from conftest import skelang_cli as skelang

from skelang.data import cache, readers
from skelang.data.dataset import SkeletonDataset, make_loader
from skelang.data.preprocess import Augmentation, Preprocess
from skelang.data.render import render_sequence
from skelang.data.synthetic import SyntheticSkeletons


def test_cache_round_trip(tmp_path):
    sequences = list(SyntheticSkeletons(samples_per_class=2, seed=3))
    folder = cache.write_cache(sequences, tmp_path / "synthetic.cache")
    loaded = cache.SequenceCache(folder)
    assert len(loaded) == len(sequences)
    for original, again in zip(sequences, loaded):
        np.testing.assert_array_equal(original.data, again.data)
        assert (again.label, again.layout, again.meta["action"]) == (
            original.label,
            original.layout,
            original.meta["action"],
        )
    # Written again over itself: refused, or with overwrite replaced whole.
    with pytest.raises(ValueError, match="holds a skelang cache already: pass --force"):
        cache.write_cache(sequences[:3], folder)
    cache.write_cache(sequences[:3], folder, overwrite=True)
    assert len(cache.SequenceCache(folder)) == 3


def test_damaged_cache_is_refused(tmp_path):
    folder = cache.write_cache(list(SyntheticSkeletons(samples_per_class=1)), tmp_path / "c")
    frames = folder / "frames.npy"
    raw = bytearray(frames.read_bytes())
    raw[-5] ^= 0xFF
    frames.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum mismatch"):
        cache.SequenceCache(folder)


def test_failed_conversion_leaves_nothing(tmp_path):
    def sequences():
        yield from SyntheticSkeletons(samples_per_class=1)
        raise ValueError("bad.json:3: invalid JSON")

    with pytest.raises(ValueError, match="bad.json:3"):
        cache.write_cache(sequences(), tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_dataset_and_loader_are_deterministic():
    sequences = SyntheticSkeletons(samples_per_class=2, seed=1)
    preprocess = Preprocess(num_frames=24, augmentation=Augmentation(rotation_degrees=10, scale=0.1))
    dataset = SkeletonDataset(sequences, preprocess, train=True, seed=5)
    x, label = dataset[3]
    assert x.shape == (3, 24, 25, 2) and x.dtype == torch.float32 and label == 3
    assert torch.equal(dataset[3][0], x)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[3][0], x)
    batches = [b for b in make_loader(dataset, batch_size=8, shuffle=True, seed=0, num_workers=2)]
    again = [b for b in make_loader(dataset, batch_size=8, shuffle=True, seed=0, num_workers=0)]
    for (xa, ya), (xb, yb) in zip(batches, again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sum(len(y) for _, y in batches) == len(dataset)


def test_detect_format(shared_data):
    assert readers.detect_format(shared_data("ntu60/raw_examples")) == "ntu"
    assert readers.detect_format(shared_data("nw-ucla/raw_examples")) == "nw-ucla"
    assert readers.detect_format(shared_data("nw-ucla/all_sqe.tar.xz")) == "nw-ucla"
    assert readers.detect_format(shared_data("cmu-bvh")) == "bvh"
    assert readers.detect_format("synthetic:3") == "synthetic"


def test_inspect_ntu_lists_the_empty_file(shared_data):
    result = skelang("data", "inspect", str(shared_data("ntu60/raw_examples")), "--json", "--benchmark", "ntu60-xsub")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sequences"] == 21 and report["classes"] == 10
    assert report["frames"]["max"] == 96
    assert report["bad_files"] == [] and len(report["missing_skeletons"]) == 1
    assert "S005C003P016R002A009.skeleton" in report["missing_skeletons"][0]
    assert report["split"]["train"] + report["split"]["test"] == 21


def test_inspect_folder_with_a_bad_file(tmp_path, shared_data):
    for name in ("a01_s04_e05_v01.json", "a02_s09_e04_v02.json"):
        (tmp_path / name).write_bytes((shared_data("nw-ucla/raw_examples") / name).read_bytes())
    (tmp_path / "a03_s01_e01_v01.json").write_text('{"skeletons": [[[1, 2]]], "label": 3}')
    result = skelang("data", "inspect", str(tmp_path), "--json")
    report = json.loads(result.stdout)
    assert report["sequences"] == 2 and report["frames"]["min"] == 1
    assert "a03_s01_e01_v01.json: frame 0: expected 20 joints, got 1" in report["bad_files"][0]["error"]


def test_convert_nw_ucla_test_split_and_load_fast(tmp_path, shared_data):
    out = tmp_path / "ucla-test"
    result = skelang(
        "data",
        "convert",
        str(shared_data("nw-ucla/all_sqe.tar.xz")),
        "--out",
        str(out),
        "--benchmark",
        "nw-ucla-view3",
        "--part",
        "test",
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 464 sequences" in result.stdout
    start = time.perf_counter()
    loaded = readers.open_sequences(out)
    assert len(loaded) == 464 and all(s.meta["view"] == 3 for s in loaded)
    assert time.perf_counter() - start < 5


def test_bad_path_is_a_clear_error(tmp_path):
    result = skelang("data", "inspect", str(tmp_path / "nothing"))
    assert result.returncode == 1 and "no such file or folder" in result.stderr
    (tmp_path / "notes.txt").write_text("hi")
    result = skelang("data", "inspect", str(tmp_path / "notes.txt"))
    assert result.returncode == 1 and "cannot tell the format" in result.stderr


def test_render_gif(tmp_path, shared_data):
    result = skelang(
        "data",
        "render",
        str(shared_data("nw-ucla/raw_examples/a02_s09_e04_v02.json")),
        "--out",
        str(tmp_path / "one.gif"),
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "one.gif").read_bytes()[:6] == b"GIF89a"
    sequence = SyntheticSkeletons(samples_per_class=1, num_frames=4)[0]
    out = render_sequence(sequence, tmp_path / "wave.gif")
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="must be a .gif or an .mp4"):
        render_sequence(sequence, tmp_path / "wave.png")


def test_bvh_folder_with_workers_and_its_cache_in_a_new_process(tmp_path, shared_data):
    folder = shared_data("cmu-bvh")
    sequences = list(readers.iter_sequences(folder, workers=2))
    assert len(sequences) == 3 and all(not isinstance(s, Exception) for s in sequences)
    from skelang.data.layouts import get_layout

    assert get_layout(sequences[0].layout).num_joints == 31  # registered in this process too
    out = tmp_path / "bvh.cache"
    cache.write_cache(sequences, out)
    code = (
        "from skelang.data.cache import SequenceCache\n"
        "from skelang.data.preprocess import Preprocess\n"
        f"c = SequenceCache({str(out)!r})\n"
        "print(len(c), Preprocess(num_frames=8)(c[0]).shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["3", "(3,", "8,", "31,", "1)"]


def test_archives_of_other_files_say_what_they_hold(tmp_path):
    """Only NW-UCLA's JSON is read straight from a tar archive; an archive of NTU .skeleton
    files (or a .zip of anything) is an error that says what it holds and to extract it,
    never an empty NW-UCLA dataset."""
    (tmp_path / "S001C001P001R001A001.skeleton").write_text("0\n")
    (tmp_path / "a01_s01_e00_v01.json").write_text("{}")
    for compression, suffix in (("gz", ".tar.gz"), ("xz", ".tar.xz"), ("", ".tar")):
        ntu_archive = tmp_path / f"ntu{suffix}"
        with tarfile.open(ntu_archive, f"w:{compression}") as archive:
            archive.add(tmp_path / "S001C001P001R001A001.skeleton", "nturgbd/S001C001P001R001A001.skeleton")
        with pytest.raises(ValueError, match=rf"ntu{suffix}: an archive of NTU RGB\+D \.skeleton files; .*tar -xf"):
            readers.detect_format(ntu_archive)
    ucla_archive = tmp_path / "ucla.tar.gz"
    with tarfile.open(ucla_archive, "w:gz") as archive:
        archive.add(tmp_path / "a01_s01_e00_v01.json", "all_sqe/a01_s01_e00_v01.json")
    assert readers.detect_format(ucla_archive) == "nw-ucla"
    (tmp_path / "clip.json").write_text(json.dumps({"data": [], "label": "hug", "label_index": 3}))
    kinetics_archive = tmp_path / "kinetics.tar.gz"
    with tarfile.open(kinetics_archive, "w:gz") as archive:
        archive.add(tmp_path / "clip.json", "kinetics_val/clip.json")
    with pytest.raises(ValueError, match=r"kinetics\.tar\.gz: an archive of Kinetics-skeleton \.json files; .*tar -xf"):
        readers.detect_format(kinetics_archive)
    with zipfile.ZipFile(tmp_path / "ntu.zip", "w") as archive:
        archive.write(tmp_path / "S001C001P001R001A001.skeleton", "S001C001P001R001A001.skeleton")
    with pytest.raises(ValueError, match=r"ntu\.zip: a \.zip archive of NTU RGB\+D \.skeleton files; .*unzip"):
        readers.detect_format(tmp_path / "ntu.zip")
    (tmp_path / "damaged.tar.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match=r"damaged\.tar\.gz: "):
        readers.detect_format(tmp_path / "damaged.tar.gz")


def test_a_folder_of_several_formats_and_an_absurd_kinetics_frame_index_are_errors(tmp_path):
    """A folder holding NTU, Kinetics and BVH files was read as NTU, the rest left out unsaid;
    a Kinetics frame_index of 50,000,000 asked numpy for 20 GiB (a traceback)."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "S001C001P001R001A001.skeleton").write_text("0\n")
    for i in range(2):
        (mixed / f"clip{i}.json").write_text(json.dumps({"data": [], "label_index": 1}))
    (mixed / "labels.csv").write_text("name,label\n")  # not data: not counted
    with pytest.raises(ValueError, match=r"mixed: holds data files of several formats \(2 \.json, 1 \.skeleton\)"):
        readers.detect_format(mixed)
    (mixed / "S001C001P001R001A001.skeleton").unlink()
    assert readers.detect_format(mixed) == "kinetics"
    frame = {"frame_index": 50_000_000, "skeleton": [{"pose": [0.5] * 36, "score": [0.9] * 18}]}
    (tmp_path / "far.json").write_text(json.dumps({"data": [frame], "label_index": 1}))
    with pytest.raises(ValueError, match=r"far\.json: data\[0\]: 'frame_index' must be an integer from 1 to 108,000"):
        readers.open_sequences(tmp_path / "far.json")


def test_a_folder_of_annotation_pickles_says_to_pass_each_file(tmp_path):
    """A folder of PYSKL pickles (as ../shared/cases/pyskl-none-fields) was "found no
    .skeleton, .json or .bvh files": nothing said that a .pkl is read as a file."""
    folder = tmp_path / "pyskl"
    folder.mkdir()
    for name in ("custom_none.pkl", "custom_none_img_shape.pkl"):
        (folder / name).write_bytes(b"")
    names = r"its custom_none\.pkl, custom_none_img_shape\.pkl: a \.pkl"
    with pytest.raises(ValueError, match=r"pyskl: found no .*" + names):
        readers.detect_format(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: found no \.skeleton, \.json or \.bvh files and no skelang cache$"):
        readers.detect_format(tmp_path / "empty")


def test_extensions_in_upper_case_are_read(tmp_path):
    """Windows tools and cameras write B.BVH and CLIP.NPY: a folder mixing a.npy and B.NPY
    read only a.npy (the other left out unsaid), and a single CLIP.NPY had no format."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.npy", "B.NPY", "c.Npy"):
        np.save(folder / "x.npy", rng.normal(size=(4, 17, 2)).astype(np.float32))
        (folder / "x.npy").rename(folder / name)
    assert readers.detect_format(folder) == "clips"
    assert [s.meta["name"] for s in readers.open_sequences(folder)] == ["B", "a", "c"]
    with pytest.raises(ValueError, match=r"B\.NPY: one \.npy array: put clips in a folder"):
        readers.detect_format(folder / "B.NPY")
    (folder / "S001C001P001R001A001.SKELETON").write_text("0\n")
    with pytest.raises(ValueError, match=r"several formats \(3 \.npy, 1 \.skeleton\)"):
        readers.detect_format(folder)
    assert readers.detect_format(folder / "S001C001P001R001A001.SKELETON") == "ntu"


def test_inspect_lists_a_corrupt_clip_names_classes_and_counts_unlabelled_clips(tmp_path):
    """A text file named clip03.npy stopped inspect for the whole folder (with a message about
    pickled data); unlabelled clips were counted as a class '-1'; class names were hidden."""
    from skelang.data.inspect import format_report, inspect_dataset

    rng = np.random.default_rng(0)
    for label in ("clap", "wave"):
        (tmp_path / "byclass" / label).mkdir(parents=True)
        for i in range(2):
            np.save(tmp_path / "byclass" / label / f"{i}.npy", rng.normal(size=(6, 17, 2)).astype(np.float32))
    (tmp_path / "byclass" / "clap" / "0.npy").write_text("not an array\n")
    report = inspect_dataset(tmp_path / "byclass")
    assert report["sequences"] == 3 and report["per_class"] == {"0": 1, "1": 2}
    assert report["class_names"] == {"0": "clap", "1": "wave"} and report["unlabelled"] == 0
    [bad] = report["bad_files"]
    assert "0.npy: not a .npy or .npz file (it starts with b'not an'" in bad["error"]
    assert "per class: 0 clap: 1, 1 wave: 2" in format_report(report)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(3):
        np.save(flat / f"{i}.npy", rng.normal(size=(6, 17, 2)).astype(np.float32))
    report = inspect_dataset(flat)
    assert report["classes"] == 0 and report["unlabelled"] == 3 and report["per_class"] == {}
    assert "unlabelled (no class; training needs labels): 3" in format_report(report)
    with pytest.raises(ValueError, match=r"flat: dims 'XYZ' must order the letters T, V, C"):
        inspect_dataset(flat, clips={"dims": "XYZ"})
