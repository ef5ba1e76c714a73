"""VST runs after training: load a run's TokenizedEncoder, write each sequence's narrative,
read (or rebuild) the code glossary, and decode a code to a motion clip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from skelang.files import write_text_atomic
from skelang.data.dataset import SkeletonDataset, make_loader
from skelang.data.layouts import get_layout
from skelang.data.readers import open_sequences
from skelang.data.sequence import Sequence
from skelang.train.trainer import CHECKPOINT, build_training_model, load_checkpoint, make_preprocess, read_run
from skelang.vst.glossary import GlossaryEntry, build_glossary, load_glossary, save_glossary
from skelang.vst.model import TokenizedEncoder
from skelang.vst.narrative import format_narrative


def load_vst_run(run_dir: str | Path) -> tuple[TokenizedEncoder, dict, dict]:
    """(model in eval mode, resolved config, checkpoint) of a training run with VST."""
    run_dir, config = read_run(run_dir)
    if not config["vst"]["enabled"]:
        raise ValueError(f"{run_dir}: this run has no VST (its config has vst.enabled: false)")
    checkpoint = load_checkpoint(run_dir / CHECKPOINT)
    model = build_training_model(config, checkpoint["in_channels"], checkpoint["num_classes"], checkpoint["layout"],
                                 checkpoint["num_bodies"], load_encoder_run=False)
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config, checkpoint


def tokenize(run_dir: str | Path, data: str, batch_size: int = 64) -> list[dict]:
    """One record per sequence at `data` (any path open_sequences accepts): index, name,
    label, the encoder's predicted label, the narrative and its runs (code, count, and the
    span [start, end) in the frames of the model input)."""
    model, config, _ = load_vst_run(run_dir)
    sequences = open_sequences(data)
    loader = make_loader(SkeletonDataset(sequences, make_preprocess(config["data"])), batch_size, shuffle=False,
                         num_workers=0)
    records = []
    with torch.no_grad():
        for inputs, labels in loader:
            predictions = model(inputs).argmax(1)
            for runs, label, prediction in zip(model.tokenize(inputs), labels.tolist(), predictions.tolist()):
                sequence = sequences[len(records)]
                records.append({"index": len(records), "name": sequence.meta.get("name", ""),
                                "label": None if label < 0 else label, "predicted": prediction,
                                "narrative": format_narrative(runs),
                                "runs": [{"code": r.code, "count": r.count, "start": r.start, "end": r.end}
                                         for r in runs]})
    return records


def write_jsonl(records: list[dict], path: str | Path) -> None:
    """`records` as JSON lines, written to a temporary file and renamed."""
    write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in records))


def glossary(run_dir: str | Path) -> list[GlossaryEntry]:
    """The run's glossary.json, rebuilt from its checkpoint (codes used on its training
    data) when the file is missing."""
    path = Path(run_dir) / "glossary.json"
    if path.is_file():
        return load_glossary(path)
    model, config, checkpoint = load_vst_run(run_dir)
    from skelang.train.trainer import load_sequences

    train_sequences, _ = load_sequences(config["data"])
    loader = make_loader(SkeletonDataset(train_sequences, make_preprocess(config["data"])),
                         config["train"]["test_batch_size"], shuffle=False, num_workers=0)
    model.token_metrics(loader, "cpu")
    entries = build_glossary(model.decoder, model.quantizer.codebook, model.quantizer.usage,
                             get_layout(checkpoint["layout"]))
    save_glossary(entries, path)
    return entries


def code_motion(run_dir: str | Path, code: int) -> Sequence:
    """The motion clip that the run's decoder gives for `code`, as a one-body Sequence."""
    model, _, checkpoint = load_vst_run(run_dir)
    if not 0 <= code < model.config.num_codes:
        raise ValueError(f"code {code} is not in [0, {model.config.num_codes}) of {run_dir}")
    with torch.no_grad():
        clip = model.decoder(model.quantizer.codebook[code][None])[0]  # (3, L, V)
    data = np.ascontiguousarray(clip.numpy()[..., None], dtype=np.float32)  # (3, L, V, 1)
    return Sequence(data=data, layout=checkpoint["layout"], meta={"name": f"<a{code}>"})
