"""Data-parallel training (skelang.runs.distributed): the ranks' batches, the CPU SyncBatchNorm,
VST's quantizer with unequal parts, and torchrun against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import lm_config

from skelang.data.dataset import EpochBatchSampler, shard
from skelang.runs.distributed import SyncBatchNorm, convert_batch_norms

WORKER = Path(__file__).with_name("distributed_worker.py")


@pytest.mark.parametrize("length", [0, 1, 5, 7, 16])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_parts_are_contiguous_balanced_and_cover_the_items(length, world):
    items = list(range(length))
    parts = [shard(items, rank, world) for rank in range(world)]
    assert sum(parts, []) == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("size", [60, 61, 62, 64])
def test_the_ranks_batches_together_are_one_process_batches(size):
    one = list(EpochBatchSampler(size, 16, shuffle=True, seed=3, epoch=2))
    for world in (2, 3):
        samplers = [
            EpochBatchSampler(size, 16, shuffle=True, seed=3, epoch=2, rank=r, world=world) for r in range(world)
        ]
        batches = [list(sampler) for sampler in samplers]
        assert len({len(b) for b in batches}) == 1 and len(batches[0]) == len(samplers[0])
        joined = [sum(parts, []) for parts in zip(*batches)]
        dropped = samplers[0].dropped
        assert dropped == (size % 16 if size % 16 < world else 0)
        # the same global batches, less a last batch with fewer items than ranks
        assert joined == (one[:-1] if dropped else one)
        assert all(len(part) > 0 for parts in batches for part in parts)


def test_a_batch_smaller_than_the_world_is_refused():
    with pytest.raises(ValueError, match=r"batch size \(2\) must be at least the number of processes \(4\)"):
        EpochBatchSampler(10, 2, shuffle=False, world=4)


def test_sync_batch_norm_outside_a_process_group_is_batch_norm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv1d(3, 4, 1), torch.nn.BatchNorm1d(4), torch.nn.ReLU())
    weight, running = model[1].weight, model[1].running_mean
    x = torch.randn(5, 3, 7)
    expected = model(x)
    convert_batch_norms(model, torch.device("cpu"))
    assert isinstance(model[1], SyncBatchNorm)
    assert model[1].weight is weight and model[1].running_mean is running  # an optimizer keeps them
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(ValueError, match="expects \\(N, C, ...\\) input, got 1 dimensions"):
        model[1](torch.randn(4))


def _two_ranks(tmp_path: Path, case: str, *args: str) -> list[dict]:
    init_file = tmp_path / f"rendezvous_{case}"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                case,
                str(rank),
                "2",
                str(init_file),
                str(tmp_path / f"{case}{rank}.pt"),
                *args,
            ],
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for rank in range(2)
    ]
    for process in processes:
        _, error = process.communicate(timeout=180)
        assert process.returncode == 0, error
    return [torch.load(tmp_path / f"{case}{rank}.pt") for rank in range(2)]


def test_sync_batch_norm_over_two_gloo_ranks_is_batch_norm_over_the_global_batch(tmp_path):
    ranks = _two_ranks(tmp_path, "batch_norm")
    torch.manual_seed(0)  # as the worker
    x, weight = torch.randn(10, 3, 4, dtype=torch.float64), torch.randn(10, 3, 4, dtype=torch.float64)
    norm = torch.nn.BatchNorm1d(3).double()
    inputs = x.clone().requires_grad_()
    output = norm(inputs)
    (output * weight).sum().backward()
    torch.testing.assert_close(torch.cat([r["output"] for r in ranks]), output.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.cat([r["input_grad"] for r in ranks]), inputs.grad, rtol=0, atol=1e-12)
    # DDP averages the weights' gradients over the ranks; each rank's loss here is its part's sum
    torch.testing.assert_close(ranks[0]["weight_grad"] + ranks[1]["weight_grad"], norm.weight.grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(ranks[0]["bias_grad"] + ranks[1]["bias_grad"], norm.bias.grad, atol=1e-12, rtol=0)
    for rank in ranks:
        torch.testing.assert_close(rank["running_mean"], norm.running_mean, atol=1e-12, rtol=0)
        torch.testing.assert_close(rank["running_var"], norm.running_var, atol=1e-12, rtol=0)


@pytest.mark.parametrize("sizes", [("128", "128"), ("96", "32")], ids=["equal", "unequal"])
def test_quantizer_ranks_end_with_identical_codebooks(tmp_path, sizes):
    ranks = _two_ranks(tmp_path, "quantizer", *sizes)
    assert ranks[0]["initialized"] and ranks[1]["initialized"]
    assert ranks[0]["revived"] > 0  # the test covers revivals too
    assert ranks[0]["revived"] == ranks[1]["revived"]
    assert torch.equal(ranks[0]["codebook"], ranks[1]["codebook"])
    assert torch.equal(ranks[0]["cluster_size"], ranks[1]["cluster_size"])


def _train(out: Path, epochs: int, *flags: str, processes: int = 1) -> subprocess.CompletedProcess:
    """skelang train of the tiny synthetic config for `epochs` epochs into `out`."""
    return _skelang(
        "train",
        "--config",
        "synthetic_stgcn",
        "data.train=synthetic:4:0",
        "data.test=synthetic:2:1",
        "data.num_workers=0",
        "train.threads=1",
        f"train.epochs={epochs}",
        "--no-progress",
        *flags,
        "--out",
        str(out),
        processes=processes,
    )


def _skelang(*args: str, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    return subprocess.run(
        [sys.executable, *launcher, "-m", "skelang", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _weights(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=False)["model"]


def test_torchrun_two_gloo_ranks_reach_one_process_weights_and_resume_on_one(tmp_path):
    """Two gloo processes and one with the same global batch reach the same weights within 1e-6
    (absolute and relative; 8 steps), and the two-process run resumes in one process."""
    one = _train(tmp_path / "one", 2)
    assert one.returncode == 0, one.stderr
    two = _train(tmp_path / "two", 1, processes=2)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("after 1 epoch ") == 1  # rank 0 reports
    assert len((tmp_path / "two" / "log.jsonl").read_text().splitlines()) == 1  # rank 0 writes
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2
    resumed = _train(tmp_path / "two", 2, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected, got = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for name, value in expected.items():
        # 1e-6, relative as well: the ranks' sums add in another order, and a batch-norm
        # variance near 1.5 differed by 1.07e-6 (a few float32 ulps) on an AVX2 CPU
        torch.testing.assert_close(got[name], value, rtol=1e-6, atol=1e-6, msg=name)
    # a second start into the finished run fails on every rank with rank 0's reason, no hang
    again = _train(tmp_path / "two", 2, processes=2)
    assert again.returncode != 0
    assert "already holds a run" in again.stderr


def test_the_ssf_vst_and_joint_lm_stages_train_under_torchrun(synthetic_vst_run, tiny_language_model, tmp_path):
    """One epoch of each stage built on the encoder, on two gloo ranks: the run's files come
    from rank 0 and VST's codebook stays one codebook."""
    import yaml

    from skelang.runs import RunDirectory

    vst_config = RunDirectory(synthetic_vst_run[0]).config
    vst_config["train"].update(epochs=1, eval_every=1, threads=1)
    vst_config["data"].update(train="synthetic:8:0", test="synthetic:2:1", num_workers=0)
    repository = Path(__file__).resolve().parents[1]
    ssf_config = yaml.safe_load((repository / "configs" / "synthetic_ssf.yaml").read_text())
    ssf_config["data"].update(train="synthetic:4:0", test="synthetic:2:1", num_workers=0)
    ssf_config["train"].update(epochs=1, eval_every=1)
    lm = lm_config(synthetic_vst_run[0], tiny_language_model, joint={"enabled": True}, explain_samples=0)
    lm["train"].update(epochs=1)
    for name, config, produced in (
        ("ssf", ssf_config, "scores.npz"),
        ("vst", vst_config, "glossary.json"),
        ("lm", lm, "adapter/adapter_model.safetensors"),
    ):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        result = _skelang("train", "--config", str(path), "--no-progress", "--out", str(tmp_path / name), processes=2)
        assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
        assert (tmp_path / name / produced).is_file(), name
        assert json.loads((tmp_path / name / "metrics.json").read_text())["world_size"] == 2


def test_fsdp_shards_the_language_model_as_ddp_trains_it_and_checkpoints_whole(
    synthetic_vst_run, tiny_language_model, tmp_path
):
    """train.parallel: fsdp on two gloo ranks (FSDP2, one unit per Llama block) trains the
    weights DDP trains on two ranks (within 1e-5), from scratch and from a DDP checkpoint; its
    checkpoint is whole, weights and optimizer state in torch's own layout, so any number of
    processes resume it, sharded or not."""
    import yaml

    config = lm_config(synthetic_vst_run[0], tiny_language_model, explain_samples=0)
    config["lm"]["lora"]["dropout"] = 0.0  # the ranks draw other random numbers than one process
    config["train"].update(epochs=2, eval_every=2, threads=1)
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump(config))

    def train(out, epochs, parallel, processes, *flags):
        result = _skelang(
            "train", "--config", str(path), f"train.epochs={epochs}", f"train.parallel={parallel}",
            "--no-progress", *flags, "--out", str(tmp_path / out), processes=processes,
        )  # fmt: skip
        assert result.returncode == 0, "\n".join(line for line in result.stderr.splitlines() if "rror" in line)

    def assert_same(run, reference):
        expected, got = _weights(tmp_path / reference), _weights(tmp_path / run)
        assert sorted(got) == sorted(expected)
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=1e-5, msg=f"{run}: {name}")

    train("fsdp", 1, "fsdp", 2)
    train("ddp", 1, "ddp", 2)
    assert_same("fsdp", "ddp")
    saved = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=False)["optimizer"] for run in ("fsdp", "ddp")]
    assert saved[0]["param_groups"] == saved[1]["param_groups"] and sorted(saved[0]["state"]) == sorted(
        saved[1]["state"]
    )
    for number, moments in saved[1]["state"].items():  # AdamW's moments, whole, in torch's layout
        for key, value in moments.items():
            torch.testing.assert_close(saved[0]["state"][number][key], value, rtol=0, atol=1e-5)
    # a DDP checkpoint resumed sharded, and a sharded one resumed by DDP (which, as one process
    # does, loads torch's own layout): the same second epoch
    train("ddp", 2, "fsdp", 2, "--resume")
    train("fsdp", 2, "ddp", 2, "--resume")
    assert_same("ddp", "fsdp")
    assert (tmp_path / "ddp" / "adapter" / "adapter_model.safetensors").is_file()  # written sharded


def test_fsdp_is_for_the_language_model_stage(tmp_path):
    result = _skelang("train", "--config", "synthetic_stgcn", "train.parallel=fsdp", "--out", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "train.parallel: fsdp shards the language-model stage (stage: lm)" in result.stderr
