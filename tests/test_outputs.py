"""What a run leaves for the researcher: log.csv, curves.png and confusion.png, TensorBoard
events, `skelang plot`, and `skelang export` in every format against the eager model."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import skelang_cli

from skelang.runs import load_config, train
from skelang.runs.export import FORMATS, export_run, inference_module
from skelang.runs.plots import plot_confusion

TINY_HGLNET = [
    "data.train=synthetic:4:0",
    "data.test=synthetic:2:1",
    "data.num_workers=0",
    "model.type=hglnet",
    "model.channels=[16,32]",
    "model.strides=[1,2]",
    "model.attention_heads=2",
    "train.epochs=2",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-epoch HGLNet (GSM, GTA and LTC) on 60 synthetic sequences, with TensorBoard events."""
    pytest.importorskip("tensorboard")
    run = tmp_path_factory.mktemp("tiny") / "run"
    metrics = train(load_config("synthetic_stgcn", TINY_HGLNET + ["train.tensorboard=true"]), run, progress=False)
    return run, metrics


def test_a_run_writes_its_log_as_csv_and_its_figures(tiny_run):
    run, metrics = tiny_run
    rows = list(csv.DictReader(io.StringIO((run / "log.csv").read_text())))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [int(row["epoch"]) for row in rows] == [entry["epoch"] for entry in log] == [1, 2]
    assert float(rows[-1]["test_top1"]) == pytest.approx(metrics["top1"])
    for name in ("curves.png", "confusion.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_tensorboard_events_hold_the_logged_scalars(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, metrics = tiny_run
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert {"loss", "test_top1", "lr", "train_top1"} <= set(events.Tags()["scalars"])
    test_top1 = events.Scalars("test_top1")
    assert [event.step for event in test_top1] == [1, 2]
    assert test_top1[-1].value == pytest.approx(metrics["top1"])


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    config = load_config("synthetic_stgcn", TINY_HGLNET + ["train.tensorboard=true", "train.epochs=1"])
    with pytest.raises(ValueError, match="tensorboard package is not installed: pip install tensorboard"):
        train(config, tmp_path / "run", progress=False)


def test_confusion_figure_checks_its_inputs(tmp_path):
    with pytest.raises(ValueError, match="must be square"):
        plot_confusion(np.ones((2, 3)), None, tmp_path / "c.png")
    with pytest.raises(ValueError, match="3 class names for a confusion matrix of 2 classes"):
        plot_confusion(np.eye(2), ["a", "b", "c"], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_plot_command_draws_several_runs(tiny_run, tmp_path):
    run, _ = tiny_run
    done = skelang_cli(
        "plot", str(run), str(run), "--labels", "a", "b", "--x", "minutes", "--out", str(tmp_path / "c.pdf")
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c.pdf").read_bytes()[:4] == b"%PDF"
    bad = skelang_cli("plot", str(run), "--labels", "a", "b", "--out", str(tmp_path / "d.png"))
    assert bad.returncode != 0 and "2 labels for 1 runs" in bad.stderr and "Traceback" not in bad.stderr


def _load_and_run(format: str, path: Path, x: torch.Tensor) -> list[torch.Tensor]:
    if format == "torchscript":
        outputs = torch.jit.load(str(path))(x)
    elif format == "exported":
        outputs = torch.export.load(str(path)).module()(x)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outputs = [torch.from_numpy(v) for v in session.run(None, {session.get_inputs()[0].name: x.numpy()})]
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def _check_exports(run: Path, tmp_path: Path, outputs: int) -> None:
    model, example = inference_module(run)
    x = torch.randn(5, *example.shape[1:], generator=torch.Generator().manual_seed(7))  # another batch size
    with torch.no_grad():
        expected = model(x)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    assert len(expected) == outputs
    for format in FORMATS:
        if format == "onnx":
            pytest.importorskip("onnxruntime")
            pytest.importorskip("onnxscript")
        path = tmp_path / f"model.{format}"
        report = export_run(run, format, path)
        scale = max(float(value.abs().max()) for value in expected)
        assert report["max_abs_difference"] <= 1e-4 * max(1.0, scale)
        with torch.no_grad():
            got = _load_and_run(format, path, x)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=format)


def test_export_of_an_encoder_equals_the_eager_model_in_every_format(tiny_run, tmp_path):
    _check_exports(tiny_run[0], tmp_path, outputs=1)


def test_export_of_a_vst_run_gives_logits_and_code_distances(synthetic_vst_run, tmp_path):
    _check_exports(synthetic_vst_run[0], tmp_path, outputs=2)


def test_export_never_replaces_a_file_without_force_nor_a_run_file(tiny_run, tmp_path):
    run, _ = tiny_run
    existing = tmp_path / "model.pt"
    existing.write_text("mine")
    with pytest.raises(ValueError, match="exists: choose another path or pass --force"):
        export_run(run, "torchscript", existing)
    assert existing.read_text() == "mine"
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(ValueError, match="a file of the run"):
        export_run(run, "torchscript", run / "checkpoint.pt", force=True)
    assert (run / "checkpoint.pt").read_bytes() == before
    with pytest.raises(ValueError, match="--format must be one of"):
        export_run(run, "tflite", tmp_path / "m")


def test_compare_runs_reads_last_best_and_time_to_accuracy():
    from skelang.runs.compare import compare_runs, format_comparison, records

    logs = {
        "a": [
            {"epoch": 1, "seconds": 60.0, "test_top1": 0.5},
            {"epoch": 2, "seconds": 120.0, "test_top1": 0.94},
            {"epoch": 3, "seconds": 60.0},  # not evaluated (train.eval_every)
            {"epoch": 4, "seconds": 60.0, "test_top1": 0.92},
        ],
        "b": [{"epoch": 1, "seconds": 30.0, "test_top1": 0.9}],
    }
    table, summary = compare_runs(logs, {"a": 4, "b": 3}, target=0.935)
    a, b = records(table)
    assert a == {
        "run": "a",
        "epochs": 4,
        "planned_epochs": 4,
        "last_top1": 0.92,
        "best_top1": 0.94,
        "best_epoch": 2,
        "best_minutes": 3.0,
        "target_epoch": 2,
        "target_minutes": 3.0,
        "minutes": 5.0,
    }
    assert (b["last_top1"], b["best_epoch"], b["target_epoch"], b["target_minutes"]) == (0.9, 1, None, None)
    assert all(type(a[key]) is int for key in ("epochs", "planned_epochs", "best_epoch", "target_epoch"))
    assert summary["runs"] == 2 and summary["unfinished"] == 1 and summary["reached"] == 1
    assert summary["last_top1_mean"] == pytest.approx(0.91)
    assert summary["last_top1_std"] == pytest.approx(np.std([0.92, 0.9], ddof=1))
    assert summary["target_minutes_mean"] == pytest.approx(3.0)
    text = format_comparison(table, summary)
    assert "epoch 2, 3.0 min" in text and "never" in text and "1/3" in text and "1 of 2 reached 93.50%" in text
    _, unplanned = compare_runs(logs)  # without train.epochs: nothing counts as unfinished
    assert unplanned["unfinished"] == 0 and "target" not in unplanned
    assert "/" not in format_comparison(*compare_runs(logs)).splitlines()[1].split()[1]
    with pytest.raises(ValueError, match="b: its log holds no evaluated epoch"):
        compare_runs({"b": [{"epoch": 1, "seconds": 3.0}]})
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\]"):
        compare_runs(logs, target=93.5)


def test_compare_command_reads_run_folders(tiny_run, tmp_path):
    run, metrics = tiny_run
    done = skelang_cli("compare", str(run), str(run), "--labels", "s1", "s2", "--target", "0.01", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [row["run"] for row in report["runs"]] == ["s1", "s2"]
    assert report["runs"][0]["last_top1"] == pytest.approx(metrics["top1"])
    assert report["runs"][0]["epochs"] == report["runs"][0]["planned_epochs"] == 2
    assert report["summary"]["last_top1_std"] == 0.0 and report["summary"]["reached"] == 2
    text = skelang_cli("compare", str(run))
    assert text.returncode == 0 and "2/2" in text.stdout
    bad = skelang_cli("compare", str(run), "--target", "93.5")
    assert bad.returncode != 0 and "(e.g. 0.935), got 93.5" in bad.stderr and "Traceback" not in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = skelang_cli("compare", str(empty))
    assert missing.returncode != 0 and str(empty) in missing.stderr and "Traceback" not in missing.stderr
    early = tmp_path / "early"  # a run whose first evaluation has not come yet (train.eval_every)
    early.mkdir()
    for name in ("config.yaml", "checkpoint.pt"):
        (early / name).write_bytes((run / name).read_bytes())
    (early / "log.jsonl").write_text(json.dumps({"epoch": 1, "loss": 1.0, "lr": 0.1, "seconds": 2.0}) + "\n")
    unevaluated = skelang_cli("compare", str(early), "--labels", "e")
    assert unevaluated.returncode != 0 and f"{early}: its log holds no evaluated epoch" in unevaluated.stderr
