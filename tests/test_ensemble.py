"""Ensembles fuse runs by sample id (shuffled and missing ids), search their weights on
validation scores only, and the stream runner trains one run per stream and ensembles them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import skelang_cli

from skelang.runs.ensemble import ensemble, load_scores, search_weights


def write_scores(path, ids, labels, logits):
    np.savez(path, ids=np.asarray(ids, dtype=str), labels=np.asarray(labels), logits=np.asarray(logits, np.float32))
    return path


@pytest.fixture
def three_streams(tmp_path):
    """Three runs on 200 samples of 5 classes: each right on its own 40% of the samples."""
    rng = np.random.default_rng(0)
    N, K = 200, 5
    ids = [f"clip{i:03d}" for i in range(N)]
    labels = rng.integers(0, K, N)
    paths = []
    for stream in range(3):
        logits = rng.normal(size=(N, K))
        good = rng.random(N) < 0.6
        logits[good, labels[good]] += 3.0
        order = rng.permutation(N)  # every run lists the samples in another order
        paths.append(write_scores(tmp_path / f"s{stream}.npz", [ids[i] for i in order], labels[order], logits[order]))
    return paths, ids, labels


def test_ensemble_matches_samples_by_id_not_position(three_streams, tmp_path):
    paths, ids, labels = three_streams
    report = ensemble(paths)
    assert report["samples"] == 200 and len(report["runs"]) == 3
    single = [run["top1"] for run in report["runs"]]
    assert report["top1"] > max(single)  # the streams' errors differ: fusing helps
    # what the runs would give fused by position: wrong, since their orders differ
    by_position = sum(np.load(p)["logits"] for p in paths).argmax(1) == np.load(paths[0])["labels"]
    assert by_position.mean() < report["top1"] - 0.1
    # a fused score is the sum of the same sample's logits in every run
    stacked = {}
    for path in paths:
        data = np.load(path)
        for sample, row in zip(data["ids"], data["logits"]):
            stacked[sample] = stacked.get(sample, 0) + row
    fused = np.array([stacked[sample].argmax() for sample in ids])
    assert report["top1"] == pytest.approx(float((fused == labels).mean()))


def test_a_missing_sample_is_an_error_naming_it(three_streams, tmp_path):
    paths, ids, labels = three_streams
    data = np.load(paths[1])
    keep = data["ids"] != "clip007"
    short = write_scores(tmp_path / "short.npz", data["ids"][keep], data["labels"][keep], data["logits"][keep])
    with pytest.raises(ValueError, match="short.npz holds other samples than .*: missing clip007"):
        ensemble([paths[0], short])
    renamed = write_scores(
        tmp_path / "renamed.npz", np.char.replace(data["ids"], "clip000", "other"), data["labels"], data["logits"]
    )
    with pytest.raises(ValueError, match="missing clip000 extra other"):
        ensemble([paths[0], renamed])
    logits = data["logits"].copy()
    logits[3] = np.nan
    diverged = write_scores(tmp_path / "diverged.npz", data["ids"], data["labels"], logits)
    with pytest.raises(ValueError, match=r"diverged\.npz: logits hold NaN or infinite values"):
        ensemble([paths[0], diverged])


def test_weights_are_searched_on_validation_scores_only(tmp_path):
    rng = np.random.default_rng(1)
    N, K = 300, 4
    labels = rng.integers(0, K, N)

    def run(name, accuracy, split):
        logits = rng.normal(size=(N, K))
        good = rng.random(N) < accuracy
        logits[good, labels[good]] += 4.0
        return write_scores(tmp_path / name, [f"{split}{i}" for i in range(N)], labels, logits)

    strong, weak = run("strong_val.npz", 0.9, "val"), run("weak_val.npz", 0.3, "val")
    weights = search_weights([load_scores(strong), load_scores(weak)])
    assert weights[0] > weights[1]  # the validation split says the first stream is the better one
    test_a, test_b = run("a_test.npz", 0.5, "test"), run("b_test.npz", 0.5, "test")
    report = ensemble([test_a, test_b], search=[strong, weak])
    assert report["weights"] == weights and report["weights_from"] == "validation search"
    with pytest.raises(ValueError, match="2 validation sources for 1 runs"):
        ensemble([test_a], search=[strong, weak])
    # the test scores themselves (or any split sharing samples with them) are no validation set
    with pytest.raises(ValueError, match=r"a_test.npz shares 300 samples with the test scores .*never on the test set"):
        ensemble([test_a, test_b], search=[test_a, test_b])
    assert ensemble([test_a, test_b])["weights_from"] == "equal"
    assert ensemble([test_a, test_b], weights=[1, 0])["weights_from"] == "given"
    for bad in ([-1, 2], [0, 0], [float("nan"), 1]):
        with pytest.raises(ValueError, match="expected numbers >= 0, not all 0"):
            ensemble([test_a, test_b], weights=bad)
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="a_test.npz: the same run twice"):
        ensemble([test_a, tmp_path / "other" / ".." / "a_test.npz"])
    result = skelang_cli("ensemble", test_a, test_b, "--weights", "1", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["weights"] == [1.0, 2.0]


@pytest.mark.slow
def test_streams_train_one_run_each_and_ensemble(tmp_path):
    from skelang.runs import load_config, train_streams

    config = load_config("synthetic_stgcn", ["train.epochs=1", "data.train=synthetic:2:0", "data.num_workers=0"])
    report = train_streams(config, ["joint", "bone"], tmp_path / "streams", progress=False)
    assert [run["stream"] for run in report["runs"]] == ["joint", "bone"]
    assert (tmp_path / "streams" / "ensemble.json").is_file()
    # a scores file inside a run folder is that run's stream and seed
    scores = load_scores(tmp_path / "streams" / "bone" / "scores.npz")
    assert (scores.stream, scores.seed) == ("bone", config["seed"])
    again = train_streams(config, ["joint", "bone"], tmp_path / "streams", progress=False)  # finished: kept
    assert again["top1"] == report["top1"]
    # validation scores name their run: given in another order than the runs, they are refused
    from skelang.runs import evaluate_run

    runs = [tmp_path / "streams" / stream for stream in ("joint", "bone")]
    validation = [tmp_path / f"val_{run.name}.npz" for run in runs]
    for run, path in zip(runs, validation):
        evaluate_run(run, data="synthetic:1:7", scores_path=path)
    searched = ensemble(runs, search=validation)
    assert searched["weights_from"] == "validation search"
    with pytest.raises(ValueError, match=r"val_bone\.npz holds scores of other weights than .*joint's"):
        ensemble(runs, search=validation[::-1])
    # they name the weights, not the folder: the runs moved elsewhere still match them
    moved = tmp_path / "moved"
    (tmp_path / "streams").rename(moved)
    report = ensemble([moved / "joint", moved / "bone"], search=validation)
    assert (report["weights"], report["top1"]) == (searched["weights"], searched["top1"])
    with pytest.raises(ValueError, match="holds scores of other weights"):
        ensemble([moved / "joint", moved / "bone"], search=validation[::-1])


def test_streams_command_errors(tmp_path, capsys):
    from skelang.cli import main

    out = str(tmp_path / "x")
    for argv, message in (
        (["--resume", "--streams", "joint"], "--streams: give --config"),
        (["--config", "synthetic_stgcn", "data.streams=[bone]", "--streams", "joint"], "drop data.streams="),
    ):
        assert main(["train", "--out", out, *argv]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_test_set_that_names_a_sample_twice_is_refused_before_training(tmp_path):
    """Ensembles match samples by name, so a test set whose files name one sample twice (an
    NW-UCLA file copied under another file name keeps its 'file_name') fails when the data
    is read, naming the sample, not after the runs have trained."""
    from skelang.runs.stages.encoder import load_sequences

    def document(name):
        return {"file_name": name, "skeletons": [[[0.5, 1.0, 3.0]] * 20] * 4, "label": 1}

    folders = {part: tmp_path / part for part in ("train", "test")}
    for part, names in (("train", ["a01_s01_e00_v01"]), ("test", ["a01_s02_e00_v03", "a01_s02_e00_v03"])):
        folders[part].mkdir()
        for i, name in enumerate(names):
            (folders[part] / f"copy{i}.json").write_text(json.dumps(document(name)))
    data = {"benchmark": None, "train": str(folders["train"]), "test": str(folders["test"])}
    with pytest.raises(ValueError, match=r"test: 1 test sample name\(s\) occur more than once \(a01_s02_e00_v03\)"):
        load_sequences(data)
    (folders["test"] / "copy1.json").write_text(json.dumps(document("a01_s03_e00_v03")))
    train, test = load_sequences(data)
    assert [s.meta["name"] for s in test] == ["a01_s02_e00_v03", "a01_s03_e00_v03"]


def test_streams_given_twice_or_empty_are_refused_before_training(tmp_path):
    for streams, message in [("bone,bone", "--streams: bone given twice"), ("", "--streams: no stream given")]:
        out = tmp_path / "streams"
        result = skelang_cli("train", "--config", "synthetic_stgcn", "--out", out, "--streams", streams)
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert not out.exists()  # nothing trained, nothing written
