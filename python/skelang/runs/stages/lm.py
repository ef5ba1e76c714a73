"""Stage `lm`: LVLM-VAR's language model reading a VST run's action narratives.

By default the encoder and the codebook of `lm.vst_run` are frozen: each sequence is narrated
once (its codes and segment features, with the data section's evaluation preprocessing) and
the narratives are cached in the run folder. With `lm.joint.enabled` the encoder, its segment
projection and VST's decoder and token classifier train with the language model: every
batch is narrated afresh (training preprocessing), the language model's loss reaches the
encoder through the projector's soft tokens, the encoder token's pooled feature and,
straight-through, through the soft code assignments of the narrative's action tokens, and
VST's own losses (weight `lm.joint.vst_weight`) keep the encoder classifying and its segments
near their codes. The codebook and the encoder's batch-norm statistics stay those of the VST
run, so that each action token keeps its meaning and glossary (the codes move all the same:
see configs/nw_ucla_lm_joint.yaml). The language model (`lm.model`) gets LoRA adapters,
action tokens and optionally the projector and the encoder token; AdamW (optim.optimizer:
adamw) or SGD trains them on "Action: <name>. Explanation: <text>" targets (see
skelang.lm.prompts).

The run folder holds, besides the common files, narratives.pt (with joint training also
narratives_joint.pt: the test part, by the trained encoder), adapter/ (the LoRA weights in
PEFT's format, written at the end); the checkpoint holds the trainable weights only (and with
joint training the VST model's). metrics.json: top1/top5/per-class accuracy and confusion
matrix of the classification by class-name likelihood, the encoder's own classifier on the
same test sequences (encoder_top1), and, on `lm.explain_samples` test sequences, the
explanations' faithfulness (see skelang.lm.faithfulness).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from skelang.data.dataset import EpochBatchSampler, SkeletonDataset, make_loader
from skelang.data.readers import open_sequences_for
from skelang.files import torch_save_atomic
from skelang.fusion.descriptions import load_descriptions
from skelang.lm.adapters import LoRAConfig
from skelang.lm.faithfulness import cited_codes, faithfulness_summary, named_action, probability_drop
from skelang.lm.language_model import load_language_model
from skelang.lm.model import ActionLanguageModel, LMOptions, NarratedSample
from skelang.lm.prompts import CodeEvidence, target_text
from skelang.runs.directory import RunDirectory, check_outside_run, open_run, save_scores
from skelang.runs.metrics import classification_metrics
from skelang.runs.stages.base import PRECISION_DTYPES, Stage, StepOutput
from skelang.runs.stages.encoder import check_encoder_inputs, check_layout, load_sequences, make_preprocess
from skelang.runs.stages.vst import glossary, load_vst_run
from skelang.vst.model import TokenizedEncoder

NARRATIVES = "narratives.pt"
JOINT_NARRATIVES = "narratives_joint.pt"  # the test part, by the jointly trained encoder, at the end


@torch.no_grad()
def narrate(model: TokenizedEncoder, sequences: list, data: dict, batch_size: int = 64) -> list[NarratedSample]:
    """Every sequence's codes (one per segment), segment features and the encoder's own
    prediction, with the evaluation preprocessing of the data section; a sequence of another
    skeleton layout than the encoder's is a ValueError naming it."""
    check_layout(sequences, model.encoder.layout, "the encoder of the VST run")
    dataset = SkeletonDataset(sequences, make_preprocess(data), num_bodies=model.encoder.num_bodies)
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=0)
    model.eval()
    device = next(model.parameters()).device
    samples: list[NarratedSample] = []
    for inputs, labels in loader:
        features = model.encoder.features(inputs.to(device))  # (N, M, C', T', V)
        z = model.segment_features(features)  # (N, S, D)
        pooled = model.encoder.pool(features)  # (N, C')
        predicted = model.encoder.classifier(pooled).argmax(1)
        for runs, sample_z, sample_pooled, label, guess in zip(
            model.tokenize_features(features), z, pooled, labels.tolist(), predicted.tolist()
        ):
            sequence = sequences[len(samples)]
            codes = [run.code for run in runs for _ in range(run.count)]
            samples.append(
                NarratedSample(
                    label=label,
                    codes=codes,
                    features=sample_z.to("cpu", copy=True),  # kept (and cached) on the CPU
                    name=sequence.sample_id(len(samples)),  # the id of scores.npz and ensembles
                    encoder_predicted=guess,
                    pooled=sample_pooled.to("cpu", copy=True),
                )
            )
    return samples


def _samples_to_state(samples: list[NarratedSample]) -> list[dict]:
    return [
        {
            "label": s.label,
            "codes": s.codes,
            "features": s.features,
            "name": s.name,
            "encoder_predicted": s.encoder_predicted,
            "pooled": s.pooled,
        }
        for s in samples
    ]


def narratives(
    config: dict,
    run: RunDirectory,
    vst_model: TokenizedEncoder,
    name: str = NARRATIVES,
    sequences: tuple[list, list] | None = None,
    parts: tuple[str, ...] = ("train", "test"),
    write: bool = True,
) -> list[list[NarratedSample]]:
    """NarratedSamples of each part ("train", "test"), read from the run's file `name` or
    computed (from `sequences`, default the data section's) and, with `write`, cached there."""
    path = run.file(name)
    if path.is_file():
        cached = torch.load(path, weights_only=True)
    else:
        train_sequences, test_sequences = sequences or load_sequences(config["data"])
        chosen = {"train": train_sequences, "test": test_sequences}
        cached = {part: _samples_to_state(narrate(vst_model, chosen[part], config["data"])) for part in parts}
        if write:
            torch_save_atomic(cached, path)
    return [[NarratedSample(**s) for s in cached[part]] for part in parts]


def build_language_model(config: dict, vst_model: TokenizedEncoder) -> ActionLanguageModel:
    section = config["lm"]
    options = LMOptions(
        lora=LoRAConfig.model_validate(section["lora"]),
        action_tokens=section["action_tokens"],
        projector=section["projector"],
        encoder_token=section["encoder_token"],
        encoder_token_dropout=section["encoder_token_dropout"],
        candidates=section["candidates"],
    )
    language_model, tokenizer = load_language_model(section["model"], PRECISION_DTYPES[section["model_dtype"]])
    return ActionLanguageModel(
        language_model,
        tokenizer,
        load_descriptions(section["descriptions"]),
        vst_model.config.num_codes,
        vst_model.config.code_dim,
        options,
        encoder_classifier=vst_model.encoder.classifier,
    )


def unfreeze_for_joint_training(vst_model: TokenizedEncoder) -> list[torch.nn.Parameter]:
    """Makes every weight of the VST model trainable (the codebook is a buffer, fixed) and
    returns them."""
    vst_model.frozen_encoder = False
    vst_model.requires_grad_(True)
    return list(vst_model.parameters())


def narrate_for_training(
    vst_model: TokenizedEncoder,
    dataset: SkeletonDataset,
    chosen: list[int],
    names: list[str],
    criterion,
    temperature: float,
) -> tuple[list[NarratedSample], torch.Tensor, dict]:
    """Joint training: the samples `chosen` of `dataset` (training preprocessing) narrated by
    the VST model in training mode, carrying their segment features and soft code assignments
    with gradients; and VST's own losses on them (total, parts)."""
    items = [dataset[i] for i in chosen]
    device = next(vst_model.parameters()).device
    inputs = torch.stack([item[0] for item in items]).to(device)
    labels = torch.tensor([item[1] for item in items], device=device)
    vst_model.train()
    vst_model.quantizer.eval()  # no codebook update: the action tokens keep their meaning
    for module in vst_model.encoder.modules():  # batch-norm statistics stay those of the VST run's
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):  # encoder (batches of 8 shift them)
            module.eval()
    features = vst_model.encoder.features(inputs)  # (N, M, C', T', V)
    loss, _, parts = vst_model.losses(inputs, labels, criterion, features=features)
    z = vst_model.segment_features(features)  # (N, S, D)
    probabilities = vst_model.code_probabilities(z, temperature)  # (N, S, K)
    pooled = vst_model.encoder.pool(features)  # (N, C')
    samples = [
        NarratedSample(
            label=label, codes=codes, features=sample_z, name=names[i], code_probabilities=p, pooled=sample_pooled
        )
        for i, label, codes, sample_z, p, sample_pooled in zip(
            chosen, labels.tolist(), vst_model.segment_codes(z), z, probabilities, pooled
        )
    ]
    return samples, loss, parts


class LanguageModelStage(Stage):
    """Stage `lm` (see the module's documentation)."""

    name = "lm"
    section = "lm"

    def build(self) -> None:
        config, section = self.config, self.config["lm"]
        if section["model_dtype"] == "fp16" and self.device.type != "cuda":
            raise ValueError("lm.model_dtype: fp16 needs a CUDA device; on the CPU use bf16 (or fp32)")
        self.joint = section["joint"]["enabled"]
        vst_stage = load_vst_run(section["vst_run"])
        check_encoder_inputs(config["data"], vst_stage.run, "lm.vst_run")
        self.vst_model = vst_stage.model.to(self.device)
        entries = glossary(section["vst_run"])
        self.glossary = {entry.code: entry for entry in entries}
        self.sequences = load_sequences(config["data"]) if self.joint else None
        self.train_samples, self.test_samples = narratives(
            config, self.run, self.vst_model, sequences=self.sequences, write=self.ranks.is_main
        )
        self.model = build_language_model(config, self.vst_model)
        if not (self.ranks.distributed and config["train"]["parallel"] == "fsdp"):
            self.model.to(self.device)  # sharded, it moves to the device shard by shard
        descriptions = self.model.descriptions
        num_classes = len(descriptions)
        for where, samples in (("training", self.train_samples), ("test", self.test_samples)):
            labels = {s.label for s in samples}
            if max(labels) >= num_classes:
                raise ValueError(
                    f"lm.descriptions: {section['descriptions']} has {num_classes} classes, the {where} "
                    f"data has label {max(labels)}"
                )
        self.evidence = CodeEvidence.from_narratives(
            [s.codes for s in self.train_samples],
            [s.label for s in self.train_samples],
            self.vst_model.config.num_codes,
            num_classes,
        )
        self.groups = [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr_scale": 1.0}]
        if self.joint:
            self.groups.append(
                {"params": unfreeze_for_joint_training(self.vst_model), "lr_scale": section["joint"]["lr_scale"]}
            )
            self.dataset = SkeletonDataset(
                self.sequences[0],
                make_preprocess(config["data"]),
                train=True,
                seed=config["seed"],
                num_bodies=self.vst_model.encoder.num_bodies,
            )
            self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config["optim"]["label_smoothing"])
            self.names = [s.name for s in self.train_samples]
        else:
            self.targets = self.targets_of(self.train_samples)

    def targets_of(self, samples: list[NarratedSample]) -> list[str]:
        section = self.config["lm"]
        return [
            target_text(
                s.label, s.codes, self.evidence, self.glossary, self.model.descriptions, section["explanations"]
            )
            for s in samples
        ]

    def trained_modules(self) -> list[torch.nn.Module]:
        return [self.model, self.vst_model] if self.joint else [self.model]

    def parameter_groups(self) -> list[dict]:
        return self.groups

    def sampler(self, epoch: int) -> EpochBatchSampler:
        return EpochBatchSampler(
            len(self.train_samples),
            self.config["train"]["batch_size"],
            shuffle=True,
            seed=self.config["seed"],
            epoch=epoch,
            rank=self.ranks.rank,
            world=self.ranks.world,
        )

    def num_batches(self) -> int:
        return len(self.sampler(0))

    def set_epoch(self, epoch: int) -> None:
        self.model.train()
        if self.joint:
            self.dataset.set_epoch(epoch)  # its crops and augmentations draw from (seed, epoch, index)

    def batches(self, epoch: int):
        return ([index for _, index in part] for part in self.sampler(epoch))

    def training_step(self, chosen: list[int]) -> StepOutput:
        section = self.config["lm"]
        if not self.joint:
            loss = self.model.loss(
                [self.train_samples[i] for i in chosen], [self.targets[i] for i in chosen], section["answer_weight"]
            )
            return StepOutput(loss, len(chosen))
        samples, vst_loss, parts = narrate_for_training(
            self.vst_model, self.dataset, chosen, self.names, self.criterion, section["joint"]["temperature"]
        )
        lm_loss = self.model.loss(samples, self.targets_of(samples), section["answer_weight"])
        return StepOutput(
            lm_loss + section["joint"]["vst_weight"] * vst_loss, len(chosen), parts={"lm_loss": lm_loss.item(), **parts}
        )

    def evaluate(self, final: bool) -> dict:
        started = time.perf_counter()
        if final:
            if self.joint:  # the test narratives of the trained encoder
                [self.test_samples] = narratives(
                    self.config,
                    self.run,
                    self.vst_model,
                    JOINT_NARRATIVES,
                    self.sequences,
                    parts=("test",),
                    write=self.ranks.is_main,
                )
            metrics, scores = evaluate_language_model(
                self.model, self.test_samples, self.config["train"], self.config["lm"], self.progress
            )
            if self.ranks.is_main:
                metrics["scores"] = str(self.run.write_scores(*samples_scores(self.test_samples, scores)))
            return {**metrics, "evaluation_s": time.perf_counter() - started}
        current = narrate(self.vst_model, self.sequences[1], self.config["data"]) if self.joint else self.test_samples
        return classification_metrics(*_scores(self.model, current, self.config["train"]))

    def state_dict(self) -> dict:
        state = {"model": self.model.trainable_state()}
        if self.joint:
            state["vst"] = self.vst_model.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_trainable_state(state["model"])
        if self.joint:
            self.vst_model.load_state_dict(state["vst"])

    def finish(self, metrics: dict) -> dict:
        if self.ranks.is_main:
            self.model.language_model.save_adapter(
                self.run.file("adapter"), base_model_name_or_path=self.config["lm"]["model"]
            )
        return {"trainable_parameters": sum(p.numel() for group in self.groups for p in group["params"])}

    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def class_names(self, count: int) -> list[str] | None:
        return list(self.model.class_names) if len(self.model.class_names) == count else None


@torch.no_grad()
def _scores(
    model: ActionLanguageModel, samples: list[NarratedSample], options: dict, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, classes) class-name log-likelihoods and (N,) labels."""
    model.eval()
    size = options["test_batch_size"]
    scores = [
        model.class_log_likelihoods(samples[i : i + size])
        for i in tqdm(range(0, len(samples), size), disable=not progress, desc="scoring", unit="batch")
    ]
    return torch.cat(scores).float().cpu(), torch.tensor([s.label for s in samples])


def evaluate_language_model(
    model: ActionLanguageModel,
    samples: list[NarratedSample],
    options: dict,
    section: dict,
    progress: bool = False,
    explain_samples: int | None = None,
) -> tuple[dict, torch.Tensor]:
    """Classification by class-name likelihood on `samples`, the encoder's own top-1 on them,
    and (on `explain_samples` of them, evenly spread) the explanations' faithfulness; and the
    (N, classes) class-name log-likelihoods. The metrics list ten of the explanations
    ("explanations") and five of the wrong answers' ("mistakes"), each evenly spread."""
    scores, labels = _scores(model, samples, options, progress)
    metrics = classification_metrics(scores, labels)
    metrics["encoder_top1"] = float(np.mean([s.encoder_predicted == s.label for s in samples]))
    count = min(section["explain_samples"] if explain_samples is None else explain_samples, len(samples))
    if count:  # evenly spread over the data (test sets are often sorted by class)
        chosen = _spread(list(range(len(samples))), count)
        records = explanation_records(
            model, [samples[i] for i in chosen], scores[chosen].softmax(1), explanation_decoding(section)
        )
        metrics["faithfulness"] = faithfulness_summary(records)
        metrics["explanations"] = _spread(records, 10)
        metrics["mistakes"] = _spread([r for r in records if r["predicted"] != r["label"]], 5)
    return metrics, scores


def _spread(items: list, count: int) -> list:
    """At most `count` of `items`, evenly spaced over them, the first and last included (so over
    the classes of a test set sorted by class, where the first ones would all be of one class)."""
    if len(items) <= count:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def samples_scores(samples: list[NarratedSample], scores: torch.Tensor) -> tuple[list[str], np.ndarray, np.ndarray]:
    """scores.npz's ids, labels and logits (class-name log-likelihoods) of narrated samples."""
    return [s.name for s in samples], np.array([s.label for s in samples]), scores.numpy()


def explanation_decoding(section: dict, **overrides) -> dict:
    """ActionLanguageModel.explain's decoding options from an lm section; an override that is
    not None replaces the section's value."""
    options = {key: section[key] for key in ("max_new_tokens", "cite_only_narrative", "repetition_penalty")}
    return {**options, **{key: value for key, value in overrides.items() if value is not None}}


def explanation_records(
    model: ActionLanguageModel,
    samples: list[NarratedSample],
    probabilities: torch.Tensor,
    decoding: dict,
    random_draws: int = 5,
) -> list[dict]:
    """For each sample: its narrative, the predicted class and probability, the explanation
    generated with `decoding` (see explanation_decoding), the class it names, and the
    probability drops when its cited tokens (or as many random ones) are removed from the
    narrative."""
    predicted = probabilities.argmax(1).tolist()
    explanations = model.explain(samples, predicted, **decoding)
    generator = torch.Generator().manual_seed(0)
    records = []
    for sample, label, text, row in zip(samples, predicted, explanations, probabilities):

        def class_probability(codes, sample=sample, label=label):
            return float(model.class_log_likelihoods([sample], [codes]).softmax(1)[0, label])

        cited = cited_codes(text)
        drop = probability_drop(
            class_probability, sample.codes, cited, label, num_random=random_draws, generator=generator
        )
        records.append(
            {
                "name": sample.name,
                "label": sample.label,
                "predicted": label,
                "probability": float(row[label]),
                "narrative": sample.narrative(),
                "explanation": text,
                "named": named_action(text, model.class_names),
                **drop,
            }
        )
    return records


def load_language_run(run_dir: str | Path) -> tuple[ActionLanguageModel, dict, TokenizedEncoder]:
    """(model in eval mode with the run's final weights, resolved config, VST model) of an
    lm training run. A run trained with lm.model_dtype fp16 (CUDA only) loads its base model in
    float32; the config returned is the run's, unchanged."""
    run = open_run(run_dir)
    config = run.config
    if config["stage"] != "lm":
        raise ValueError(f"{run.path}: not a language-model run (its stage is {config['stage']})")
    vst_model = load_vst_run(config["lm"]["vst_run"]).model  # the glossary is for training targets only
    built = config
    if config["lm"]["model_dtype"] == "fp16":  # evaluated in float32: the CPU's ops take no float16
        built = {**config, "lm": {**config["lm"], "model_dtype": "fp32"}}
    model = build_language_model(built, vst_model)
    checkpoint = run.load_checkpoint()
    model.load_trainable_state(checkpoint["model"])
    if config["lm"]["joint"]["enabled"]:
        vst_model.load_state_dict(checkpoint["vst"])
    return model.eval(), config, vst_model.eval()


def run_samples(
    run_dir: str | Path, config: dict, vst_model: TokenizedEncoder, data: str | None = None
) -> list[NarratedSample]:
    """The run's cached test narratives (by the trained encoder in joint training), or every
    sequence at `data` narrated now."""
    if data is None:
        name = JOINT_NARRATIVES if config["lm"]["joint"]["enabled"] else NARRATIVES
        return narratives(config, RunDirectory(run_dir), vst_model, name, parts=("test",))[0]
    return narrate(vst_model, open_sequences_for(data, vst_model.encoder.layout), config["data"])


def evaluate_language_run(
    run_dir: str | Path,
    data: str | None = None,
    explanations: bool = False,
    limit: int | None = None,
    progress: bool = False,
    cite_only_narrative: bool | None = None,
    scores_path: str | Path | None = None,
) -> dict:
    """`skelang eval` of an lm run: classification (and with `explanations`, faithfulness on
    `limit` samples spread over the data, default lm.explain_samples; `cite_only_narrative`
    overrides the run's lm.cite_only_narrative). The per-sample scores (class-name
    log-likelihoods) of the run's test data go to its scores.npz, those of any data to
    `scores_path`."""
    run = open_run(run_dir)
    if scores_path is not None:
        check_outside_run(run, scores_path)
    with run.lock():  # as an encoder run's evaluation: not beside a training of the run
        model, config, vst_model = load_language_run(run_dir)
        config["lm"].update(explanation_decoding(config["lm"], cite_only_narrative=cite_only_narrative))
        samples = run_samples(run_dir, config, vst_model, data)
        count = (limit if limit is not None else config["lm"]["explain_samples"]) if explanations else 0
        metrics, scores = evaluate_language_model(
            model, samples, config["train"], config["lm"], progress, explain_samples=count
        )
        if data is None:
            metrics["scores"] = str(run.write_scores(*samples_scores(samples, scores)))
    if scores_path is not None:
        metrics["scores"] = str(save_scores(scores_path, *samples_scores(samples, scores), run=run))
    return metrics


def explain_run(
    run_dir: str | Path,
    data: str | None = None,
    sample: int | None = None,
    count: int = 5,
    strategy: str = "greedy",
    max_new_tokens: int | None = None,
    cite_only_narrative: bool | None = None,
    **generation,
) -> list[dict]:
    """Predicted label, probability, narrative and explanation of test sample `sample` (or of
    the first `count` samples); `cite_only_narrative` overrides the run's lm.cite_only_narrative."""
    model, config, vst_model = load_language_run(run_dir)
    samples = run_samples(run_dir, config, vst_model, data)
    if sample is not None:
        if not 0 <= sample < len(samples):
            raise ValueError(f"--sample {sample}: expected an index in [0, {len(samples)}) of the data's sequences")
        chosen = [sample]
    else:
        chosen = list(range(min(count, len(samples))))
    picked = [samples[i] for i in chosen]
    probabilities = model.class_log_likelihoods(picked).softmax(1)
    predicted = probabilities.argmax(1).tolist()
    decoding = explanation_decoding(
        config["lm"], max_new_tokens=max_new_tokens, cite_only_narrative=cite_only_narrative
    )
    texts = model.explain(picked, predicted, strategy=strategy, **decoding, **generation)
    return [
        {
            "index": i,
            "name": s.name,
            "label": s.label if s.label >= 0 else None,
            "label_name": model.class_names[s.label] if 0 <= s.label < len(model.class_names) else None,
            "predicted": p,
            "predicted_name": model.class_names[p],
            "probability": float(row[p]),
            "narrative": s.narrative(),
            "explanation": text,
        }
        for i, s, p, row, text in zip(chosen, picked, predicted, probabilities, texts)
    ]
