"""VST: the vector quantizer (straight-through, commitment, k-means++ init, EMA, revival,
usage statistics, identical codebooks across DDP ranks), training on the synthetic set
without collapse, deterministic narratives, and the glossary."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import skelang_cli

import skelang.ops as ops
from skelang.vst.narrative import format_narrative, parse_narrative
from skelang.vst.quantizer import VectorQuantizer, kmeans_plus_plus


def clustered(n: int, centres: torch.Tensor, noise: float = 0.05) -> torch.Tensor:
    return centres[torch.randint(len(centres), (n,))] + noise * torch.randn(n, centres.shape[1])


def test_straight_through_and_commitment():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 4, kmeans_init=False, commitment=0.25).train()
    x = torch.randn(10, 4, requires_grad=True)
    out = quantizer(x)
    weights = torch.randn(10, 4)
    (out.quantized * weights).sum().backward()
    torch.testing.assert_close(x.grad, weights)  # the code's gradient passes to the input
    code = quantizer.codebook[out.indices]
    torch.testing.assert_close(out.quantized, code)
    torch.testing.assert_close(out.commitment_loss, 0.25 * (x.detach() - code).square().mean())


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_kmeans_init_finds_the_clusters(metric):
    torch.manual_seed(1)
    centres = torch.eye(8) * 10
    quantizer = VectorQuantizer(8, 8, metric=metric, init_vectors=400).train()
    for _ in range(4):  # the first batches are collected, then k-means runs
        quantizer(clustered(100, centres))
    assert bool(quantizer.initialized)
    indices = quantizer(centres).indices
    assert sorted(indices.tolist()) == list(range(8))  # one code per cluster


def test_kmeans_plus_plus_spreads_its_centres():
    torch.manual_seed(2)
    points = clustered(500, torch.eye(5) * 20)
    centres = kmeans_plus_plus(points, 5)
    assert len(set(ops.nearest_code(centres, torch.eye(5) * 20)[0].tolist())) == 5


def test_dead_codes_are_revived_where_the_data_is():
    torch.manual_seed(3)
    quantizer = VectorQuantizer(32, 2, kmeans_init=False, decay=0.8, dead_threshold=0.5).train()
    with torch.no_grad():
        quantizer.codebook.normal_().add_(100)  # every code far from the data: dead after a few steps
        quantizer.embed_sum.copy_(quantizer.codebook)
    for _ in range(20):
        quantizer(torch.randn(256, 2))
    assert int(quantizer.revived) > 0
    quantizer.reset_usage()
    quantizer(torch.randn(2048, 2))
    stats = quantizer.usage_statistics()
    assert stats["used_fraction"] > 0.5 and stats["perplexity"] > 8
    assert quantizer.codebook.abs().max() < 10  # no code is left at the far corner


def test_usage_statistics():
    quantizer = VectorQuantizer(4, 2, kmeans_init=False)
    quantizer.usage.copy_(torch.tensor([5.0, 5.0, 5.0, 5.0]))
    assert quantizer.usage_statistics()["perplexity"] == pytest.approx(4.0)
    quantizer.usage.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0]))
    stats = quantizer.usage_statistics()
    assert stats["perplexity"] == pytest.approx(1.0) and stats["used_fraction"] == 0.25


def test_bad_inputs():
    with pytest.raises(ValueError, match="metric must be one of"):
        VectorQuantizer(4, 2, metric="l1")
    with pytest.raises(ValueError, match=r"inputs must end in D = 2, got shape \[3, 5\]"):
        VectorQuantizer(4, 2)(torch.randn(3, 5))


def test_vst_does_not_collapse_on_the_synthetic_set(synthetic_vst_run, synthetic_hglnet_run):
    run, metrics = synthetic_vst_run
    print("codebook on the training data:", {k: v for k, v in metrics.items() if k.startswith("train_codebook")})
    assert metrics["train_codebook_used_fraction"] >= 0.6
    assert metrics["train_codebook_perplexity"] > 100
    assert metrics["top1"] == synthetic_hglnet_run[1]["top1"]  # the frozen encoder is untouched
    assert metrics["token_top1"] > 0.3  # four tokens alone name many actions (chance: 1/15)
    assert metrics["decoder_mse"] < metrics["mean_motion_mse"]  # the codes' decoded motion beats the mean motion


def test_tokenize_is_deterministic_and_writes_narratives(synthetic_vst_run, tmp_path):
    run, _ = synthetic_vst_run
    outputs = []
    for name in ("a.jsonl", "b.jsonl"):
        result = skelang_cli("vst", "tokenize", run, "--data", "synthetic:2:7", "--out", tmp_path / name)
        assert result.returncode == 0, result.stderr
        outputs.append((tmp_path / name).read_text())
    assert outputs[0] == outputs[1]
    records = [json.loads(line) for line in outputs[0].splitlines()]
    assert len(records) == 30
    for record in records:
        runs = parse_narrative(record["narrative"])
        assert sum(count for _, count in runs) == 4  # 16 frames / stride 2 / 2 steps per segment
        assert record["runs"][-1]["end"] == 16
        assert format_narrative_from(record) == record["narrative"]


def format_narrative_from(record: dict) -> str:
    from skelang.vst.narrative import TokenRun

    return format_narrative([TokenRun(r["code"], r["count"], r["start"], r["end"]) for r in record["runs"]])


def test_glossary_command(synthetic_vst_run):
    run, metrics = synthetic_vst_run
    result = skelang_cli("vst", "glossary", run)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    entries = json.loads((run / "glossary.json").read_text())
    assert len(entries) == round(metrics["train_codebook_used_fraction"] * 512)
    assert len(lines) >= len(entries)
    assert all(entry["description"] for entry in entries)


def test_render_a_code(synthetic_vst_run, tmp_path):
    run, _ = synthetic_vst_run
    code = json.loads((run / "glossary.json").read_text())[0]["code"]
    out = tmp_path / "code.gif"
    result = skelang_cli("data", "render", run, "--code", code, "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 1000
    result = skelang_cli("data", "render", run, "--code", "9999", "--out", out)
    assert result.returncode == 1 and "code 9999 is not in [0, 512)" in result.stderr


def test_the_checkpoint_holds_the_decoder_fitted_at_the_end(synthetic_vst_run):
    """The glossary describes the decoder fitted after training; the checkpoint (which
    `skelang data render --code` and a rebuilt glossary read) must hold that decoder."""
    from skelang.data.dataset import SkeletonDataset, make_loader
    from skelang.runs.stages.encoder import load_sequences, make_preprocess
    from skelang.runs.stages.vst import load_vst_run

    run, metrics = synthetic_vst_run
    stage = load_vst_run(run)
    model = stage.model
    train_sequences, _ = load_sequences(stage.config["data"])
    loader = make_loader(SkeletonDataset(train_sequences, make_preprocess(stage.config["data"])), 64, shuffle=False)
    losses, sizes = [], []
    with torch.no_grad():
        for inputs, _ in loader:
            codes = model.quantizer(model.segment_features(model.encoder.features(inputs))).quantized.flatten(0, 1)
            targets = model.motion_targets(inputs)[:, : codes.shape[0] // len(inputs)].flatten(0, 1)
            losses.append(float(model.decoder.reconstruction_loss(codes, targets)) * len(codes))
            sizes.append(len(codes))
    assert sum(losses) / sum(sizes) == pytest.approx(metrics["decoder_mse"], rel=1e-3)


@pytest.mark.slow
def test_extending_a_vst_run_trains_on_as_a_straight_run(tmp_path):
    """The decoder fitted at the end is kept beside the training state, not in it: a VST run
    extended by an epoch ends with the weights of one trained straight."""
    from skelang.runs import RunDirectory, train

    config = {
        "stage": "vst",
        "seed": 0,
        "data": {"train": "synthetic:2:0", "test": "synthetic:1:1", "num_frames": 8, "num_workers": 0},
        "model": {"type": "stgcn", "channels": [8, 8], "strides": [1, 2]},
        "train": {"epochs": 2, "batch_size": 8},
        "vst": {"num_codes": 8, "code_dim": 8, "segment_length": 2},
    }
    train(config, tmp_path / "straight", progress=False)
    train({**config, "train": {**config["train"], "epochs": 1}}, tmp_path / "extended", progress=False)
    train(config, tmp_path / "extended", resume=True, progress=False)
    weights, expected = (RunDirectory(tmp_path / run).load_checkpoint() for run in ("extended", "straight"))
    assert weights["model"].keys() == expected["model"].keys()
    assert all(torch.equal(weights["model"][key], expected["model"][key]) for key in expected["model"])
    assert all(torch.equal(weights["fitted_decoder"][k], v) for k, v in expected["fitted_decoder"].items())


def test_a_frozen_encoder_gets_the_inputs_it_was_trained_on(synthetic_hglnet_run, synthetic_vst_run, tmp_path):
    """VST on vst.encoder_run, and stage lm on lm.vst_run, with data made differently from the
    encoder's run: the error names each differing key and the value to set, before training.
    (The shipped nw_ucla_vst config once fed its minmax-trained encoder unscaled inputs.)"""
    from conftest import SYNTHETIC_HGLNET, lm_config

    from skelang.runs import train

    encoder_run, _ = synthetic_hglnet_run
    vst_run, _ = synthetic_vst_run
    data = {**SYNTHETIC_HGLNET["data"], "minmax": True, "num_frames": SYNTHETIC_HGLNET["data"]["num_frames"] * 2}
    config = {
        **SYNTHETIC_HGLNET,
        "data": data,
        "stage": "vst",
        "vst": {"num_codes": 16, "code_dim": 8, "encoder_run": str(encoder_run)},
    }
    with pytest.raises(ValueError, match=r"vst.encoder_run: .* set data.num_frames=\d+, data.minmax=false"):
        train(config, tmp_path / "vst", progress=False)
    assert not (tmp_path / "vst" / "checkpoint.pt").exists()
    config = lm_config(vst_run, tmp_path / "no-model-needed")
    config["data"] = {**config["data"], "streams": ["bone"]}
    with pytest.raises(ValueError, match=r"lm.vst_run: .* set data.streams=\[joint\]"):
        train(config, tmp_path / "lm", progress=False)


def test_narrating_data_of_another_skeleton_layout_names_it(synthetic_vst_run):
    """The language-model stage narrates sequences through the VST run's encoder (eval and
    explain --data): another layout is a ValueError naming the sequence, not torch's."""
    import numpy as np

    from skelang.data import from_sequences
    from skelang.runs.stages.lm import narrate
    from skelang.runs.stages.vst import load_vst_run

    run, _ = synthetic_vst_run
    stage = load_vst_run(run)
    clips = from_sequences([np.random.rand(12, 20, 3).astype("float32")], [0], layout="kinect_v1_20", names=["ucla"])
    with pytest.raises(ValueError, match=r"ucla is a skeleton of layout kinect_v1_20 \(20 joints\), but the encoder"):
        narrate(stage.model, clips, stage.config["data"])
