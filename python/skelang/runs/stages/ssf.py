"""Stage `ssf`: the encoder with HocSLM's skeleton-language fusion (skelang.fusion.ssf); classes
in ssf.unseen never reach training and are recognised zero-shot from their descriptions."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from skelang.fusion.descriptions import load_descriptions
from skelang.fusion.ssf import SkeletonLanguageModel, SSFConfig, text_metrics, zero_shot_metrics
from skelang.fusion.text_encoder import TextEncoder, cached_text_features
from skelang.runs.stages.encoder import EncoderStage


def text_cache_dir() -> Path:
    """Where text features are cached: $SKELANG_CACHE/text or ~/.cache/skelang/text."""
    return Path(os.environ.get("SKELANG_CACHE", Path.home() / ".cache" / "skelang")) / "text"


class SSFStage(EncoderStage):
    """Stage `ssf`: the encoder with skeleton-language fusion (skelang.fusion.ssf); classes in
    ssf.unseen never reach training and are evaluated zero-shot."""

    name = "ssf"
    section = "ssf"
    log_metrics = ("text_top1", "gzsl_harmonic_mean", "zsl_unseen_top1")

    def training_sequences(self, sequences: list) -> list:
        unseen = set(self.config["ssf"]["unseen"])
        return [s for s in sequences if s.label not in unseen] if unseen else sequences

    def build_model(self, shape: dict, for_training: bool) -> torch.nn.Module:
        encoder = super().build_model(shape, for_training)
        section = SSFConfig.model_validate(self.config["ssf"])
        descriptions = load_descriptions(section.descriptions)
        texts = descriptions.texts(section.text)
        text_encoder = TextEncoder.from_pretrained(section.text_encoder)
        embeddings = cached_text_features(text_encoder, texts, text_cache_dir())
        tokens, mask = cached_text_features(text_encoder, texts, text_cache_dir(), tokens=True)
        return SkeletonLanguageModel(encoder, section, embeddings, tokens, mask)

    def stage_metrics(self, loader, zero_shot: bool = True, calibration: float = 0.0, unseen=None) -> dict:
        if unseen is not None:
            self.model.config.unseen = list(unseen)
        if self.model.config.unseen and zero_shot:  # its pass over the data gives text_top1 too
            return zero_shot_metrics(self.model, loader, self.device, calibration)
        return text_metrics(self.model, loader, self.device)
