"""The `skelang` command line: its commands inside the test's process (skelang_cli), and as a user runs it
where the process itself is tested (a closed pipe, the environment at load, the benchmarks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import skelang_cli as run

SKELANG = shutil.which("skelang", path=str(Path(sys.executable).parent)) or "skelang"


def test_info_json_lists_the_ops():
    result = run("info", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["ops"]["graph_aggregate"] == ["CPU"] + (["CUDA"] if info["cuda_kernels_built"] else [])
    assert info["torch"] == info["built_against_torch"]
    assert set(info) >= {
        "skelang",
        "torch",
        "cuda_kernels_built",
        "ops",
        "cpu_capability",
        "cpu_kernels",
        "cpu_native_bfloat16",
    }


def test_info_names_the_kernels_level_and_the_environment_lowers_it():
    levels = {"x86-64-v4 (AVX-512)", "x86-64-v3 (AVX2)", "baseline"}
    assert json.loads(run("info", "--json").stdout)["cpu_kernels"] in levels
    lowered = subprocess.run(
        [SKELANG, "info", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SKELANG_CPU_LEVEL": "0"},
    )
    assert json.loads(lowered.stdout)["cpu_kernels"] == "baseline"


def test_info_text():
    result = run("info")
    assert result.returncode == 0 and "skelang::graph_aggregate" in result.stdout


def load_bench_harness(monkeypatch):
    import importlib.util

    from conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("bench_harness", REPO_ROOT / "benchmarks" / "harness.py")
    harness = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, harness)  # its dataclasses look their module up
    spec.loader.exec_module(harness)
    return harness


def test_bench_times_a_long_call_at_least_min_measurements_times(monkeypatch):
    """A call longer than min_run_time is not timed once: the median is of several calls."""
    harness = load_bench_harness(monkeypatch)
    calls = []
    seconds = harness.median_seconds(lambda: calls.append(time.sleep(0.02)), min_run_time=0.001)
    assert len(calls) >= harness.MIN_MEASUREMENTS >= 3 and seconds >= 0.02


def test_bench_ratio_holds_on_a_machine_that_slows_down(monkeypatch):
    """Two sides doing the same work on a machine that gets slower with every call: timed in
    alternating rounds their ratio stays near 1 (one side timed after the other reads well
    above 1), and a case times its skelang, reference and peer sides that way."""
    import itertools

    import torch

    harness = load_bench_harness(monkeypatch)
    calls = []

    def work():  # the same work, slower the more calls the machine has run
        calls.append(None)
        time.sleep(0.002 * (1 + 0.1 * len(calls)))

    a, b = harness.interleaved_medians([work, work], min_run_time=0.02)
    assert 0.8 < a / b < 1.25
    calls.clear()
    (first,), (second,) = harness.interleaved_medians([work], 0.02), harness.interleaved_medians([work], 0.02)
    assert second / first > 1.25  # what timing one side after the other would report

    order = []
    case = harness.Case(
        "case",
        "",
        None,
        skelang=lambda: order.append("s"),
        reference=lambda: order.append("r"),
        peer=lambda: order.append("p"),
        peer_name="peer",
    )
    row = harness.time_case(case, torch.device("cpu"), peak_gflops=1.0, min_run_time=0.001)
    assert row["speedup"] > 0 and row["peer_speedup"] > 0
    blocks = "".join(side for side, _ in itertools.groupby(order))  # each block of calls once
    assert blocks == "srp" * (len(blocks) // 3) and len(blocks) // 3 >= harness.MIN_MEASUREMENTS


def test_bench_quick_json_reports_ratios():
    result = subprocess.run([SKELANG, "bench", "--quick", "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["peak_gflops_fp32_matmul"] > 0
    rows = report["results"]
    aggregate = [r for r in rows if r["name"].startswith("graph_aggregate")]
    assert {r["params"].split("A=")[1] for r in aggregate} == {
        "shared",
        "per_channel",
        "per_sample",
        "per_sample_channel",
    }
    assert {"ntu .skeleton parse", "ntu read + preprocess"} <= {r["name"] for r in rows}
    assert {
        "composite_aggregate fwd+bwd",
        "hglnet training step",
        "ctrgcn training step",
        "quantizer step (search + EMA)",
        "LoRA layer step",
        "LoRA vs frozen base",
        "contrastive_alignment_loss fwd+bwd",
        "cross_modal_attention fwd+bwd",
        "synthetic_stgcn: loader batch vs training step",
    } <= {r["name"] for r in rows}
    loader = next(r for r in rows if r["name"] == "synthetic_stgcn: loader batch vs training step")
    assert loader["skelang_samples_per_s"] > 0 and loader["reference_samples_per_s"] > 0
    composite = next(r for r in rows if r["name"] == "composite_aggregate fwd+bwd")
    assert composite["skelang_saved_mib"] < composite["reference_saved_mib"]  # no (N, K, C, V, V) topology kept
    for r in rows:
        assert r["skelang_ms"] > 0 and r["reference_ms"] > 0
        assert r["speedup"] == pytest.approx(r["reference_ms"] / r["skelang_ms"])


def test_unknown_command_and_options_are_refused():
    assert run("frobnicate").returncode == 2
    result = run("info", "--frobnicate")
    assert result.returncode == 2 and "unrecognized arguments: --frobnicate" in result.stderr


def test_bad_flags_and_outputs_are_named_in_one_line(tmp_path):
    """A new user's mistakes: each a one-line error naming the flag or the file (no torch or
    matplotlib message, no '[Errno 2]'), nothing written."""
    negative = run("model", "profile", "--frames", "-3")
    assert negative.returncode == 2 and "argument --frames: expected a positive integer, got '-3'" in negative.stderr
    zero = run("model", "profile", "--step", "0")
    assert zero.returncode == 2 and "argument --step: expected a positive integer, got '0'" in zero.stderr
    import numpy as np

    np.savez(tmp_path / "clips.npz", a=np.ones((4, 17, 2), dtype=np.float32))
    labels = run("data", "inspect", tmp_path / "clips.npz", "--labels", tmp_path / "nope.csv")
    assert labels.returncode == 1 and f"{tmp_path / 'nope.csv'}: No such file or directory" in labels.stderr
    assert "Errno" not in labels.stderr
    (tmp_path / "notes.txt").write_text("mine")
    into_a_file = run("train", "--config", "synthetic_stgcn", "--out", tmp_path / "notes.txt")
    assert into_a_file.returncode == 1 and "notes.txt is a file: choose a new folder for the run" in into_a_file.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "clips.npz",
        "notes.txt",
    ]


def test_output_closed_by_its_reader_is_quiet():
    """skelang ... | head: the reader goes away before skelang writes; no message, no traceback."""
    process = subprocess.Popen([SKELANG, "config", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader leaves at once
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert stderr == ""


def test_another_broken_pipe_is_an_error(monkeypatch, capsys):
    """A broken pipe that is not standard output (a worker, a subprocess) is reported, not swallowed."""
    from skelang import cli

    def broken(*args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_info", broken)
    assert cli.main(["info"]) == 1
    assert "skelang info: error:" in capsys.readouterr().err
