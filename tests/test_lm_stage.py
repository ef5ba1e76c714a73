"""The language-model stage end to end on the synthetic set: a tiny random Llama saved as a
local Hugging Face folder reads the narratives of the synthetic VST run; training writes a
resumable run with a PEFT adapter; eval, explain and the config's errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import lm_config, skelang_cli

from skelang.fusion.descriptions import load_descriptions
from skelang.lm.prompts import CodeEvidence, build_prompt, target_text
from skelang.vst.glossary import GlossaryEntry


@pytest.fixture(scope="module")
def synthetic_lm_run(synthetic_vst_run, tiny_language_model, tmp_path_factory):
    from skelang.runs import train

    vst_run, _ = synthetic_vst_run
    folder = tmp_path_factory.mktemp("synthetic_lm")
    config = lm_config(vst_run, tiny_language_model)
    metrics = train(config, folder / "run", progress=False)
    return folder / "run", config, metrics


def test_the_run_holds_its_files_and_metrics(synthetic_lm_run):
    run, _, metrics = synthetic_lm_run
    for name in (
        "config.yaml",
        "log.jsonl",
        "checkpoint.pt",
        "narratives.pt",
        "metrics.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    ):
        assert (run / name).is_file(), name
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in log] == [1, 2] and "test_top1" in log[0]
    assert metrics["samples"] == 30 and 0 <= metrics["top1"] <= 1 and 0 <= metrics["encoder_top1"] <= 1
    assert len(metrics["confusion_matrix"]) == 15
    faithfulness = metrics["faithfulness"]
    assert faithfulness["count"] == 4 if "count" in faithfulness else True
    for record in metrics["explanations"]:
        assert 0 <= record["predicted"] < 15 and 0 < record["probability"] <= 1
    assert len(metrics["mistakes"]) <= 5 and all(r["predicted"] != r["label"] for r in metrics["mistakes"])


def test_listed_explanations_are_spread_over_the_measured_ones():
    """A test set sorted by class would otherwise list only its first class's explanations."""
    from skelang.runs.stages.lm import _spread

    records = [{"label": i // 20} for i in range(200)]
    listed = _spread(records, 10)
    assert len(listed) == 10 and listed[0] is records[0] and listed[-1] is records[-1]
    assert len({r["label"] for r in listed}) == 10
    assert _spread(records[:3], 10) == records[:3]


def test_the_run_writes_per_sample_scores_for_ensembles(synthetic_lm_run):
    """scores.npz as an encoder run writes it: sample ids, labels, and the class-name
    log-likelihoods the language model classifies by; an ensemble names its stream by stage."""
    from skelang.runs.ensemble import load_scores

    run, _, metrics = synthetic_lm_run
    scores = load_scores(run)
    assert scores.logits.shape == (30, 15) and len(set(scores.ids.tolist())) == 30
    assert scores.stream == "lm:joint" and metrics["scores"] == str(run / "scores.npz")
    assert np.mean(scores.logits.argmax(1) == scores.labels) == pytest.approx(metrics["top1"])
    assert (scores.logits <= 0).all()  # log-likelihoods


def test_training_lowers_the_loss(synthetic_lm_run):
    run, _, _ = synthetic_lm_run
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[1]["loss"] < log[0]["loss"]


def test_resume_reaches_the_same_weights(synthetic_vst_run, tiny_language_model, synthetic_lm_run, tmp_path):
    from skelang.runs import train

    _, config, _ = synthetic_lm_run
    vst_run, _ = synthetic_vst_run
    one_epoch = {**config, "train": {**config["train"], "epochs": 1}}
    train(one_epoch, tmp_path / "run", progress=False)
    train(config, tmp_path / "run", resume=True, progress=False)
    resumed = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    whole = torch.load(synthetic_lm_run[0] / "checkpoint.pt", weights_only=True)["model"]
    assert resumed.keys() == whole.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=0, msg=name)


def test_an_averaged_run_resumes_and_exports_the_average(synthetic_lm_run, tmp_path):
    """train.ema_decay on the language-model stage: the average covers the trainable weights
    (LoRA, action-token rows), resumes bit for bit, and the PEFT adapter holds the average."""
    from safetensors.torch import load_file

    from skelang.runs import train

    _, config, _ = synthetic_lm_run
    averaged = {**config, "train": {**config["train"], "ema_decay": 0.9}}
    train(averaged, tmp_path / "straight", progress=False)
    train({**averaged, "train": {**averaged["train"], "epochs": 1}}, tmp_path / "resumed", progress=False)
    train(averaged, tmp_path / "resumed", resume=True, progress=False)
    straight, resumed = (
        torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("straight", "resumed")
    )
    for key in ("model", "weight_average"):
        expected = straight[key] if key == "model" else straight[key]["trained"]
        found = resumed[key] if key == "model" else resumed[key]["trained"]
        assert found.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(found[name], expected[name], rtol=0, atol=0, msg=name)
    average, trained = straight["model"], straight["weight_average"]["trained"]
    assert trained.keys() == {f"0.{name}" for name in average}
    adapter = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    lora = [name for name in average if ".lora_" in name]
    assert len(adapter) == len(lora) > 0
    for tensor in adapter.values():  # each adapter matrix is one of the average's, none of the trained ones
        assert any(torch.equal(tensor, average[name]) for name in lora)
        assert not any(torch.equal(tensor, trained[f"0.{name}"]) for name in lora)


def test_peft_loads_the_runs_adapter(synthetic_lm_run, tiny_language_model):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    run, _, _ = synthetic_lm_run
    base = AutoModelForCausalLM.from_pretrained(tiny_language_model, local_files_only=True)
    model = peft.PeftModel.from_pretrained(base, run / "adapter")
    assert sum("lora_A" in name for name, _ in model.named_parameters()) == 2 * 4  # 2 layers x q, k, v, o


def test_eval_and_explain_from_the_command_line(synthetic_lm_run):
    run, _, metrics = synthetic_lm_run
    names = load_descriptions("synthetic").names()
    evaluated = skelang_cli(
        "eval", run, "--json", "--explanations", "--limit", "2", "--scores", run.parent / "copy.npz"
    )
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["top1"] == pytest.approx(metrics["top1"])
    assert len(result["explanations"]) == 2
    with np.load(run.parent / "copy.npz") as copy, np.load(run / "scores.npz") as own:
        assert all(np.array_equal(copy[key], own[key]) for key in ("ids", "labels", "logits"))
    inside = skelang_cli("eval", run, "--scores", run / "other.npz")
    assert inside.returncode == 1 and "outside the run folder" in inside.stderr and "Traceback" not in inside.stderr
    explained = skelang_cli("explain", run, "--sample", "3", "--json")
    assert explained.returncode == 0, explained.stderr
    [record] = json.loads(explained.stdout)
    assert record["index"] == 3 and record["predicted_name"] in names and 0 < record["probability"] <= 1
    assert record["narrative"].startswith("<a")
    printed = skelang_cli("explain", run, "--count", "2")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.count("explanation:") == 2


@pytest.fixture(scope="module")
def joint_lm_run(synthetic_vst_run, tiny_language_model, tmp_path_factory):
    from skelang.runs import train

    vst_run, _ = synthetic_vst_run
    folder = tmp_path_factory.mktemp("joint_lm")
    config = lm_config(vst_run, tiny_language_model, joint={"enabled": True, "lr_scale": 1.0})
    config["train"]["batch_size"] = 30
    metrics = train(config, folder / "run", progress=False)
    return folder / "run", config, metrics


def test_joint_training_trains_the_encoder_and_narrates_with_it(joint_lm_run, synthetic_vst_run):
    run, _, metrics = joint_lm_run
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    before = torch.load(synthetic_vst_run[0] / "checkpoint.pt", weights_only=True)["model"]
    encoder_weights = [name for name in before if name.startswith("encoder.") and name.endswith("weight")]
    assert encoder_weights and any(not torch.equal(checkpoint["vst"][name], before[name]) for name in encoder_weights)
    for name in ["quantizer.codebook"] + [name for name in before if "running_" in name]:  # fixed
        torch.testing.assert_close(checkpoint["vst"][name], before[name], rtol=0, atol=0, msg=name)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert {"lm_loss", "classification", "commitment"} <= log[0].keys()
    assert (run / "narratives_joint.pt").is_file() and metrics["samples"] == 30
    evaluated = skelang_cli("eval", run, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["top1"] == pytest.approx(metrics["top1"])


def test_joint_training_resumes_to_the_same_weights(joint_lm_run, tmp_path):
    from skelang.runs import train

    run, config, _ = joint_lm_run
    train({**config, "train": {**config["train"], "epochs": 1}}, tmp_path / "run", progress=False)
    train(config, tmp_path / "run", resume=True, progress=False)
    resumed = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    whole = torch.load(run / "checkpoint.pt", weights_only=True)
    for part in ("model", "vst"):
        for name in whole[part]:
            torch.testing.assert_close(resumed[part][name], whole[part][name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(
    "inputs",
    [{}, {"projector": True}, {"encoder_token": True, "action_tokens": False}],
    ids=["tokens", "projector", "encoder_token"],
)
def test_the_language_model_loss_reaches_the_encoder(synthetic_vst_run, tiny_language_model, inputs):
    """Straight-through on the action tokens (and the projector where on; the encoder token
    alone, without action tokens): the loss's value is that of the hard codes, and the
    encoder gets a gradient from the language model alone."""
    from skelang.data.dataset import SkeletonDataset
    from skelang.runs.config import resolve_config
    from skelang.runs.stages.encoder import load_sequences, make_preprocess
    from skelang.runs.stages.lm import build_language_model, narrate_for_training, unfreeze_for_joint_training
    from skelang.runs.stages.vst import load_vst_run

    config = resolve_config(lm_config(synthetic_vst_run[0], tiny_language_model, **inputs))
    vst_model = load_vst_run(config["lm"]["vst_run"]).model
    torch.manual_seed(0)
    model = build_language_model(config, vst_model)
    unfreeze_for_joint_training(vst_model)
    dataset = SkeletonDataset(load_sequences(config["data"])[0][:4], make_preprocess(config["data"]), train=True)
    samples, _, _ = narrate_for_training(vst_model, dataset, [0, 1, 2, 3], [""] * 4, torch.nn.CrossEntropyLoss(), 0.1)
    targets = [(" wave.", "")] * 4
    model.eval()  # no LoRA dropout: the two losses below see the same network
    loss = model.loss(samples, targets)
    hard = [
        dataclasses.replace(s, code_probabilities=None, features=s.features.detach(), pooled=s.pooled.detach())
        for s in samples
    ]
    torch.testing.assert_close(loss, model.loss(hard, targets), rtol=0, atol=0)
    loss.backward()
    grads = [p.grad for p in vst_model.encoder.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_the_encoder_token_starts_as_the_encoders_prediction_and_trains(
    synthetic_vst_run, tiny_language_model, tmp_path
):
    """lm.encoder_token: one <encoder> soft token in the prompt, at first the encoder's class
    probabilities over the class names' mean input embeddings; it trains, a run with it
    evaluates from its folder to the same top-1, and a sample without the pooled feature is
    refused with a clear error."""
    from skelang.runs import train
    from skelang.runs.config import resolve_config
    from skelang.runs.stages.encoder import load_sequences
    from skelang.runs.stages.lm import build_language_model, narrate
    from skelang.runs.stages.vst import load_vst_run

    config = lm_config(synthetic_vst_run[0], tiny_language_model, encoder_token=True, encoder_token_dropout=0.5)
    config = resolve_config(config)
    vst_model = load_vst_run(config["lm"]["vst_run"]).model
    samples = narrate(vst_model, load_sequences(config["data"])[0][:3], config["data"])
    model = build_language_model(config, vst_model).eval()  # eval mode: the token is never dropped
    assert model.encoder_token.dropout == 0.5
    prompt = model._ids(model.prompt(samples[0]))
    assert prompt.count(model.encoder_placeholder_id) == 1
    embeds, _, ids = model.embed([model._ids(model.prompt(s)) for s in samples], samples)
    pooled = torch.stack([s.pooled for s in samples])
    embedding = model.language_model.get_input_embeddings()
    names = torch.stack([embedding(torch.tensor(model._ids(" " + n))).mean(0) for n in model.class_names])
    expected = vst_model.encoder.classifier(pooled).softmax(-1) @ names  # (3, H)
    torch.testing.assert_close(embeds[ids == model.encoder_placeholder_id], expected.detach())
    loss = model.loss(samples, [(" wave.", "")] * 3)
    loss.backward()
    assert model.encoder_token.class_embeddings.grad.abs().sum() > 0
    assert "encoder_token.classifier.weight" in model.trainable_state()
    with pytest.raises(ValueError, match="lm.encoder_token: a sample has no pooled encoder feature"):
        model.loss([dataclasses.replace(samples[0], pooled=None)], [(" wave.", "")])

    config = lm_config(
        synthetic_vst_run[0], tiny_language_model, encoder_token=True, encoder_token_dropout=0.5, explain_samples=0
    )
    config["train"]["epochs"] = 1
    metrics = train(config, tmp_path / "run", progress=False)
    evaluated = skelang_cli("eval", tmp_path / "run", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    evaluated = json.loads(evaluated.stdout)
    for key in ("top1", "top5"):
        assert evaluated[key] == pytest.approx(metrics[key]), key
    assert evaluated["confusion_matrix"] == metrics["confusion_matrix"]


def test_the_lm_section_needs_its_run_and_descriptions(tiny_language_model):
    from skelang.runs.config import resolve_config

    config = lm_config("runs/x", tiny_language_model)
    config["lm"]["vst_run"] = None
    with pytest.raises(ValueError, match="lm.vst_run"):
        resolve_config(config)
    config = lm_config("runs/x", tiny_language_model)
    config["lm"]["lora"]["target_modules"] = []
    with pytest.raises(ValueError, match="lm.lora.target_modules"):
        resolve_config(config)
    config = lm_config("runs/x", tiny_language_model)
    config["lm"]["lora"]["alfa"] = 4
    with pytest.raises(ValueError, match=r"unknown key lm.lora.alfa \(did you mean lm.lora.alpha\?\)"):
        resolve_config(config)
    config = lm_config("runs/x", tiny_language_model, action_tokens=False, joint={"enabled": True})
    with pytest.raises(ValueError, match="lm.joint.enabled: .* all false"):
        resolve_config(config)
    config = lm_config("runs/x", tiny_language_model, encoder_token_dropout=0.5)
    with pytest.raises(ValueError, match="lm.encoder_token_dropout: 0.5 drops the encoder token, and lm.encoder_token"):
        resolve_config(config)
    config = lm_config("runs/x", tiny_language_model, encoder_token=True, encoder_token_dropout=1.0)
    with pytest.raises(ValueError, match="lm.encoder_token_dropout"):
        resolve_config(config)
    config = lm_config("runs/x", tiny_language_model, model_dtype="bf16")
    config["train"]["parallel"] = "fsdp"
    with pytest.raises(ValueError, match="lm.model_dtype: bf16 with train.parallel: fsdp"):
        resolve_config(config)
    for dtype, precision in [("fp16", "fp32"), ("fp16", "bf16"), ("bf16", "fp16")]:
        config = lm_config("runs/x", tiny_language_model, model_dtype=dtype)
        config["train"]["precision"] = precision
        with pytest.raises(ValueError, match=f"lm.model_dtype: {dtype} with train.precision: {precision}: a float16"):
            resolve_config(config)


@pytest.mark.parametrize(
    "inputs", [{}, {"projector": True, "encoder_token": True}], ids=["tokens", "projector_and_encoder_token"]
)
def test_a_bfloat16_language_model_trains_float32_weights(synthetic_vst_run, tiny_language_model, inputs):
    """lm.model_dtype: bf16 loads the frozen model in bfloat16 (half its memory); LoRA, the
    action-token rows, the projector and the encoder token stay float32, get float32 gradients, and the loss
    follows the float32 model's within bfloat16's precision."""
    from skelang.runs.config import resolve_config
    from skelang.runs.stages.encoder import load_sequences
    from skelang.runs.stages.lm import build_language_model, narrate
    from skelang.runs.stages.vst import load_vst_run

    losses = {}
    for dtype in ("fp32", "bf16"):
        config = resolve_config(lm_config(synthetic_vst_run[0], tiny_language_model, model_dtype=dtype, **inputs))
        vst_model = load_vst_run(config["lm"]["vst_run"]).model
        samples = narrate(vst_model, load_sequences(config["data"])[0][:4], config["data"])
        torch.manual_seed(0)
        model = build_language_model(config, vst_model).eval()  # no LoRA dropout
        trained = [p for p in model.parameters() if p.requires_grad]
        frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
        assert frozen == {torch.float32 if dtype == "fp32" else torch.bfloat16}
        assert trained and all(p.dtype == torch.float32 for p in trained)
        with torch.no_grad():  # the adapters' B is zero at init: make them count
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
        loss = model.loss(samples, [(" wave.", "")] * len(samples))
        loss.backward()
        assert all(p.grad.dtype == torch.float32 for p in trained if p.grad is not None)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
        losses[dtype] = loss.item()
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_targets_cite_the_codes_most_typical_of_the_class():
    descriptions = load_descriptions("synthetic")
    # code 7 appears only in class 2's sequences, code 3 in every class
    evidence = CodeEvidence.from_narratives([[3, 7, 7], [3, 7], [3, 1], [3, 5]], [2, 2, 0, 1], 10, 15)
    glossary = {7: GlossaryEntry(7, 5, "right hand rises quickly; arms raised"), 3: GlossaryEntry(3, 9, "body sways")}
    answer, rest = target_text(2, [3, 7, 7, 3], evidence, glossary, descriptions)
    name = descriptions[2].name
    assert answer == f" {name}."
    assert rest.startswith(" Explanation: <a7> (right hand rises quickly) and <a3> (body sways)")
    assert descriptions[2].description in rest
    assert target_text(2, [3], evidence, glossary, descriptions, with_explanation=False) == (f" {name}.", "")


def test_prompts_use_the_chat_template_and_list_the_candidates(tiny_language_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_language_model, local_files_only=True)
    prompt = build_prompt(tokenizer, "<a1>x2 <a4>", ["wave", "kick"])
    assert prompt.startswith("<system>") and prompt.endswith("<assistant>Action:")
    assert "Motion: <a1>x2 <a4>" in prompt and "Candidates: wave; kick." in prompt
    tokenizer.chat_template = None
    plain = build_prompt(tokenizer, "<a1>", None)
    assert "### Instruction:" in plain and "Candidates" not in plain and plain.endswith("Action:")


def test_the_answer_weight_weighs_the_class_name_tokens(tiny_language_model):
    from skelang.lm.adapters import LoRAConfig
    from skelang.lm.language_model import load_language_model
    from skelang.lm.model import ActionLanguageModel, LMOptions, NarratedSample

    torch.manual_seed(0)
    language_model, tokenizer = load_language_model(str(tiny_language_model))
    model = ActionLanguageModel(
        language_model,
        tokenizer,
        load_descriptions("synthetic"),
        16,
        8,
        LMOptions(LoRAConfig(r=2, alpha=4, target_modules=["q_proj"])),
    ).eval()
    sample, target = NarratedSample(label=3, codes=[1, 2, 2]), (" kick.", " Explanation: <a2> (legs) are typical.")

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt, answer, rest = ids(model.prompt(sample)), ids(target[0]), ids(target[1]) + [tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model.language_model(input_ids=torch.tensor([prompt + answer + rest])).logits[0]
        token_loss = torch.nn.functional.cross_entropy(
            logits[len(prompt) - 1 : -1], torch.tensor(answer + rest), reduction="none"
        )
        plain = model.loss([sample], [target])
        weighted = model.loss([sample], [target], answer_weight=1e6)
    torch.testing.assert_close(plain, token_loss.mean(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(weighted, token_loss[: len(answer)].mean(), rtol=1e-4, atol=1e-4)


def test_a_run_folder_of_an_earlier_version_opens(synthetic_lm_run, tmp_path):
    """config.yaml with lm.enabled (every section present) and a checkpoint keyed from before
    LoRAModel (language_model.<module> instead of language_model.model.<module>)."""
    import shutil

    import yaml

    from skelang.runs.stages.lm import evaluate_language_run

    run, config, metrics = synthetic_lm_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    raw = yaml.safe_load((old / "config.yaml").read_text())
    raw["lm"]["enabled"] = True
    raw.pop("stage")
    raw.update({"model": {}, "vst": {"enabled": False}, "ssf": {"enabled": False}})
    (old / "config.yaml").write_text(yaml.safe_dump(raw))
    checkpoint = torch.load(old / "checkpoint.pt", weights_only=True)
    checkpoint["model"] = {
        name.replace("language_model.model.", "language_model.", 1): v for name, v in checkpoint["model"].items()
    }
    torch.save(checkpoint, old / "checkpoint.pt")
    (old / "checkpoint.sha256").unlink()  # earlier versions wrote no checksum
    assert evaluate_language_run(old)["top1"] == pytest.approx(metrics["top1"])


def test_a_float16_run_loads_in_float32_and_keeps_its_config(synthetic_lm_run, tmp_path):
    import shutil

    import yaml

    from skelang.runs.stages.lm import load_language_run

    run, _, _ = synthetic_lm_run
    fp16 = tmp_path / "fp16"
    shutil.copytree(run, fp16)
    raw = yaml.safe_load((fp16 / "config.yaml").read_text())
    raw["lm"]["model_dtype"] = raw["train"]["precision"] = "fp16"  # as a run trained on a GPU writes it
    (fp16 / "config.yaml").write_text(yaml.safe_dump(raw))
    model, config, _ = load_language_run(fp16)
    assert config["lm"]["model_dtype"] == "fp16"
    assert {p.dtype for p in model.parameters()} == {torch.float32}
