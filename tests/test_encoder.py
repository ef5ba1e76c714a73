"""HGLNet and its baselines: shapes, every ablation switch, the C++ and reference backends
agreeing, config errors, and the profile."""

from __future__ import annotations

import re

import pytest
import torch

from skelang.encoder import PRESETS, build_model, encoder_config, profile, step_profile
from skelang.encoder.pointwise import PointwiseConv

TINY = {"channels": [8, 16], "strides": [1, 2], "attention_heads": 2}


def run(config, layout="ntu25", bodies=2, frames=8, classes=5):
    from skelang.data.layouts import get_layout

    torch.manual_seed(0)
    model = build_model({**TINY, **config}, 3, classes, layout, bodies)
    x = torch.randn(3, 3, frames, get_layout(layout).num_joints, bodies)
    logits = model(x)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    return model, x, logits


@pytest.mark.parametrize("kind", list(PRESETS))
def test_presets(kind):
    model, x, logits = run({"type": kind})
    assert logits.shape == (3, 5)
    assert model.features(x).shape == (3, 2, 16, 4, 25)  # (N, M, C', T / 2, V)


@pytest.mark.parametrize(
    "switch",
    [
        {"gsm": False},
        {"gta": False},
        {"gsm": False, "gta": False},
        {"lse_topology": "physical"},
        {"lse_topology": "shared"},
        {"lse_topology": "composite"},
        {"ltc_dilations": [1, 2, 3, 4], "channels": [12, 24]},
        {"ltc_pool_branch": False, "ltc_pointwise_branch": False},
        {"temporal_order": "ltc_gta"},
        {"temporal_order": "parallel"},
        {"dropout": 0.5},
        {"recompute_attention": True},
    ],
)
def test_every_switch_runs(switch):
    _, _, logits = run(switch, layout="kinect_v1_20", bodies=1)
    assert torch.isfinite(logits).all()


def test_cpp_and_reference_backends_agree():
    torch.manual_seed(1)
    cpp = build_model({**TINY, "backend": "cpp"}, 3, 4, "ntu25").eval()
    reference = build_model({**TINY, "backend": "reference"}, 3, 4, "ntu25").eval()
    reference.load_state_dict(cpp.state_dict())
    x = torch.randn(2, 3, 8, 25, 2)
    torch.testing.assert_close(cpp(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", list(PRESETS))
def test_backends_agree_in_training_with_gradients(kind):
    # float64, every norm's weight 1 and alpha non-zero, so that every path counts.
    torch.manual_seed(2)
    cpp = build_model({**TINY, "type": kind, "backend": "cpp"}, 3, 4, "kinect_v1_20", 1).double()
    reference = build_model({**TINY, "type": kind, "backend": "reference"}, 3, 4, "kinect_v1_20", 1).double()
    with torch.no_grad():
        for name, parameter in cpp.named_parameters():
            if name.endswith("norm.weight") or name.endswith("alpha"):
                parameter.fill_(0.7)
    reference.load_state_dict(cpp.state_dict())
    x = torch.randn(3, 3, 8, 20, 1, dtype=torch.float64)
    y, y_ref = cpp(x), reference(x)
    torch.testing.assert_close(y, y_ref)
    y.square().sum().backward()
    y_ref.square().sum().backward()
    for (name, p), p_ref in zip(cpp.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, msg=name)
    for (name, b), b_ref in zip(cpp.named_buffers(), reference.buffers()):  # batch-norm statistics
        torch.testing.assert_close(b, b_ref, msg=name)


def aten_calls(fn):
    """The aten operators `fn()` dispatches to, with their call counts (1 x 1 convolutions apart)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name == "convolution" and args[1].shape[-2:] == (1, 1):
                name = "convolution 1 x 1"
            calls[name] += 1
            return func(*args, **(kwargs or {}))

    calls = Counter()
    with Record():
        fn()
    return calls


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_pointwise_conv_as_matmul_is_the_convolution(stride):
    """PointwiseConv's batched-matmul path against F.conv2d in float64: forward and every
    gradient, odd frame counts (a partial last stride), non-contiguous and channels-last inputs."""
    torch.manual_seed(4)
    layer = PointwiseConv(6, 10, stride, backend="cpp").double()
    assert list(layer.state_dict()) == ["weight", "bias"]  # nn.Conv2d's
    for x in (
        torch.randn(3, 5, 7, 6, dtype=torch.float64).permute(0, 3, 2, 1),  # (3, 6, 7, 5)
        torch.randn(3, 6, 7, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last),
    ):
        x.requires_grad_()
        calls = aten_calls(lambda x=x: layer(x))
        assert calls["baddbmm"] == 1 and calls["convolution 1 x 1"] == 0, calls
        y = layer(x)
        y_ref = torch.nn.functional.conv2d(x, layer.weight, layer.bias, (stride, 1))
        torch.testing.assert_close(y, y_ref)
        grad = torch.randn_like(y)
        got = torch.autograd.grad(y, (x, layer.weight, layer.bias), grad)
        expected = torch.autograd.grad(y_ref, (x, layer.weight, layer.bias), grad)
        for name, a, b in zip(("x", "weight", "bias"), got, expected):
            torch.testing.assert_close(a, b, msg=name)
    with pytest.raises(RuntimeError, match=r"expected input\[3, 4, 7, 5\] to have 6 channels, but got 4"):
        layer(torch.randn(3, 4, 7, 5, dtype=torch.float64))


def test_pointwise_conv_convolves_under_autocast_and_on_the_reference_backend():
    torch.manual_seed(5)
    layer = PointwiseConv(16, 8, 2, backend="cpp")
    x = torch.randn(2, 16, 9, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        calls = aten_calls(lambda: layer(x))
        y, y_conv = layer(x), torch.nn.functional.conv2d(x, layer.weight, layer.bias, (2, 1))
    assert calls["convolution 1 x 1"] == 1 and calls["baddbmm"] == 0, calls
    assert y.dtype == torch.bfloat16 and torch.equal(y, y_conv)
    for backend in ("cpp", "reference"):
        model = build_model({**TINY, "backend": backend}, 3, 4, "kinect_v1_20", 1)
        convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convolutions and all(isinstance(m, PointwiseConv) for m in convolutions)
        assert {m.as_matmul for m in convolutions} == {backend == "cpp"}
        with torch.no_grad():
            calls = aten_calls(lambda model=model: model(torch.randn(2, 3, 8, 20, 1)))
        assert (calls["baddbmm"] > 0) == (backend == "cpp"), calls
        assert (calls["convolution 1 x 1"] > 0) == (backend == "reference"), calls


def test_recomputed_attention_gives_the_same_gradients_with_less_kept():
    torch.manual_seed(3)
    plain = build_model({**TINY, "channels": [16, 16]}, 3, 4, "kinect_v1_20", 1).double()
    recomputed = build_model(
        {**TINY, "channels": [16, 16], "recompute_attention": True}, 3, 4, "kinect_v1_20", 1
    ).double()
    with torch.no_grad():
        for name, parameter in plain.named_parameters():
            if name.endswith("norm.weight"):
                parameter.fill_(0.7)  # GSM's and GTA's norms start at 0, which hides their gradients
    recomputed.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 16, 20, 1, dtype=torch.float64)
    kept = {}
    for name, model in (("plain", plain), ("recomputed", recomputed)):
        storages = {}

        def pack(t, storages=storages):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(x).square().sum()
        loss.backward()
        kept[name] = sum(storages.values())
    for (name, p), p_other in zip(plain.named_parameters(), recomputed.parameters()):
        torch.testing.assert_close(p.grad, p_other.grad, msg=name)
    assert kept["recomputed"] < 0.8 * kept["plain"]


def test_hglnet_learns_the_synthetic_set(synthetic_hglnet_run):
    """A small HGLNet (conftest.SYNTHETIC_HGLNET, 6 epochs, about 30 s) reaches at least 95%
    test top-1 on the synthetic set."""
    _, metrics = synthetic_hglnet_run
    assert metrics["top1"] >= 0.95, metrics["top1"]


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"unknown key model.chanels \(did you mean model.channels\?\)"):
        encoder_config({"chanels": [8]})
    with pytest.raises(ValueError, match="model.type: expected one of hglnet, ctrgcn, stgcn, got 'resnet'"):
        encoder_config({"type": "resnet"})
    with pytest.raises(ValueError, match="model.lse_topology: expected one of physical, shared, composite"):
        encoder_config({"lse_topology": "full"})
    with pytest.raises(ValueError, match="model.channels and model.strides must have the same length .* set both"):
        encoder_config({"channels": [8, 8], "strides": [1]})
    with pytest.raises(ValueError, match=r"model.attention_heads \(3\) must divide every block's channels"):
        build_model({**TINY, "attention_heads": 3}, 3, 4, "ntu25")
    for bad, message in (
        (16, "model.channels: expected a non-empty list of positive integers, got 16"),
        ([0, 16], "got [0, 16]"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            encoder_config({"channels": bad, "strides": [1, 1]})
    with pytest.raises(ValueError, match=re.escape("model.strides: expected a non-empty list of positive integers")):
        encoder_config({"channels": [8, 8], "strides": [1, None]})
    with pytest.raises(ValueError, match="model.attention_heads: expected a positive integer, got 0"):
        encoder_config({"attention_heads": 0})


def test_profile_counts_parameters_and_flops():
    stats = profile({**TINY, "type": "ctrgcn"}, layout="kinect_v1_20", num_frames=16, num_bodies=1)
    model = build_model({**TINY, "type": "ctrgcn"}, 3, 60, "kinect_v1_20", 1)
    assert stats["parameters"] == sum(p.numel() for p in model.parameters())
    assert stats["gflops"] > 0
    longer = profile({**TINY, "type": "ctrgcn"}, layout="kinect_v1_20", num_frames=32, num_bodies=1)
    assert longer["gflops"] > stats["gflops"]  # twice the frames, more work
    for kind in PRESETS:  # skelang's ops counted as their plain-PyTorch references are
        shapes = {"layout": "kinect_v1_20", "num_frames": 16, "num_bodies": 1}
        cpp = profile({**TINY, "type": kind}, **shapes)["gflops"]
        assert cpp == pytest.approx(profile({**TINY, "type": kind, "backend": "reference"}, **shapes)["gflops"]), kind


def test_step_profile_names_the_operators_of_a_training_step():
    shapes = {"layout": "kinect_v1_20", "num_frames": 8, "num_bodies": 1, "num_classes": 10, "batch_size": 2}
    report = step_profile({**TINY, "type": "hglnet"}, top=5, **shapes)
    ops = report["ops"]
    assert report["step_ms"] > 0 and len(ops) == 5
    assert [r["self_ms"] for r in ops] == sorted((r["self_ms"] for r in ops), reverse=True)
    every = step_profile({**TINY, "type": "hglnet"}, top=10_000, **shapes)["ops"]
    assert sum(r["percent"] for r in every) == pytest.approx(100)
    assert {"skelang::axis_attention_with_probs", "skelang::composite_aggregate"} <= {r["op"] for r in every}
    assert all(r["calls"] >= 1 for r in every if r["op"].startswith("skelang::"))
    with pytest.raises(ValueError, match="batch_size, steps and top must be positive, got 0"):
        step_profile({**TINY, "type": "hglnet"}, **{**shapes, "batch_size": 0})
    # under bf16 autocast the float32 weights are cast (ToCopyBackward) and PointwiseConv
    # calls F.conv2d instead of its float32 batched product
    bf16 = {
        r["op"]
        for r in step_profile({**TINY, "type": "hglnet"}, top=10_000, autocast_dtype=torch.bfloat16, **shapes)["ops"]
    }
    assert "ToCopyBackward0" in bf16 and "aten::baddbmm" not in bf16
    assert "aten::baddbmm" in {r["op"] for r in every} and "ToCopyBackward0" not in {r["op"] for r in every}


def test_model_profile_command():
    import json

    from conftest import skelang_cli

    command = "model profile --type ctrgcn --layout kinect_v1_20 --frames 52 --bodies 1 --classes 10 --step 2"
    result = skelang_cli(*command.split(), "--top", "3", "--precision", "bf16", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["step"]["batch_size"] == 2 and len(report["step"]["ops"]) == 3 and report["step"]["step_ms"] > 0
    assert report["step"]["precision"] == "bf16"
    assert report["parameters"] == sum(
        p.numel() for p in build_model({"type": "ctrgcn"}, 3, 10, "kinect_v1_20", 1).parameters()
    )
    assert report["gflops"] > 0.5


def test_model_profile_of_a_trained_run(synthetic_hglnet_run, synthetic_vst_run, tmp_path):
    import json

    import yaml
    from conftest import skelang_cli

    run, _ = synthetic_hglnet_run
    result = skelang_cli("model", "profile", "--run", str(run), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert report["input"]["frames"] == config["data"]["num_frames"] and report["input"]["bodies"] >= 1
    layout = report["input"]["layout"]
    assert report["parameters"] == sum(
        p.numel()
        for p in build_model(
            config["model"], 3, config["data"]["num_classes"] or 15, layout, report["input"]["bodies"]
        ).parameters()
    )
    mixed = skelang_cli("model", "profile", "--run", str(run), "--frames", "30")
    assert mixed.returncode != 0 and "--run takes the model and the input's shape from the run; drop --frames" in (
        mixed.stderr
    )
    vst_run, _ = synthetic_vst_run
    other = skelang_cli("model", "profile", "--run", str(vst_run))
    assert other.returncode != 0 and "Traceback" not in other.stderr and "stage encoder or ssf" in other.stderr
    empty = skelang_cli("model", "profile", "--run", str(tmp_path))
    assert empty.returncode != 0 and "not a skelang training run" in empty.stderr


def test_data_of_another_skeleton_layout_is_named_not_a_torch_error(synthetic_hglnet_run, tmp_path):
    import numpy as np
    from conftest import skelang_cli

    from skelang.data import cache, from_sequences

    run, _ = synthetic_hglnet_run
    clips = from_sequences([np.random.rand(12, 20, 3).astype("float32")], [0], layout="kinect_v1_20", names=["ucla"])
    data = cache.write_cache(clips, tmp_path / "ucla")
    result = skelang_cli("eval", run, "--data", data)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "ucla is a skeleton of layout kinect_v1_20 (20 joints), but the model of" in result.stderr
    assert "has ntu25 (25 joints): give data of that layout" in result.stderr
