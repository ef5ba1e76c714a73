"""LoRA adapters in tiny random Hugging Face models (Llama: nn.Linear, GPT-2: Conv1D):
targeting (suffix list, regex), freezing and gradients, the output at init, merge / unmerge /
safe merge, named adapters and disabling, rsLoRA, dropout, cpp vs reference backend, and PEFT
files both ways (ours -> peft.PeftModel, PEFT -> ours) with equal logits."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.pytorch_utils import Conv1D  # noqa: E402

from skelang.lm.adapters import LoRAConfig, LoRAModel, inject_lora, load_adapter, lora_layers  # noqa: E402
from skelang.lm.lora import Conv1DLoRALayer  # noqa: E402

GPT2_TARGETS = ["c_attn", "c_proj", "c_fc"]
# raised inside transformers when PEFT wraps a model, not by this code
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def make_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=0,
        eos_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


def make_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=64, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def llama():
    return make_llama()


@pytest.fixture(scope="module")
def gpt2():
    return make_gpt2()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(1))


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def randomise_B(model, name=None, std=0.1, seed=2):
    """lora_B is zero at init; give it random values so the adapter changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in model.lora_layers():
            for adapter, B in layer.lora_B.items():
                if name is None or adapter == name:
                    B.copy_(torch.randn(B.shape, generator=g) * std)


QV = ["q_proj", "v_proj"]  # PEFT's default targets


def adapted(base, config, **kwargs) -> LoRAModel:
    return inject_lora(copy.deepcopy(base), config, **kwargs)


def targeted(base, config) -> list[str]:
    """The module names a config adapts in a copy of `base`."""
    return LoRAModel(copy.deepcopy(base)).add_adapter("default", config)


# --- targeting --------------------------------------------------------------------------------


def test_config_validation():
    for bad in (
        dict(r=0),
        dict(r=2.0),
        dict(alpha=0),
        dict(dropout=1.0),
        dict(rslora="yes"),
        dict(target_modules=[]),
        dict(target_modules=["q_proj", ""]),
        dict(target_modules="("),
    ):
        with pytest.raises(ValueError):
            LoRAConfig(**bad)
    with pytest.raises(ValueError, match="all-linear"):
        LoRAConfig(target_modules="all-linear")
    assert LoRAConfig(target_modules=("q_proj",)).target_modules == ["q_proj"]
    assert LoRAConfig().target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]  # the lm stage's defaults
    assert (LoRAConfig().r, LoRAConfig().alpha, LoRAConfig().dropout) == (16, 32.0, 0.05)


def test_inject_by_suffix_list_and_regex(llama):
    expected = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    model = adapted(llama, LoRAConfig(r=4, target_modules=QV))
    assert [name for name, _ in model.lora_layers()] == expected
    assert [name for name, _ in lora_layers(model)] == ["model." + name for name in expected]  # under the wrapper
    assert targeted(llama, LoRAConfig(target_modules=r".*\.(q|v)_proj")) == expected
    # a suffix may be dotted; it must end at a '.' boundary, and a regex must match the whole name
    assert targeted(llama, LoRAConfig(target_modules=["self_attn.q_proj"])) == expected[::2]
    assert targeted(llama, LoRAConfig(target_modules=["model.layers.1.mlp.up_proj"])) == ["model.layers.1.mlp.up_proj"]
    for config in (LoRAConfig(target_modules=["proj"]), LoRAConfig(target_modules="q_proj")):
        with pytest.raises(ValueError, match=r"match no module of LlamaForCausalLM.*layers\.0\.self_attn\.q_proj"):
            inject_lora(copy.deepcopy(llama), config)


def test_inject_gpt2_conv1d(gpt2, ids):
    model = LoRAModel(copy.deepcopy(gpt2))
    names = model.add_adapter("default", LoRAConfig(r=4, target_modules=GPT2_TARGETS))
    assert len(names) == 8 and all(name.rsplit(".", 1)[-1] in GPT2_TARGETS for name in names)
    c_fc = model.model.get_submodule("transformer.h.0.mlp.c_fc")
    assert isinstance(c_fc, Conv1DLoRALayer) and isinstance(c_fc.base_layer, Conv1D) and c_fc.fan_in_fan_out
    assert type(model.model.get_submodule("lm_head")) is torch.nn.Linear  # not targeted
    assert (c_fc.in_features, c_fc.out_features) == (32, 128)
    regex = r"transformer\.h\.\d+\.(attn\.c_attn|mlp\.c_fc)"
    assert targeted(gpt2, LoRAConfig(target_modules=regex)) == [
        name for name in names if name.endswith(("c_attn", "c_fc"))
    ]
    assert c_fc.lora_A["default"].shape == (4, 32) and c_fc.lora_B["default"].shape == (128, 4)
    # the op takes the Conv1D weight's transpose, a non-contiguous (out, in) view
    randomise_B(model)
    x = torch.randn(3, 5, 32)
    base = c_fc.base_layer
    expected = base(x) + c_fc.scaling["default"] * (x @ c_fc.lora_A["default"].T) @ c_fc.lora_B["default"].T
    torch.testing.assert_close(c_fc(x), expected, rtol=1e-5, atol=1e-5)


def test_wrong_module_type_is_a_type_error(llama):
    model = copy.deepcopy(llama)
    with pytest.raises(TypeError, match=r"'model\.layers\.0\.input_layernorm'.*LlamaRMSNorm"):
        inject_lora(model, LoRAConfig(target_modules=["q_proj", "input_layernorm"]))
    assert not lora_layers(model)  # checked before anything is replaced


# --- training -----------------------------------------------------------------------------


def test_only_adapters_train(llama, ids):
    model = adapted(llama, LoRAConfig(r=4, target_modules=QV))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 8 and all(".lora_A.default" in n or ".lora_B.default" in n for n in trainable)
    assert {id(p) for p in model.lora_parameters()} == {id(p) for p in model.parameters() if p.requires_grad}
    randomise_B(model)
    model(ids, labels=ids).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
        if p.requires_grad:
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("make", ["llama", "gpt2"])
def test_starts_as_base_then_differs(make, request, ids):
    base = request.getfixturevalue(make)
    targets = GPT2_TARGETS if make == "gpt2" else ("q_proj", "v_proj")
    model = adapted(base, LoRAConfig(r=4, target_modules=targets))
    torch.testing.assert_close(logits(model, ids), logits(base, ids))
    randomise_B(model)
    assert (logits(model, ids) - logits(base, ids)).abs().max() > 1e-3


def test_rslora_scaling(llama):
    plain = adapted(llama, LoRAConfig(r=4, alpha=8))
    rs = adapted(llama, LoRAConfig(r=4, alpha=8, rslora=True))
    assert plain.lora_layers()[0][1].scaling["default"] == 2.0
    assert rs.lora_layers()[0][1].scaling["default"] == pytest.approx(8 / math.sqrt(4))
    assert adapted(llama, LoRAConfig(r=16, alpha=8, rslora=True)).lora_layers()[0][1].scaling["default"] == 2.0


def test_dropout_only_in_training(llama, ids):
    model = adapted(llama, LoRAConfig(r=4, dropout=0.5))
    assert not any(layer.training for _, layer in model.lora_layers())  # the replaced modules' mode
    randomise_B(model)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(logits(model, ids), logits(model, ids))


def test_cpp_and_reference_backends_agree(gpt2, ids):
    models = [
        adapted(gpt2, LoRAConfig(r=4, target_modules=GPT2_TARGETS), backend=backend) for backend in ("cpp", "reference")
    ]
    with torch.no_grad():
        for a, b in zip(models[0].lora_parameters(), models[1].lora_parameters()):
            b.copy_(a.normal_(0, 0.1))
    losses = [model(ids, labels=ids).loss for model in models]
    torch.testing.assert_close(losses[0], losses[1])
    for loss in losses:
        loss.backward()
    for a, b in zip(models[0].lora_parameters(), models[1].lora_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="backend"):
        inject_lora(copy.deepcopy(gpt2), LoRAConfig(), backend="cuda")


HALF_BASES = [
    ("cpu", torch.bfloat16),
    pytest.param("cuda", torch.bfloat16, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
    pytest.param("cuda", torch.float16, marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


@pytest.mark.parametrize("backend", ["cpp", "reference"])
@pytest.mark.parametrize(("device", "dtype"), HALF_BASES)
def test_adapters_of_a_half_precision_base_train_in_float32(llama, ids, backend, device, dtype):
    """A base loaded in bfloat16 or float16, as language models usually are: its adapters are
    created in float32 (PEFT's autocast_adapter_dtype) and get float32 gradients; the output
    has the base's dtype and follows the float32 model's with the same adapters within the
    half precision's error."""
    config = LoRAConfig(r=4, target_modules=QV)
    model32 = adapted(copy.deepcopy(llama).to(device), config, backend=backend)
    randomise_B(model32)
    model16 = adapted(copy.deepcopy(llama).to(device, dtype), config, backend=backend)
    assert {p.dtype for p in model16.lora_parameters()} == {torch.float32}
    assert {p.dtype for p in model16.parameters() if not p.requires_grad} == {dtype}
    with torch.no_grad():
        for ours, theirs in zip(model16.lora_parameters(), model32.lora_parameters()):
            ours.copy_(theirs)
    ids = ids.to(device)
    out = model16(ids, labels=ids)
    assert out.logits.dtype == dtype
    torch.testing.assert_close(out.logits.float(), logits(model32, ids), rtol=0.05, atol=0.05)
    out.loss.backward()
    grads = [p.grad for p in model16.lora_parameters()]
    assert all(g is not None and g.dtype == torch.float32 for g in grads) and any(g.abs().sum() > 0 for g in grads)


# --- merging ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["llama", "gpt2"])
def test_merge_and_unmerge(make, request, ids):
    base = request.getfixturevalue(make)
    targets = GPT2_TARGETS if make == "gpt2" else ("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")
    model = adapted(base, LoRAConfig(r=4, target_modules=targets))
    randomise_B(model)
    weights = {name: layer.weight.clone() for name, layer in model.lora_layers()}
    unmerged = logits(model, ids)
    model.merge_adapter()
    assert all(layer.merged_adapter == "default" for _, layer in model.lora_layers())
    assert any(not torch.equal(layer.weight, weights[name]) for name, layer in model.lora_layers())
    torch.testing.assert_close(logits(model, ids), unmerged, rtol=0, atol=1e-5)
    assert model.merged == ["default"]
    with pytest.raises(ValueError, match=r"adapter 'default' is merged already; unmerge_adapter\(\) first"):
        model.merge_adapter()
    with pytest.raises(ValueError, match="merged"):
        with model.disable_adapters():
            pass
    model.unmerge_adapter()
    for name, layer in model.lora_layers():
        torch.testing.assert_close(layer.weight, weights[name], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits(model, ids), unmerged, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="nothing to unmerge"):
        model.unmerge_adapter()
    with pytest.raises(ValueError, match="nothing to unmerge"):
        model.lora_layers()[0][1].unmerge()


def test_safe_merge_rejects_non_finite_weights(llama):
    model = adapted(llama, LoRAConfig(r=4))
    randomise_B(model)
    weights = {name: layer.weight.clone() for name, layer in model.lora_layers()}
    bad_name, bad = model.lora_layers()[2]
    with torch.no_grad():
        bad.lora_B["default"][0, 0] = float("nan")
    with pytest.raises(ValueError, match=rf"'{bad_name}'.*non-finite.*left unchanged"):
        model.merge_adapter(safe_merge=True)
    for name, layer in model.lora_layers():  # the layers merged before the failing one are rolled back too
        assert layer.merged_adapter is None
        torch.testing.assert_close(layer.weight, weights[name], rtol=0, atol=1e-6)
    assert torch.equal(bad.weight, weights[bad_name])


# --- named adapters -----------------------------------------------------------------------


def test_two_named_adapters(llama, ids):
    model = adapted(llama, LoRAConfig(r=4, target_modules=QV), adapter_name="a")
    randomise_B(model, "a", seed=3)
    logits_a = logits(model, ids)
    # "b" adapts q_proj (already a LoRALayer: gets a second adapter) and o_proj (newly wrapped)
    assert len(model.add_adapter("b", LoRAConfig(r=2, alpha=4, target_modules=["q_proj", "o_proj"]))) == 4
    randomise_B(model, "b", seed=4)
    assert model.adapter_names == ["a", "b"]
    q_proj = model.model.get_submodule("model.layers.0.self_attn.q_proj")
    assert list(q_proj.lora_A) == ["a", "b"] and q_proj.active_adapter == "b"
    assert {id(p) for p in model.lora_parameters("b")} == {id(p) for p in model.parameters() if p.requires_grad}
    logits_b = logits(model, ids)
    assert (logits_a - logits_b).abs().max() > 1e-3
    model.set_adapter("a")
    torch.testing.assert_close(logits(model, ids), logits_a)
    assert {id(p) for p in model.lora_parameters("a")} == {id(p) for p in model.parameters() if p.requires_grad}
    with model.disable_adapters():
        torch.testing.assert_close(logits(model, ids), logits(llama, ids))
    torch.testing.assert_close(logits(model, ids), logits_a)
    with pytest.raises(ValueError, match=r"no adapter named 'c'; it has \['a', 'b'\]"):
        model.set_adapter("c")
    with pytest.raises(ValueError, match="already has an adapter named 'a'"):
        inject_lora(model, LoRAConfig(), "a")
    model.merge_adapter("b")
    with pytest.raises(ValueError, match="unmerge"):
        model.set_adapter("a")
    model.unmerge_adapter()
    assert len(model.lora_parameters()) == 2 * (4 + 4)


# --- PEFT files ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", ["llama", "gpt2"])
def test_peft_loads_our_adapter(make, request, ids, tmp_path):
    peft = pytest.importorskip("peft")
    base = request.getfixturevalue(make)
    targets = GPT2_TARGETS if make == "gpt2" else r".*\.(q_proj|v_proj|down_proj)"
    model = adapted(base, LoRAConfig(r=4, alpha=8, dropout=0.1, rslora=True, target_modules=targets))
    randomise_B(model)
    ours = logits(model, ids)
    model.save_adapter(tmp_path, base_model_name_or_path="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["peft_type"] == "LORA" and saved["target_modules"] == (targets if make == "llama" else GPT2_TARGETS)
    assert saved["fan_in_fan_out"] == (make == "gpt2") and saved["use_rslora"] and saved["r"] == 4
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path)).eval()
    assert (logits(theirs, ids) - logits(base, ids)).abs().max() > 1e-3  # the adapter is in use
    torch.testing.assert_close(logits(theirs, ids), ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize("make", ["llama", "gpt2"])
def test_we_load_a_peft_adapter(make, request, ids, tmp_path):
    peft = pytest.importorskip("peft")
    base = request.getfixturevalue(make)
    targets = GPT2_TARGETS if make == "gpt2" else ["q_proj", "k_proj", "up_proj"]
    config = peft.LoraConfig(
        r=4,
        lora_alpha=16,
        lora_dropout=0.1,
        use_rslora=make == "gpt2",
        target_modules=targets,
        fan_in_fan_out=make == "gpt2",
        task_type="CAUSAL_LM",
    )
    theirs = peft.get_peft_model(copy.deepcopy(base), config).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    theirs.save_pretrained(str(tmp_path))
    model = load_adapter(copy.deepcopy(base), tmp_path, "peft")
    assert model.adapter_names == ["peft"] and model.active_adapter == "peft"
    layer = model.lora_layers()[0][1]
    assert layer.scaling["peft"] == (16 / 2 if make == "gpt2" else 16 / 4) and layer.lora_dropout["peft"] == 0.1
    torch.testing.assert_close(logits(model, ids), logits(theirs, ids), rtol=0, atol=1e-5)
    assert (logits(model, ids) - logits(base, ids)).abs().max() > 1e-3


def test_load_errors(llama, tmp_path):
    model = adapted(llama, LoRAConfig(r=4, target_modules=QV))
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(copy.deepcopy(llama), tmp_path)
    model.save_adapter(tmp_path)
    config_path = tmp_path / "adapter_config.json"
    good = json.loads(config_path.read_text())
    for change, message in [
        ({"peft_type": "IA3"}, "peft_type is 'IA3', expected 'LORA'"),
        ({"r": None}, r"missing LoRA keys \['r'\]"),
        ({"use_dora": True}, "use_dora = True is not supported"),
        ({"r": 2}, r"lora_A.weight has shape \(4, 32\), expected \(2, 32\)"),
        ({"target_modules": ["q_proj", "k_proj", "v_proj"]}, r"missing keys \['model.layers.0.self_attn.k_proj"),
    ]:
        config_path.write_text(json.dumps({**good, **change}))
        fresh = copy.deepcopy(llama)
        with pytest.raises(ValueError, match=message):
            load_adapter(fresh, tmp_path)
        assert not lora_layers(fresh)  # nothing injected on error
    config_path.write_text(json.dumps({**good, "target_modules": ["q_proj"]}))
    with pytest.raises(ValueError, match=r"unexpected keys \['model.layers.0.self_attn.v_proj"):
        load_adapter(copy.deepcopy(llama), tmp_path)
    with pytest.raises(ValueError, match="no adapter named 'other'"):
        model.save_adapter(tmp_path, "other")
    # saving again replaces both files atomically: no temporary files are left behind
    model.save_adapter(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
