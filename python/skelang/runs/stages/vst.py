"""Stage `vst`: semantic action tokens (LVLM-VAR's VST, skelang.vst.model) on the features of an
encoder, frozen from vst.encoder_run or trained with VST; and what a finished VST run gives:
each sequence's narrative, the code glossary, a code's decoded motion."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch

from skelang.data.dataset import make_loader
from skelang.data.layouts import get_layout
from skelang.data.readers import open_sequences_for
from skelang.data.sequence import Sequence
from skelang.files import write_text_atomic
from skelang.runs.directory import RunDirectory, open_run
from skelang.runs.stages.encoder import EncoderStage, check_encoder_inputs, load_sequences
from skelang.vst.glossary import GlossaryEntry, build_glossary, load_glossary, save_glossary
from skelang.vst.model import TokenizedEncoder, VSTConfig
from skelang.vst.narrative import format_narrative


class VSTStage(EncoderStage):
    """Stage `vst`: semantic action tokens on the encoder's features (skelang.vst.model), the
    encoder frozen from vst.encoder_run or trained with VST. At the end the motion decoder is
    fitted to the final codes and glossary.json describes every code the training data uses."""

    name = "vst"
    section = "vst"
    log_metrics = ("token_top1", "codebook_perplexity", "codebook_used_fraction")

    def build_model(self, shape: dict, for_training: bool) -> torch.nn.Module:
        encoder = super().build_model(shape, for_training)
        section = self.config["vst"]
        frozen = section["encoder_run"] is not None
        if frozen and for_training:
            check_encoder_inputs(self.config["data"], open_run(section["encoder_run"]), "vst.encoder_run")
            state = self.encoder_checkpoint["model"]
            if any(key.startswith("encoder.") for key in state):  # a VST or SSF run: its encoder's part
                state = {
                    key.removeprefix("encoder."): value for key, value in state.items() if key.startswith("encoder.")
                }
            try:
                encoder.load_state_dict(state)
            except RuntimeError as error:
                raise ValueError(
                    f"vst.encoder_run: {section['encoder_run']} does not hold an encoder of this "
                    f"config's model: {str(error).splitlines()[0]}"
                ) from None
        vst = VSTConfig.model_validate({key: value for key, value in section.items() if key in VSTConfig.model_fields})
        return TokenizedEncoder(
            encoder, vst, shape["num_classes"], shape["layout"], self.config["data"]["num_frames"], frozen
        )

    def model_bodies(self, data_bodies: int) -> int:
        """A frozen encoder's own M (data with fewer bodies is padded to it)."""
        if self.config["vst"]["encoder_run"] is None:
            return data_bodies
        return int(self.encoder_checkpoint.get("num_bodies", data_bodies))

    @functools.cached_property
    def encoder_checkpoint(self) -> dict:
        """The checkpoint of vst.encoder_run, read once (its bodies, then its weights)."""
        return open_run(self.config["vst"]["encoder_run"]).load_checkpoint()

    def stage_metrics(self, loader, **options) -> dict:
        return self.model.token_metrics(loader, self.device)

    def training_loader(self):
        """The training sequences with the evaluation preprocessing, in order."""
        return make_loader(
            self.dataset(self.train_sequences),
            self.config["train"]["test_batch_size"],
            shuffle=False,
            num_workers=self.num_workers,
        )

    def finish(self, metrics: dict) -> dict:
        """The decoder fitted to the final codes, the codes the training data uses, their glossary."""
        loader = self.training_loader()
        extra = self.model.fit_decoder(loader, self.device)
        train_usage = self.model.token_metrics(loader, self.device)
        extra.update({"train_" + key: value for key, value in train_usage.items() if key.startswith("codebook_")})
        glossary = build_glossary(
            self.model.decoder,
            self.model.quantizer.codebook,
            self.model.quantizer.usage,
            get_layout(self.shape["layout"]),
        )
        if self.ranks.is_main:
            save_glossary(glossary, self.run.file("glossary.json"))
        return extra

    def finished_state(self) -> dict:
        return {"fitted_decoder": self.model.decoder.state_dict()}

    def load_finished_state(self, checkpoint: dict) -> None:
        if "fitted_decoder" in checkpoint:  # absent in runs from before it was kept
            self.model.decoder.load_state_dict(checkpoint["fitted_decoder"])


def load_vst_run(run_dir: str | Path) -> VSTStage:
    """The VST stage of a finished run, its model in eval mode (`.model`, `.config`)."""
    run = open_run(run_dir)
    if run.stage != "vst":
        raise ValueError(f"{run.path}: not a VST run (its stage is {run.stage})")
    return VSTStage.load(run)


def tokenize(run_dir: str | Path, data: str, batch_size: int = 64) -> list[dict]:
    """One record per sequence at `data` (any path open_sequences accepts): index, name,
    label, the encoder's predicted label, the narrative and its runs (code, count, and the
    span [start, end) in the frames of the model input)."""
    stage = load_vst_run(run_dir)
    model = stage.model
    sequences = open_sequences_for(data, stage.shape["layout"])
    loader = make_loader(stage.dataset(sequences), batch_size, shuffle=False, num_workers=0)
    records = []
    with torch.no_grad():
        for inputs, labels in loader:
            predictions = model(inputs).argmax(1)
            for runs, label, prediction in zip(model.tokenize(inputs), labels.tolist(), predictions.tolist()):
                sequence = sequences[len(records)]
                records.append(
                    {
                        "index": len(records),
                        "name": sequence.meta.get("name", ""),
                        "label": None if label < 0 else label,
                        "predicted": prediction,
                        "narrative": format_narrative(runs),
                        "runs": [{"code": r.code, "count": r.count, "start": r.start, "end": r.end} for r in runs],
                    }
                )
    return records


def write_jsonl(records: list[dict], path: str | Path) -> None:
    """`records` as JSON lines, written to a temporary file and renamed."""
    write_text_atomic(path, "".join(json.dumps(record) + "\n" for record in records))


def glossary(run_dir: str | Path) -> list[GlossaryEntry]:
    """The run's glossary.json, rebuilt from its checkpoint (codes used on its training
    data) when the file is missing."""
    run = RunDirectory(run_dir)
    path = run.file("glossary.json")
    if path.is_file():
        return load_glossary(path)
    stage = load_vst_run(run_dir)
    train_sequences, _ = load_sequences(stage.config["data"])
    loader = make_loader(
        stage.dataset(train_sequences),
        stage.config["train"]["test_batch_size"],
        shuffle=False,
        num_workers=0,
    )
    stage.model.token_metrics(loader, "cpu")
    entries = build_glossary(
        stage.model.decoder,
        stage.model.quantizer.codebook,
        stage.model.quantizer.usage,
        get_layout(stage.shape["layout"]),
    )
    save_glossary(entries, path)
    return entries


def code_motion(run_dir: str | Path, code: int) -> Sequence:
    """The motion clip that the run's decoder gives for `code`, as a one-body Sequence."""
    stage = load_vst_run(run_dir)
    model = stage.model
    if not 0 <= code < model.config.num_codes:
        raise ValueError(f"code {code} is not in [0, {model.config.num_codes}) of {run_dir}")
    with torch.no_grad():
        clip = model.decoder(model.quantizer.codebook[code][None])[0]  # (3, L, V)
    data = np.ascontiguousarray(clip.numpy()[..., None], dtype=np.float32)  # (3, L, V, 1)
    return Sequence(data=data, layout=stage.shape["layout"], meta={"name": f"<a{code}>"})
