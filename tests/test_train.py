"""Training: configuration checking, schedules, metrics, a whole run, bitwise-identical
resume, atomic checkpoints, and the `skelang train` / `skelang eval` commands. Tiny models
on a handful of synthetic sequences, so the whole file runs in seconds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import skelang_cli

from skelang.encoder import build_model
from skelang.runs import RunDirectory, classification_metrics, load_config, resolve_config, train
from skelang.runs.loop import TrainingDiverged, learning_rate, make_optimizer


def load_checkpoint(path: Path) -> dict:
    return RunDirectory(path.parent).load_checkpoint()


TINY = {
    "seed": 3,
    "data": {
        "train": "synthetic:1:0",
        "test": "synthetic:1:1",
        "num_frames": 8,
        "num_workers": 0,
        "augmentation": {"rotation_degrees": 10, "joint_dropout": 0.1},
    },
    "model": {"type": "stgcn", "channels": [8, 8], "strides": [1, 2]},
    "optim": {"warmup_epochs": 1, "milestones": [2]},
    "train": {"epochs": 3, "batch_size": 8, "threads": 1},  # bitwise comparisons: one thread count
}


def tiny_config(**sections) -> dict:
    config = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        config[section].update(values)
    return config


@pytest.fixture
def tiny_file(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch run of TINY."""
    out = tmp_path_factory.mktemp("runs") / "uninterrupted"
    train(tiny_config(), out, progress=False)
    return out


# configuration


def test_defaults_follow_ctrgcn_nw_ucla_recipe(tiny_file):
    config = load_config(
        tiny_file,
        [
            "optim.lr=0.05",
            "data.streams=[joint, bone]",
            "model.channels=[4]",
            "model.strides=[1]",
            "train.deterministic=true",
        ],
    )
    assert config["optim"] == {
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 1e-4,
        "schedule": "step",
        "milestones": [2],
        "gamma": 0.1,
        "warmup_epochs": 1,
        "label_smoothing": 0.0,
    }
    assert config["data"]["streams"] == ["joint", "bone"]
    assert config["model"]["channels"] == [4] and config["model"]["strides"] == [1]
    assert config["model"]["ltc_kernel_size"] == 9 and config["model"]["gsm"] is False  # the stgcn preset
    assert config["train"]["deterministic"] is True
    defaults = resolve_config({"data": {"train": "x", "test": "y"}, "model": {"type": "ctrgcn"}})
    assert defaults["data"]["num_frames"] == 52 and defaults["train"]["batch_size"] == 16
    assert defaults["train"]["epochs"] == 65 and defaults["optim"]["milestones"] == [35, 55]
    assert defaults["optim"]["warmup_epochs"] == 5 and defaults["optim"]["lr"] == 0.1


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=fast", "optim.lr: expected a positive number, got 'fast'"),
        ("optim.lr=0", "optim.lr: expected a positive number, got 0"),
        ("data.frames=20", "unknown key data.frames (did you mean data.num_frames?)"),
        ("optimizer.lr=1", "unknown key optimizer (did you mean optim?)"),
        ("data.augmentation.twist=1", "unknown key data.augmentation.twist"),
        ("lr=0.1", "unknown key lr"),
        ("train.epochs=2.5", "train.epochs: expected a positive integer, got 2.5"),
        ("train.epochs=true", "train.epochs: expected a positive integer, got True"),
        ("seed=-1", "seed: expected a non-negative integer, got -1"),
        ("data.augmentation.shear=-1", "data.augmentation.shear: expected a non-negative number, got -1"),
        ("data.streams=[joint, angle]", "data.streams: expected a non-empty list of joint, bone"),
        ("data.streams=[]", "data.streams: expected a non-empty list"),
        ("data.train_crop=[0.9, 0.5]", "data.train_crop: expected low <= high"),
        ("data.eval_crop=1.5", "data.eval_crop: expected a number in (0, 1], got 1.5"),
        ("data.normalize=maybe", "data.normalize: expected true or false, got 'maybe'"),
        ("data.benchmark=ntu61", "data.benchmark: expected one of ntu60-xsub"),
        ("optim.schedule=linear", "optim.schedule: expected one of step, cosine, got 'linear'"),
        ("optim.milestones=[55, 35]", "optim.milestones: expected an increasing list of epochs"),
        ("train.device=tpu", "train.device: expected one of auto, cpu, cuda"),
        ("train.ema_decay=1", "train.ema_decay: expected a number in [0, 1)"),
        ("data.train=null", "data.train: expected the training data's path, got null"),
        ("data.test=null", "data.test: expected the test data's path"),
        ("data={}", "data.train: expected the training data's path"),
        ("optim=3", "optim: expected a section of keys, got 3"),
        ("optim.lr", "override 'optim.lr': expected key.sub=value"),
        ("seed.value=1", "override 'seed.value=1': seed is not a section"),
        ("optim.lr=[1", "cannot parse '[1' as a YAML value"),
    ],
)
def test_bad_key_or_value_is_named(tiny_file, override, message):
    with pytest.raises(ValueError) as error:
        load_config(tiny_file, [override])
    # the override is named (the file holds no such key)
    assert str(error.value).startswith((f"{tiny_file} with the overrides {override}: ", f"{tiny_file}: override "))
    assert message in str(error.value)


def test_bad_yaml_and_model_sections(tmp_path, tiny_file):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="bad.yaml: expected a mapping of sections"):
        load_config(bad)
    with pytest.raises(ValueError, match="model.type: expected one of hglnet, ctrgcn, stgcn, got None"):
        load_config(tiny_file, ["model.type=null"])
    with pytest.raises(ValueError, match="unknown key model.widths"):  # checked when the config loads
        load_config(tiny_file, ["model.widths=[4]"])


def test_learning_rate_schedules():
    optim = resolve_config({"data": {"train": "x", "test": "y"}, "model": {"type": "stgcn"}})["optim"]
    assert [learning_rate(optim, 65, e) for e in (0, 1, 4)] == pytest.approx([0.02, 0.04, 0.1])
    assert [learning_rate(optim, 65, e) for e in (5, 34, 35, 54, 55, 64)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    cosine = {**optim, "schedule": "cosine", "warmup_epochs": 0}
    assert [learning_rate(cosine, 10, e) for e in (0, 5)] == pytest.approx([0.1, 0.05])


@pytest.mark.parametrize("name", ["synthetic_stgcn", "nw_ucla_ctrgcn", "nw_ucla_hglnet"])
def test_shipped_configs_load(name):
    config = load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml")
    build_model(config["model"], 3 * len(config["data"]["streams"]), 10, "ntu25")


# metrics


def test_classification_metrics():
    logits = torch.tensor([[3.0, 2, 1, 0], [0, 3, 2, 1], [0, 1, 3, 2], [3, 0, 1, 2], [1, 2, 0, 3]])
    labels = torch.tensor([0, 1, 1, 0, 3])
    metrics = classification_metrics(logits, labels)
    assert metrics["top1"] == pytest.approx(4 / 5)
    assert metrics["top5"] == 1.0  # capped at the 4 classes
    assert metrics["confusion_matrix"] == [[2, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert metrics["per_class_accuracy"] == [1.0, 0.5, None, 1.0]
    assert metrics["samples"] == 5


def test_tied_logits_rank_the_lower_class_first_everywhere():
    """bf16 logits tie: top-1 counts the class argmax picks (the lower index), so it equals the
    confusion matrix's diagonal and the ensemble's top-1 of the same scores."""
    from skelang.runs.ensemble import top_k

    # a bf16 joint_motion run's logits on NW-UCLA (torch.topk ranks class 1 first here)
    row = [11.4375, 11.4375, 3.171875, -1.203125, -2.25, -0.2119140625, -8.5625, -7.46875, -2.53125, -6.46875]
    logits, labels = torch.tensor([row, row[::-1]]), torch.tensor([1, 9])  # the higher index of each tie
    metrics = classification_metrics(logits, labels)
    assert metrics["top1"] == 0.0 == np.trace(np.array(metrics["confusion_matrix"]))
    assert top_k(logits.numpy(), labels.numpy(), 1) == 0.0
    assert metrics["top5"] == 1.0 and top_k(logits.numpy(), labels.numpy(), 2) == 1.0


# runs


def test_run_writes_config_log_metrics_and_checkpoint(finished_run):
    assert sorted(p.name for p in finished_run.iterdir()) == [
        ".lock",
        "checkpoint.pt",
        "checkpoint.sha256",
        "config.yaml",
        "confusion.png",
        "curves.png",
        "log.csv",
        "log.jsonl",
        "metrics.json",
        "scores.npz",
    ]
    assert yaml.safe_load((finished_run / "config.yaml").read_text()) == resolve_config(tiny_config())
    log = [json.loads(line) for line in (finished_run / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2, 3]
    assert [entry["lr"] for entry in log] == pytest.approx([0.1, 0.1, 0.01])
    assert all({"loss", "train_top1", "test_top1", "seconds", "threads"} <= entry.keys() for entry in log)
    assert all(entry["threads"] >= 1 for entry in log)
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert {"top1", "top5", "per_class_accuracy", "confusion_matrix", "wall_time_s", "parameters"} <= metrics.keys()
    assert metrics["samples"] == 15 and len(metrics["confusion_matrix"]) == 15
    assert metrics["top1"] == log[-1]["test_top1"]
    checkpoint = load_checkpoint(finished_run / "checkpoint.pt")
    assert checkpoint["epoch"] == 3 and {"model", "optimizer", "rng"} <= checkpoint.keys()
    assert set(checkpoint["rng"]) == {"torch", "cuda", "numpy", "python"}


def assert_same_weights(run: Path, reference: Path):
    weights = load_checkpoint(run / "checkpoint.pt")["model"]
    expected = load_checkpoint(reference / "checkpoint.pt")["model"]
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[name], expected[name]) for name in expected)


def test_resume_after_kill_is_bitwise_identical(tmp_path, monkeypatch, finished_run):
    class Killed(Exception):
        pass

    save = RunDirectory.save_checkpoint

    def save_then_kill(run, state):
        save(run, state)
        raise Killed

    monkeypatch.setattr(RunDirectory, "save_checkpoint", save_then_kill)
    with pytest.raises(Killed):
        train(tiny_config(), tmp_path / "run", progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 1
    metrics = train(tiny_config(), tmp_path / "run", resume=True, progress=False)
    assert_same_weights(tmp_path / "run", finished_run)
    assert metrics["top1"] == json.loads((finished_run / "metrics.json").read_text())["top1"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2, 3]


def test_extending_a_run_is_bitwise_identical(tmp_path, finished_run):
    train(tiny_config(train={"epochs": 1}), tmp_path / "run", progress=False)
    train(tiny_config(), tmp_path / "run", resume=True, progress=False)
    assert_same_weights(tmp_path / "run", finished_run)


def test_weight_average_follows_its_formula_and_swaps_back():
    """d_n = min(decay, (1 + n) / (10 + n)); parameters that train and batch-norm statistics are
    averaged, frozen parameters and counters are not; applied() restores the trained weights."""
    from skelang.runs.averaging import WeightAverage

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 2))
    model[2].weight.requires_grad_(False)
    average = WeightAverage([model], decay=0.2)  # the warm-up's d_n passes 0.2 at n = 2
    assert set(average.average) == {
        "0.0.weight",
        "0.0.bias",
        "0.1.weight",
        "0.1.bias",
        "0.2.bias",
        "0.1.running_mean",
        "0.1.running_var",
    }
    start = {name: tensor.clone() for name, tensor in average.average.items()}
    expected = dict(start)
    for step in range(4):
        with torch.no_grad():
            for tensor in model.parameters():
                tensor.add_(1.0)
            model[1].running_mean.add_(2.0)
            model[1].num_batches_tracked.add_(1)
        decay = min(0.2, (1 + step) / (10 + step))
        assert average.current_decay() == pytest.approx(decay)
        average.update()
        for name, tensor in average.trained.items():
            expected[name] = decay * expected[name] + (1 - decay) * tensor.detach()
    for name in expected:
        torch.testing.assert_close(average.average[name], expected[name], rtol=1e-6, atol=1e-6)
    trained = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    with average.applied():
        torch.testing.assert_close(model[0].weight, expected["0.0.weight"])
        torch.testing.assert_close(model[1].running_mean, expected["0.1.running_mean"])
        assert torch.equal(model[2].weight, trained["2.weight"])  # frozen: the model's own
        assert model[1].num_batches_tracked.item() == 4
        state = average.state_dict()  # the trained weights, though the model holds the average
        assert torch.equal(state["trained"]["0.0.weight"], trained["0.weight"])
        with pytest.raises(RuntimeError, match="does not nest"):
            with average.applied():
                pass
    assert all(torch.equal(tensor, trained[name]) for name, tensor in model.state_dict().items())
    assert average.current_decay() == 0.2  # capped at the decay
    other = WeightAverage([torch.nn.Sequential(torch.nn.Linear(3, 3))], decay=0.2)  # other names
    names = "0.1.bias, 0.1.running_mean, 0.1.running_var, 0.1.weight, 0.2.bias"
    with pytest.raises(ValueError, match=f"averaged weights: {names}$"):
        other.load_state_dict(state)
    wider = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 2))
    wider[2].weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"averaged weights: 0.0.weight$"):  # another shape
        WeightAverage([wider], decay=0.2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"train.ema_decay: expected a decay in \(0, 1\)"):
        WeightAverage([model], decay=0.0)


EMA = {"epochs": 3, "batch_size": 8, "threads": 1, "ema_decay": 0.9}


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch run of TINY with an EMA of its weights."""
    out = tmp_path_factory.mktemp("runs") / "averaged"
    train(tiny_config(train=EMA), out, progress=False)
    return out


def test_a_run_with_ema_evaluates_checkpoints_and_serves_the_average(tmp_path, averaged_run, finished_run):
    from skelang.runs import evaluate_run
    from skelang.runs.stages.encoder import EncoderStage

    checkpoint = load_checkpoint(averaged_run / "checkpoint.pt")
    average, trained = checkpoint["model"], checkpoint["weight_average"]["trained"]
    stage = EncoderStage(resolve_config(tiny_config(train=EMA)), RunDirectory(averaged_run), torch.device("cpu"))
    stage.build()
    assert checkpoint["weight_average"]["updates"] == 3 * stage.num_batches()  # one per step
    # the same training as without an average: the trained weights are the plain run's
    plain = load_checkpoint(finished_run / "checkpoint.pt")["model"]
    assert all(torch.equal(trained[f"0.{name}"], plain[name]) for name in plain if f"0.{name}" in trained)
    assert any(not torch.equal(average[name], plain[name]) for name in plain if f"0.{name}" in trained)
    # what the run evaluated is what its checkpoint gives a later evaluation
    logits = np.load(averaged_run / "scores.npz")["logits"]
    evaluate_run(averaged_run, device="cpu", write_scores=False, scores_path=tmp_path / "again.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "again.npz")["logits"], logits)


def test_a_run_with_ema_resumes_bitwise(tmp_path, averaged_run):
    train(tiny_config(train={**EMA, "epochs": 1}), tmp_path / "run", progress=False)
    train(tiny_config(train=EMA), tmp_path / "run", resume=True, progress=False)
    assert_same_weights(tmp_path / "run", averaged_run)
    resumed = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["weight_average"]
    straight = load_checkpoint(averaged_run / "checkpoint.pt")["weight_average"]
    assert resumed["updates"] == straight["updates"]
    assert all(torch.equal(resumed["trained"][name], straight["trained"][name]) for name in straight["trained"])
    with pytest.raises(ValueError, match="cannot resume with a different train.ema_decay"):
        train(tiny_config(train={**EMA, "ema_decay": 0.5}), tmp_path / "run", resume=True, progress=False)


def test_refuses_to_overwrite_or_resume_differently(tmp_path, finished_run):
    with pytest.raises(ValueError, match="already holds a run: resume it"):
        train(tiny_config(), finished_run, progress=False)
    with pytest.raises(ValueError, match="cannot resume with a different optim.lr"):
        train(tiny_config(optim={"lr": 0.2}), finished_run, resume=True, progress=False)
    with pytest.raises(ValueError, match="no checkpoint.pt to resume from"):
        train(tiny_config(), tmp_path / "empty", resume=True, progress=False)
    finished = json.loads((finished_run / "metrics.json").read_text())
    assert train(tiny_config(), finished_run, resume=True, progress=False) == finished  # nothing left to do


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    run = RunDirectory(tmp_path)
    run.save_checkpoint({"epoch": 1, "weights": torch.ones(3)})

    def partial_save(state, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(OSError, match="disk full"):
        run.save_checkpoint({"epoch": 2, "weights": torch.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.sha256"]
    assert run.load_checkpoint()["epoch"] == 1


def test_a_diverging_training_stops_with_an_error_and_keeps_its_last_checkpoint(tmp_path):
    """A loss gone NaN trained on and reported a believable top-1 (the argmax of NaN logits)."""
    with pytest.raises(TrainingDiverged, match=r"not finite at epoch \d+, batch \d+ .*last checkpoint is of") as error:
        train(tiny_config(optim={"lr": 1e6}), tmp_path / "run", progress=False)
    # the batch where the loss overflows depends on the CPU's float rounding (AVX2 or AVX-512)
    found = re.search(r"at epoch (\d+),.*last checkpoint is of epoch (\d+)", str(error.value))
    epoch, checkpoint = map(int, found.groups())
    assert epoch >= 2 and checkpoint == epoch - 1
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == checkpoint
    assert not (tmp_path / "run" / "metrics.json").exists()
    (tmp_path / "huge.yaml").write_text(yaml.safe_dump(tiny_config(optim={"lr": 1e12})))
    result = skelang_cli("train", "--config", str(tmp_path / "huge.yaml"), "--out", str(tmp_path / "huge"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "epoch 1, batch 2" in result.stderr and "no checkpoint is written" in result.stderr


def test_a_run_keeps_its_data_paths_absolute_and_evaluates_from_anywhere(tmp_path, monkeypatch):
    """data.train=clips (relative) was kept relative: eval and --resume from another folder
    failed with "clips: no such file or folder"."""
    from skelang.runs import evaluate_run

    rng = np.random.default_rng(0)
    for label in ("clap", "wave"):
        (tmp_path / "clips" / label).mkdir(parents=True)
        for i in range(4):
            np.save(tmp_path / "clips" / label / f"{i}.npy", rng.normal(size=(10, 17, 2)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    config = tiny_config(data={"train": "clips", "test": "clips", "augmentation": {}}, train={"epochs": 1})
    train(config, Path("run"), progress=False)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]
    assert saved["train"] == saved["test"] == str(tmp_path / "clips")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert evaluate_run(tmp_path / "run")["samples"] == 8
    monkeypatch.chdir(tmp_path)  # a run of an earlier version kept the relative path: it resumes alike
    earlier = {**saved, "train": "clips", "test": "clips"}
    raw = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({**raw, "data": earlier}))
    train({**config, "train": {**config["train"], "epochs": 2}}, Path("run"), resume=True, progress=False)


# command line


def test_overrides_may_follow_options(tmp_path, tiny_file):
    out = tmp_path / "run"
    result = skelang_cli("train", "--config", tiny_file, "train.epochs=1", "--out", out, "seed=4", "--no-progress")
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 1 and saved["seed"] == 4
    result = skelang_cli("train", "--config", str(tiny_file), "--out", str(tmp_path / "other"), "--bogus")
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr


def test_train_and_eval_commands(tmp_path, tiny_file):
    out = tmp_path / "run"
    result = skelang_cli("train", "--config", str(tiny_file), "train.epochs=1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "top-1" in result.stdout and str(out) in result.stdout
    result = skelang_cli("eval", str(out), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["epoch"] == 1 and metrics["samples"] == 15
    assert metrics["top1"] == json.loads((out / "metrics.json").read_text())["top1"]
    assert metrics["class_names"][:2] == ["wave", "clap"]  # the synthetic set's
    result = skelang_cli("eval", str(out))
    assert result.returncode == 0 and "  class   0 wave: " in result.stdout
    # --resume reads the run's own config: a finished run is left as it is ...
    result = skelang_cli("train", "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert "after 1 epoch " in result.stdout and "train.epochs" not in result.stderr
    # ... and more epochs train it on, announced
    result = skelang_cli("train", "--out", str(out), "--resume", "train.epochs=2")
    assert result.returncode == 0, result.stderr
    assert f"{out}: train.epochs 1 -> 2: the run goes on from epoch 1 to 2" in result.stderr
    assert "after 2 epochs" in result.stdout
    # ... and fewer epochs than it has trained are not taken silently
    result = skelang_cli("train", "--out", str(out), "--resume", "train.epochs=1")
    assert result.returncode == 0, result.stderr
    assert f"{out}: train.epochs=1, but the run has trained 2 epochs already: it is not shortened" in result.stderr
    assert "after 2 epochs" in result.stdout
    result = skelang_cli("train", "--out", str(tmp_path / "other"))
    assert result.returncode == 1 and "--config: expected a configuration" in result.stderr

    result = skelang_cli("train", "--config", str(tiny_file), "optim.lr=fast", "--out", str(tmp_path / "other"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"skelang train: error: {tiny_file} with the overrides optim.lr=fast: optim.lr: "
        "expected a positive number, got 'fast'"
    ]


def test_the_optimizer_is_sgd_or_adamw():
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    optim = resolve_config({"data": {"train": "x", "test": "y"}, "model": {"type": "stgcn"}})["optim"]
    sgd = make_optimizer(parameters, optim)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    adamw = make_optimizer(parameters, {**optim, "optimizer": "adamw", "lr": 1e-3})
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 1e-3
    with pytest.raises(ValueError, match="optim.optimizer"):
        resolve_config(
            {"data": {"train": "x", "test": "y"}, "model": {"type": "stgcn"}, "optim": {"optimizer": "adam"}}
        )


@pytest.mark.slow
def test_bf16_training_reaches_the_fp32_accuracy(tmp_path):
    """The synthetic ST-GCN recipe, trained to convergence (8 epochs), under torch.autocast in
    bfloat16: its ops run in bfloat16 (or float32, where they compare or sum), and it ends within
    half a point of float32. The test set has 900 sequences, so half a point is 4 of them (the
    recipe's 150 would allow none)."""
    overrides = ["data.num_workers=0", "data.test=synthetic:60:1", "train.epochs=8", "train.eval_every=8"]
    config = load_config("synthetic_stgcn", overrides)
    fp32 = train(config, tmp_path / "fp32", progress=False)
    bf16 = train({**config, "train": {**config["train"], "precision": "bf16"}}, tmp_path / "bf16", progress=False)
    assert abs(bf16["top1"] - fp32["top1"]) <= 0.005, (fp32["top1"], bf16["top1"])


@pytest.mark.slow
def test_bf16_resume_is_bitwise_identical(tmp_path):
    config = tiny_config(train={"precision": "bf16", "epochs": 2})
    train(config, tmp_path / "straight", progress=False)
    train({**config, "train": {**config["train"], "epochs": 1}}, tmp_path / "resumed", progress=False)
    train(config, tmp_path / "resumed", resume=True, progress=False)
    assert_same_weights(tmp_path / "resumed", tmp_path / "straight")


def test_bf16_without_native_support_is_announced(tmp_path, monkeypatch, capsys):
    """On a CPU without AVX-512 BF16 or AMX, autocast emulates bfloat16 (4.7x slower than fp32 for
    CTR-GCN's step on an AVX2 EPYC): training says so, and trains."""
    import skelang.runs.loop

    monkeypatch.setattr(skelang.runs.loop, "native_bfloat16", lambda device: False)
    train(tiny_config(train={"precision": "bf16", "epochs": 1}), tmp_path / "emulated", progress=False)
    assert "bf16 on a CPU without AVX-512 BF16 or AMX" in capsys.readouterr().err
    monkeypatch.setattr(skelang.runs.loop, "native_bfloat16", lambda device: True)
    train(tiny_config(train={"precision": "bf16", "epochs": 1}), tmp_path / "native", progress=False)
    assert "bf16" not in capsys.readouterr().err


def test_native_bfloat16_reads_the_cpu():
    from skelang.runs.stages.base import native_bfloat16

    x86 = torch.backends.cpu.get_cpu_capability().startswith("AVX")
    expected = (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()) if x86 else None
    assert native_bfloat16(torch.device("cpu")) is expected


def test_fp16_needs_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    with pytest.raises(ValueError, match="train.precision: fp16 needs a CUDA device; on the CPU use bf16"):
        train(tiny_config(train={"precision": "fp16"}), tmp_path / "run", progress=False)


def test_clips_of_one_and_two_people_train_and_evaluate_together(tmp_path):
    """PYSKL keeps each clip's own number of people: a file of one- and two-person clips
    failed to batch ('stack expects each tensor to be equal size'), and a two-person test set
    after one-person training failed after the first epoch. Every input now has the most
    bodies of the run's data (the others absent, as the NTU reader pads); evaluation data is
    padded to the model's, and a clip with more people than the model is an error naming it."""
    import pickle

    from skelang.runs import evaluate_run

    rng = np.random.default_rng(0)

    def clip(name, label, people, frames=12):
        keypoint = rng.normal(size=(people, frames, 17, 2)).astype(np.float32)
        return {"frame_dir": name, "label": label, "total_frames": frames, "keypoint": keypoint}

    def write(name, clips):
        (tmp_path / name).write_bytes(pickle.dumps({"annotations": clips}, protocol=4))
        return str(tmp_path / name)

    train_file = write("train.pkl", [clip(f"t{i}", i % 2, 1 + (i % 3 == 0)) for i in range(12)])
    test_file = write("test.pkl", [clip(f"v{i}", i % 2, 1) for i in range(4)])
    config = {
        "seed": 0,
        "data": {"train": train_file, "test": test_file, "num_frames": 8, "num_workers": 0},
        "model": {"type": "stgcn", "channels": [8], "strides": [1]},
        "optim": {"lr": 0.05, "warmup_epochs": 0},
        "train": {"epochs": 1, "batch_size": 4, "test_batch_size": 4},
    }
    metrics = train(config, tmp_path / "run", progress=False)
    assert metrics["samples"] == 4
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["num_bodies"] == 2
    assert evaluate_run(tmp_path / "run", data=train_file)["samples"] == 12  # 1 and 2 people
    crowd = write("crowd.pkl", [clip("three", 0, 3)])
    with pytest.raises(ValueError, match="three: 3 bodies; the model takes 2"):
        evaluate_run(tmp_path / "run", data=crowd)


def test_an_unlabelled_sequence_is_named(tmp_path):
    """'the data holds unlabelled sequences' did not say which."""
    clips = tmp_path / "clips"
    clips.mkdir()
    frame = {"frame_index": 1, "skeleton": [{"pose": [0.5] * 36, "score": [0.9] * 18}]}
    for name, label in (("labelled", 1), ("nameless", -1)):
        (clips / f"{name}.json").write_text(
            json.dumps({"data": [frame, {**frame, "frame_index": 2}], "label_index": label})
        )
    config = {
        "data": {"train": str(clips), "test": str(clips), "num_frames": 4, "num_workers": 0},
        "model": {"type": "stgcn", "channels": [8], "strides": [1]},
        "train": {"epochs": 1},
    }
    with pytest.raises(ValueError, match=r"holds 1 unlabelled sequence\(s\) \(nameless\)"):
        train(config, tmp_path / "run", progress=False)


def test_a_checkpoints_layout_made_at_run_time_is_registered(tmp_path, monkeypatch):
    """Evaluation builds the model before reading data: a user's layout ('hand5' of the
    README) was unknown there ("unknown skeleton layout"). The checkpoint keeps it (a fresh
    process evaluating the README's run: tests/test_readme.py); a run of an earlier version
    without it and without a cache gets an error that says what to do."""
    from skelang.data import layouts
    from skelang.runs.stages.encoder import checkpoint_layout

    definition = {**layouts.layout_to_dict("coco17"), "name": "made_at_run_time"}
    run = RunDirectory(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(resolve_config(tiny_config())))
    monkeypatch.setattr(layouts, "_LAYOUTS", dict(layouts._LAYOUTS))  # registrations end with the test
    assert checkpoint_layout(run, {"layout": "made_at_run_time", "layout_definition": definition}) == "made_at_run_time"
    assert layouts.get_layout("made_at_run_time").joint_names == layouts.get_layout("coco17").joint_names
    with pytest.raises(ValueError, match="layout 'other' was made at run time and its checkpoint does not keep it"):
        checkpoint_layout(run, {"layout": "other"})
