"""The training loop: datasets, model, SGD with a warm-up and a step or cosine schedule,
epochs with a progress bar, evaluation, logs, metrics and resumable checkpoints.

A run directory holds:
    config.yaml     the resolved configuration
    log.jsonl       one line per epoch: epoch, loss, train_top1, test_top1 (when evaluated), lr, seconds
    checkpoint.pt   model, optimizer, epoch, RNG states of torch/numpy/python (after every epoch)
    metrics.json    the final evaluation: top1, top5, per-class accuracy, confusion matrix,
                    wall time, parameter count (with VST: the token-only classifier's top1
                    and the codebook's usage on the test and the training data)
    glossary.json   with VST: every code used on the training data, described in words

The learning rate is a function of the epoch alone (learning_rate), so the epoch is the
whole state of the schedule: warm-up is per epoch, as in CTR-GCN (epoch e < warmup_epochs
runs at lr * (e + 1) / warmup_epochs). With the datasets and the shuffling fixed by (seed,
epoch), a run resumed from its checkpoint ends with the same weights, bit for bit, as one
that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from skelang.files import torch_save_atomic, write_text_atomic
from skelang.data.dataset import SkeletonDataset, make_loader
from skelang.data.layouts import get_layout
from skelang.data.preprocess import Augmentation, Preprocess
from skelang.data.readers import open_sequences
from skelang.data.splits import split_of
from skelang.encoder import build_model
from skelang.train.config import resolve_config
from skelang.train.metrics import evaluate
from skelang.fusion.ssf import SkeletonLanguageModel, ssf_config, text_metrics, zero_shot_metrics
from skelang.vst.glossary import build_glossary, save_glossary
from skelang.vst.model import TokenizedEncoder, vst_config

CHECKPOINT = "checkpoint.pt"
# Keys a resumed run may change: how long it trains and where, not what it learns.
RESUMABLE_CHANGES = ("train.epochs", "train.eval_every", "train.device", "train.test_batch_size",
                     "data.num_workers")


def learning_rate(optim: dict, epochs: int, epoch: int) -> float:
    """The learning rate of (0-based) `epoch` in a run of `epochs` epochs."""
    warmup = optim["warmup_epochs"]
    if epoch < warmup:
        return optim["lr"] * (epoch + 1) / warmup
    if optim["schedule"] == "cosine":
        progress = (epoch - warmup) / max(1, epochs - warmup)
        return optim["lr"] * 0.5 * (1 + math.cos(math.pi * progress))
    return optim["lr"] * optim["gamma"] ** sum(epoch >= milestone for milestone in optim["milestones"])


def make_optimizer(parameters: list, optim: dict) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW, as optim.optimizer says."""
    if optim["optimizer"] == "adamw":
        return torch.optim.AdamW(parameters, lr=optim["lr"], weight_decay=optim["weight_decay"])
    return torch.optim.SGD(parameters, lr=optim["lr"], momentum=optim["momentum"], nesterov=optim["nesterov"],
                           weight_decay=optim["weight_decay"])


def make_preprocess(data: dict) -> Preprocess:
    return Preprocess(num_frames=data["num_frames"], normalize=data["normalize"], rotate=data["rotate"],
                      scale=data["scale"], minmax=data["minmax"], sampling=data["sampling"],
                      train_crop=tuple(data["train_crop"]), eval_crop=data["eval_crop"],
                      streams=tuple(data["streams"]), augmentation=Augmentation(**data["augmentation"]))


def load_sequences(data: dict) -> tuple[list, list]:
    """(training sequences, test sequences) of the data section: the two parts of
    `benchmark`, or the `train` and `test` paths whole."""
    benchmark = data["benchmark"]
    test_path = data["test"] or data["train"]
    if benchmark is not None and test_path == data["train"]:  # one dataset, read once
        sequences = open_sequences(data["train"])
        parts = [split_of(benchmark, sequence.meta) for sequence in sequences]
        train = [s for s, part in zip(sequences, parts) if part == "train"]
        test = [s for s, part in zip(sequences, parts) if part == "test"]
    else:
        train = open_sequences(data["train"], benchmark, benchmark and "train")
        test = open_sequences(test_path, benchmark, benchmark and "test")
    for name, part in (("training", train), ("test", test)):
        if len(part) == 0:
            raise ValueError(f"no {name} sequences in {data['train'] if part is train else test_path}"
                             + (f" (benchmark {benchmark})" if benchmark else ""))
    return train, test


def _num_classes(data: dict, datasets: list[SkeletonDataset]) -> int:
    labels = np.concatenate([dataset.labels for dataset in datasets])
    if labels.min() < 0:
        raise ValueError("the data holds unlabelled sequences: training needs a label on every one")
    if data["num_classes"] is None:
        return int(labels.max()) + 1
    if labels.max() >= data["num_classes"]:
        raise ValueError(f"data.num_classes is {data['num_classes']} but the data has label {labels.max()}")
    return data["num_classes"]


def build_training_model(config: dict, in_channels: int, num_classes: int, layout: str,
                         num_bodies: int, load_encoder_run: bool = True) -> torch.nn.Module:
    """The encoder of `config`, wrapped with SSF or VST when their section is enabled (VST's
    encoder frozen when vst.encoder_run is set, and loaded from that run unless
    `load_encoder_run` is false: a checkpoint of this run will hold the weights)."""
    model = build_model(config["model"], in_channels, num_classes, layout, num_bodies)
    if config["ssf"]["enabled"]:
        return _with_ssf(model, config["ssf"])
    vst = config["vst"]
    if not vst["enabled"]:
        return model
    frozen = vst["encoder_run"] is not None
    if frozen and load_encoder_run:
        state = load_checkpoint(Path(vst["encoder_run"]) / CHECKPOINT)["model"]
        if any(key.startswith("encoder.") for key in state):  # a VST run: its encoder's part
            state = {key.removeprefix("encoder."): value for key, value in state.items() if key.startswith("encoder.")}
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"vst.encoder_run: {vst['encoder_run']} does not hold an encoder of this config's "
                             f"model: {str(error).splitlines()[0]}") from None
    return TokenizedEncoder(model, vst_config(vst), num_classes, layout, config["data"]["num_frames"], frozen)


def text_cache_dir() -> Path:
    """Where text features are cached: $SKELANG_CACHE/text or ~/.cache/skelang/text."""
    return Path(os.environ.get("SKELANG_CACHE", Path.home() / ".cache" / "skelang")) / "text"


def _with_ssf(encoder: torch.nn.Module, section: dict) -> SkeletonLanguageModel:
    from skelang.fusion.descriptions import load_descriptions
    from skelang.fusion.text_encoder import TextEncoder, cached_text_features

    descriptions = load_descriptions(section["descriptions"])
    texts = descriptions.texts(section["text"])
    text_encoder = TextEncoder.from_pretrained(section["text_encoder"])
    embeddings = cached_text_features(text_encoder, texts, text_cache_dir())
    tokens, mask = cached_text_features(text_encoder, texts, text_cache_dir(), tokens=True)
    return SkeletonLanguageModel(encoder, ssf_config(section), embeddings, tokens, mask)


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device is cuda but no CUDA device is available")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def _rng_states() -> dict:
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, keys.tolist(), position, has_gauss, cached_gaussian],
            "python": random.getstate()}


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(states["python"])


def save_checkpoint(state: dict, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: `path` always
    holds a whole checkpoint, the old or the new one."""
    torch_save_atomic(state, path)


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_run(run_dir: str | Path) -> tuple[Path, dict]:
    """(run_dir as a Path, its resolved config.yaml) of a training run; a folder without
    config.yaml and checkpoint.pt is an error naming it."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", CHECKPOINT):
        if not (run_dir / name).is_file():
            raise ValueError(f"{run_dir}: no {name}: not a skelang training run")
    return run_dir, resolve_config(yaml.safe_load((run_dir / "config.yaml").read_text()), str(run_dir / "config.yaml"))


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _check_run_directory(out_dir: Path, config: dict, resume: bool) -> None:
    if not resume:
        if out_dir.exists() and any(out_dir.iterdir()):
            raise ValueError(f"{out_dir} already holds a run: resume it (--resume) or choose another folder")
        return
    if not (out_dir / CHECKPOINT).is_file():
        raise ValueError(f"{out_dir}: no {CHECKPOINT} to resume from")
    saved = _flatten(resolve_config(yaml.safe_load((out_dir / "config.yaml").read_text()),
                                    str(out_dir / "config.yaml")))
    wanted = _flatten(config)
    changed = sorted(key for key in saved.keys() | wanted.keys()
                     if saved.get(key) != wanted.get(key) and key not in RESUMABLE_CHANGES)
    if changed:
        raise ValueError(f"{out_dir}: cannot resume with a different {', '.join(changed)} "
                         f"(only {', '.join(RESUMABLE_CHANGES)} may change)")


def start_run(config: dict, out_dir: Path, resume: bool) -> tuple[dict | None, dict | None]:
    """Checks and prepares the run folder of a resolved config, writes its config.yaml and
    seeds python, numpy and torch. Returns (the checkpoint to resume from or None, the final
    metrics when the resumed run had already finished, else None)."""
    _check_run_directory(out_dir, config, resume)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(out_dir / CHECKPOINT) if resume else None
    if (checkpoint is not None and checkpoint["epoch"] >= config["train"]["epochs"]
            and (out_dir / "metrics.json").is_file()):
        return checkpoint, json.loads((out_dir / "metrics.json").read_text())
    write_text_atomic(out_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    random.seed(config["seed"])
    np.random.seed(config["seed"])
    torch.manual_seed(config["seed"])
    return checkpoint, None


def rewind_log(path: Path, epoch: int) -> None:
    """Keep the log's lines of epochs up to `epoch` (0: an empty log), dropping any written
    after the checkpoint a run resumes from."""
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] <= epoch] if epoch else []
    write_text_atomic(path, "".join(line + "\n" for line in kept))


def _append_log(path: Path, entries: list[dict]) -> None:
    with open(path, "a") as log:
        for entry in entries:
            log.write(json.dumps(entry) + "\n")


def train(config: dict, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Trains the model of `config` (a resolved or raw configuration) and writes the run to
    `out_dir` (see the module's documentation). Returns the final metrics. With `resume`,
    continues the run in `out_dir` from its checkpoint (a finished run returns its metrics)."""
    config = resolve_config(config)
    if config["lm"]["enabled"]:
        from skelang.lm.train import train_language_model

        return train_language_model(config, out_dir, resume, progress)
    out_dir = Path(out_dir)
    checkpoint, finished = start_run(config, out_dir, resume)
    if finished is not None:
        return finished
    seed, data, optim, options = config["seed"], config["data"], config["optim"], config["train"]
    epochs = options["epochs"]
    device = select_device(options["device"])
    train_sequences, test_sequences = load_sequences(data)
    unseen = set(config["ssf"]["unseen"]) if config["ssf"]["enabled"] else set()
    if unseen:  # zero-shot: the unseen classes never reach training
        train_sequences = [s for s in train_sequences if s.label not in unseen]
    preprocess = make_preprocess(data)
    train_set = SkeletonDataset(train_sequences, preprocess, train=True, seed=seed, repeat=data["repeat"])
    test_set = SkeletonDataset(test_sequences, preprocess)
    num_classes = _num_classes(data, [train_set, test_set])
    in_channels, _, _, num_bodies = test_set[0][0].shape
    layout = train_sequences[0].layout
    model = build_training_model(config, in_channels, num_classes, layout, num_bodies).to(device)
    tokenized = isinstance(model, TokenizedEncoder)
    staged = hasattr(model, "losses")  # VST or SSF: the model computes its own losses
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], optim)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=optim["label_smoothing"])
    test_loader = make_loader(test_set, options["test_batch_size"], shuffle=False, num_workers=data["num_workers"])

    start_epoch, wall_time, best, metrics = 0, 0.0, {"top1": None, "epoch": None}, None
    log_path = out_dir / "log.jsonl"
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_epoch, wall_time, best = checkpoint["epoch"], checkpoint["wall_time"], checkpoint["best"]
        _set_rng_states(checkpoint["rng"])
    rewind_log(log_path, start_epoch)

    batches = math.ceil(len(train_set) / options["batch_size"])
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    if options["deterministic"]:
        torch.use_deterministic_algorithms(True)
    bar = tqdm(total=epochs * batches, initial=start_epoch * batches, disable=not progress,
               unit="batch", dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            lr = learning_rate(optim, epochs, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            train_set.set_epoch(epoch)
            loader = make_loader(train_set, options["batch_size"], shuffle=True, seed=seed,
                                 num_workers=data["num_workers"])
            model.train()
            loss_sum, correct, seen, part_sums = 0.0, 0, 0, {}
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            for inputs, labels in loader:
                inputs, labels = inputs.to(device), labels.to(device)
                if staged:
                    loss, logits, parts = model.losses(inputs, labels, criterion)
                    for name, value in parts.items():
                        part_sums[name] = part_sums.get(name, 0.0) + value * len(labels)
                else:
                    logits = model(inputs)
                    loss = criterion(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.item() * len(labels)
                correct += (logits.argmax(dim=1) == labels).sum().item()
                seen += len(labels)
                bar.update()
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}")
            entry = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_top1": correct / seen, "lr": lr}
            entry.update({f"loss_{name}": value / seen for name, value in part_sums.items()})
            if (epoch + 1) % options["eval_every"] == 0 or epoch + 1 == epochs:
                metrics = evaluate(model, test_loader, device)
                metrics.update(_stage_metrics(model, test_loader, device))
                entry.update({key: metrics[key] for key in ("token_top1", "codebook_perplexity",
                                                             "codebook_used_fraction", "text_top1", "gzsl_harmonic_mean",
                                                             "zsl_unseen_top1") if key in metrics})
                entry["test_top1"] = metrics["top1"]
                if best["top1"] is None or metrics["top1"] > best["top1"]:
                    best = {"top1": metrics["top1"], "epoch": epoch + 1}
                if progress:
                    bar.write(f"epoch {epoch + 1}: loss {entry['loss']:.4f}, train top-1 {entry['train_top1']:.2%}, "
                              f"test top-1 {metrics['top1']:.2%}")
            entry["seconds"] = time.perf_counter() - started
            wall_time += entry["seconds"]
            _append_log(log_path, [entry])
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "epoch": epoch + 1, "wall_time": wall_time, "best": best,
                             "rng": _rng_states(), "num_classes": num_classes,
                             "in_channels": in_channels, "layout": layout, "num_bodies": num_bodies}, out_dir / CHECKPOINT)
    finally:
        bar.close()
        torch.use_deterministic_algorithms(previous_deterministic)
    if metrics is None:  # stopped after the last checkpoint, before its metrics were written
        metrics = evaluate(model, test_loader, device)
        metrics.update(_stage_metrics(model, test_loader, device))
    if tokenized:  # the decoder fitted to the final codes, the codes the training data uses, their glossary
        train_eval_loader = make_loader(SkeletonDataset(train_sequences, preprocess), options["test_batch_size"],
                                        shuffle=False, num_workers=data["num_workers"])
        metrics.update(model.fit_decoder(train_eval_loader, device))
        train_usage = model.token_metrics(train_eval_loader, device)
        metrics.update({"train_" + key: value for key, value in train_usage.items() if key.startswith("codebook_")})
        glossary = build_glossary(model.decoder, model.quantizer.codebook, model.quantizer.usage,
                                  get_layout(layout))
        save_glossary(glossary, out_dir / "glossary.json")
    result = {**metrics, "best_top1": best["top1"], "best_epoch": best["epoch"], "epochs": epochs,
              "wall_time_s": wall_time, "parameters": sum(p.numel() for p in model.parameters())}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_run(run_dir: str | Path, data: str | None = None, device: str = "auto", zero_shot: bool = True,
                 unseen: list[int] | None = None, calibration: float = 0.0) -> dict:
    """Metrics of the final checkpoint of the run in `run_dir` on its test data, or on all
    of the sequences at `data` (any path open_sequences accepts). For an SSF run, `unseen`
    replaces the run's unseen classes in the zero-shot metrics, and `calibration` is
    subtracted from the seen classes' logits in their GZSL part."""
    run_dir, config = read_run(run_dir)
    checkpoint = load_checkpoint(run_dir / CHECKPOINT)
    sequences = load_sequences(config["data"])[1] if data is None else open_sequences(data)
    device = select_device(device)
    model = build_training_model(config, checkpoint["in_channels"], checkpoint["num_classes"], checkpoint["layout"],
                                 checkpoint["num_bodies"], load_encoder_run=False)
    model.load_state_dict(checkpoint["model"])
    if unseen is not None:
        if not isinstance(model, SkeletonLanguageModel):
            raise ValueError(f"{run_dir}: zero-shot classes apply to runs with ssf.enabled")
        model.config.unseen = tuple(unseen)
    model.to(device)
    test_set = SkeletonDataset(sequences, make_preprocess(config["data"]))
    loader = make_loader(test_set, config["train"]["test_batch_size"], shuffle=False,
                         num_workers=config["data"]["num_workers"])
    metrics = evaluate(model, loader, device)
    metrics.update(_stage_metrics(model, loader, device, zero_shot, calibration))
    return {**metrics, "epoch": checkpoint["epoch"]}


def _stage_metrics(model: torch.nn.Module, loader, device, zero_shot: bool = True, calibration: float = 0.0) -> dict:
    """VST: the token-only classifier and codebook usage; SSF: classification by the text
    prototypes, and with unseen classes the zero-shot metrics."""
    if isinstance(model, TokenizedEncoder):
        return model.token_metrics(loader, device)
    if isinstance(model, SkeletonLanguageModel):
        if model.config.unseen and zero_shot:  # its pass over the data gives text_top1 too
            return zero_shot_metrics(model, loader, device, calibration)
        return text_metrics(model, loader, device)
    return {}
