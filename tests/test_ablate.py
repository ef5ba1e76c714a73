"""Ablation sweeps: variants and seeds from a sweep file, resumed after a kill, and a table
with paired bootstrap intervals; the shipped sweeps resolve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from skelang.runs.ablate import paired_bootstrap, read_sweep, shipped_sweeps, variant_configs

TINY = {
    "data.train": "synthetic:1:0",
    "data.test": "synthetic:1:1",
    "data.num_frames": 8,
    "data.num_workers": 0,
    "model.channels": [8],
    "model.strides": [1],
    "train.epochs": 1,
}


def sweep_file(tmp_path, **extra):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": "synthetic_stgcn",
                "overrides": TINY,
                "seeds": [0, 1],
                "variants": {"wider": {"model.channels": [16]}},
                **extra,
            }
        )
    )
    return path


def test_every_shipped_sweep_resolves():
    for name in shipped_sweeps():
        configs = variant_configs(read_sweep(name))
        assert ("base", next(iter(configs))[1]) in configs, name
        assert all(config["stage"] in ("encoder", "ssf", "lm") for config in configs.values())


def test_sweep_errors_name_the_key(tmp_path):
    for extra, message in [
        ({"varients": {}}, "unknown key.* varients"),
        ({"variants": {"x": {"model.chanels": [4]}}}, "variant x.*unknown key model.chanels"),
        ({"seeds": [-1]}, "seeds: expected a list of distinct non-negative integers"),
        ({"seeds": [0, 0]}, "seeds: expected a list of distinct non-negative integers"),
        ({"grid": {"optim.lr": 0.1}}, "grid: expected key: \\[values, ...\\] lists"),
    ]:
        with pytest.raises(ValueError, match=message):
            variant_configs(read_sweep(sweep_file(tmp_path, **extra)))
    grid = read_sweep(sweep_file(tmp_path, grid={"optim.lr": [0.1, 0.05]}))
    assert set(grid["variants"]) == {"base", "wider", "lr=0.1", "lr=0.05"}


def test_paired_bootstrap_of_a_better_variant(tmp_path):
    rng = np.random.default_rng(0)
    N = 400
    labels = rng.integers(0, 3, N)
    ids = np.array([f"s{i}" for i in range(N)])

    def run(name, accuracy):
        folder = tmp_path / name
        folder.mkdir()
        logits = rng.normal(size=(N, 3))
        good = rng.random(N) < accuracy
        logits[good, labels[good]] += 5
        np.savez(folder / "scores.npz", ids=ids, labels=labels, logits=logits.astype(np.float32))
        return folder / "scores.npz"

    delta, low, high = paired_bootstrap([run("base", 0.5)], [run("better", 0.8)])
    assert 0.05 < delta < 0.45 and 0 < low < delta < high


@pytest.mark.slow
def test_ablate_runs_resumes_after_a_kill_and_writes_its_table(tmp_path):
    path = sweep_file(tmp_path)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "skelang", "ablate", str(path), "--out", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in first.stderr:  # killed once the second run has started
        if line.startswith("ablate: training") and "seed1" in line:
            first.kill()
            break
    first.wait()
    done_before = sorted(p.parent.name + "/" + p.name for p in out.glob("*/seed*") if (p / "metrics.json").is_file())
    result = subprocess.run(command + ["--json"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert sorted((row["variant"], row["seed"]) for row in rows) == [
        ("base", 0),
        ("base", 1),
        ("wider", 0),
        ("wider", 1),
    ]
    assert len(done_before) >= 1  # finished before the kill, kept
    table = (out / "results.md").read_text()
    assert "| base | 2 |" in table and "| wider | 2 |" in table and "[" in table
    assert (out / "results.csv").read_text().count("\n") == 5 and (out / "results.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_changed_sweep_or_a_foreign_folder_is_refused_before_training(tmp_path):
    """An edited sweep reused the runs of the old one (its table unchanged, config.yaml still
    the old lr); --out into a folder of other files scattered the sweep among them."""
    from skelang.runs.ablate import ablate

    out = tmp_path / "out"
    ablate(sweep_file(tmp_path, seeds=[0], variants={}), out, progress=False)
    changed = sweep_file(tmp_path, seeds=[0], variants={}, overrides={**TINY, "optim.lr": 0.05})
    with pytest.raises(ValueError, match=r"base/seed0 was trained with another config .*optim\.lr 0\.1 -> 0\.05"):
        ablate(changed, out, progress=False)
    longer = sweep_file(tmp_path, seeds=[0], variants={}, overrides={**TINY, "train.epochs": 2})
    table = ablate(longer, out, progress=False)  # more epochs: the run trains on
    assert list(table.columns) == ["variant", "seed", "top1", "top5", "wall_time_s", "run"]
    assert table[["variant", "seed"]].values.tolist() == [["base", 0]] and 0 <= table.top1[0] <= 1
    assert json.loads((out / "base" / "seed0" / "log.jsonl").read_text().splitlines()[-1])["epoch"] == 2
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "clip0.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"--out .*clips: holds files that are not this sweep's \(clip0\.npy\)"):
        ablate(longer, tmp_path / "clips", progress=False)
    with pytest.raises(ValueError, match="--jobs must be at least 1"):
        ablate(longer, out, jobs=0, progress=False)


@pytest.mark.slow
def test_a_sweep_does_not_count_itself_against_its_trainings(tmp_path, monkeypatch):
    """`skelang ablate` is a registered job like every command; while it only waited for its
    trainings they counted it, and each trained on half of the cores (one thread of two)."""
    from skelang.runs.ablate import ablate
    from skelang.threads import ThreadBudget, available_cpus, live_jobs

    if len(available_cpus()) < 2:
        pytest.skip("needs two CPUs")
    monkeypatch.setenv("SKELANG_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the trainings' cap (a pytest-xdist worker's is 1)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # beside the other test worker: no spinning
    with ThreadBudget():  # the command line's registration of the sweep
        ablate(sweep_file(tmp_path, seeds=[0], variants={}), tmp_path / "out", progress=False)
        assert live_jobs() == [os.getpid()]  # registered again once its trainings ended
    [entry] = [
        json.loads(line) for line in (tmp_path / "out" / "base" / "seed0" / "log.jsonl").read_text().splitlines()
    ]
    assert entry["threads"] == 2


def _ended(pid: int) -> bool:
    """The process is gone or a zombie (nothing reaps orphans in some containers)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_sweeps_training_ends_when_the_sweep_is_killed(tmp_path):
    """A killed sweep (SIGKILL: no chance to stop its children) leaves no orphan training that
    would hold its run folder when the sweep is run again."""
    path = sweep_file(tmp_path, seeds=[0], variants={}, overrides={**TINY, "train.epochs": 1000})
    sweep = subprocess.Popen([sys.executable, "-m", "skelang", "ablate", str(path), "--out", str(tmp_path / "out")])
    lock = tmp_path / "out" / "base" / "seed0" / ".lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.1)
    training = int(lock.read_text())  # the training holds its run folder: it is running
    assert training != sweep.pid and not _ended(training)
    sweep.kill()
    sweep.wait()
    deadline = time.monotonic() + 10
    while not _ended(training) and time.monotonic() < deadline:
        time.sleep(0.05)
    ended = _ended(training)
    if not ended:
        os.kill(training, signal.SIGKILL)
    assert ended, "the training outlived its sweep"
