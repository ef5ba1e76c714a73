"""VST as a model: the skeleton encoder's features over time, pooled into segments, projected
and quantized to semantic action tokens; a motion decoder that reconstructs each segment's
joint motion from its code; and a classifier that reads the tokens alone (to measure how
much of the encoder's accuracy the tokens keep).

    x (N, C, T, V, M) -> encoder features (N, M, C', T', V) -> mean over bodies and joints
    -> (N, T', C') -> project (N, T', D) -> segments of `segment_length` steps (N, S, D)
    -> quantizer: tokens (N, S), codes (N, S, D) -> decoder: (N, S, 3, L, V) motion clips,
    L = segment_length * T / T' input frames per segment.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from skelang.data.layouts import get_layout
from skelang.encoder.hglnet import SkeletonEncoder
from skelang.schema import Bool, NonNegativeFloat, OneOf, PositiveInt, Rate, Section
from skelang.vst.decoder import MotionDecoder, segment_targets
from skelang.vst.narrative import TokenRun, run_length, smooth_tokens
from skelang.vst.quantizer import VectorQuantizer
from skelang.vst.segments import fixed_segments, pool_fixed


class VSTConfig(Section):
    """VST's settings (the `vst` section of a run config)."""

    num_codes: PositiveInt = Field(512, description="codebook size: the number of action tokens")
    code_dim: PositiveInt = Field(64, description="dimension of a code")
    metric: OneOf("euclidean", "cosine") = Field("euclidean", description="nearest-code distance")
    decay: Rate = Field(0.99, description="EMA decay of the codebook")
    commitment: NonNegativeFloat = Field(0.25, description="weight of the commitment loss")
    dead_threshold: NonNegativeFloat = Field(0.1, description="revive codes whose EMA size is under this x the average")
    segment_length: PositiveInt = Field(1, description="encoder time steps per segment (token)")
    reconstruction: NonNegativeFloat = Field(1.0, description="weight of the motion decoder's loss")
    consistency: NonNegativeFloat = Field(0.0, description="weight of |z_s - z_(s+1)|^2 between segments")
    switch_penalty: NonNegativeFloat = Field(0.0, description="tokenization: cost of a token switch")
    token_classifier: Bool = Field(True, description="a classifier that reads only the tokens")


class TokenizedEncoder(nn.Module):
    """The encoder with its classification head, and VST on its features."""

    def __init__(
        self,
        encoder: SkeletonEncoder,
        config: VSTConfig,
        num_classes: int,
        layout: str,
        num_frames: int,
        frozen_encoder: bool = False,
    ):
        super().__init__()
        self.encoder, self.config = encoder, config
        self.frozen_encoder = frozen_encoder
        if frozen_encoder:
            encoder.requires_grad_(False)
        stride = 1
        for s in encoder.config.strides:
            stride *= s
        if num_frames % stride:
            raise ValueError(
                f"vst: data.num_frames ({num_frames}) must be a multiple of the encoder's total "
                f"temporal stride ({stride})"
            )
        self.frames_per_step = stride  # input frames per encoder time step
        self.clip_length = config.segment_length * self.frames_per_step
        self.layout = layout
        feature_dim = encoder.config.channels[-1]
        self.project = nn.Linear(feature_dim, config.code_dim)
        self.quantizer = VectorQuantizer(
            config.num_codes,
            config.code_dim,
            config.metric,
            config.decay,
            config.commitment,
            dead_threshold=config.dead_threshold,
            backend=encoder.config.backend,
        )
        self.decoder = MotionDecoder(config.code_dim, self.clip_length, get_layout(layout).num_joints)
        self.token_embedding = nn.Embedding(config.num_codes, 64) if config.token_classifier else None
        self.token_head = nn.Linear(64, num_classes) if config.token_classifier else None

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()  # its batch-norm statistics stay those of its own run
        return self

    def forward(self, x: Tensor) -> Tensor:
        """The encoder's logits (N, classes)."""
        return self.encoder(x)

    def segment_features(self, features: Tensor) -> Tensor:
        """(N, M, C', T', V) encoder features -> (N, S, D) segment features before quantization."""
        steps = self.project(features.mean(dim=(1, 4)).transpose(1, 2))  # (N, T', D)
        return pool_fixed(steps, self.config.segment_length)

    def tokens_and_logits(self, x: Tensor, features: Tensor | None = None):
        """(z (N, S, D), the quantizer's output, the encoder's logits); `features` are the
        encoder's features of x where the caller has them already."""
        features = self.encoder.features(x) if features is None else features
        logits = self.encoder.classify(features)
        z = self.segment_features(features)
        return z, self.quantizer(z), logits

    def token_logits(self, tokens: Tensor) -> Tensor:
        """The token-only classifier: mean of token embeddings (N, S) -> (N, classes)."""
        return self.token_head(self.token_embedding(tokens).mean(dim=1))

    def losses(
        self, x: Tensor, labels: Tensor, criterion, features: Tensor | None = None
    ) -> tuple[Tensor, Tensor, dict]:
        """(total loss, encoder logits, the parts as floats) of one training batch."""
        z, quantized, logits = self.tokens_and_logits(x, features)
        parts = {"commitment": quantized.commitment_loss}
        if not self.frozen_encoder:
            parts["classification"] = criterion(logits, labels)
        if self.config.reconstruction > 0:
            parts["reconstruction"] = self.config.reconstruction * self.decoder.reconstruction_loss(
                quantized.quantized, self.motion_targets(x)[:, : z.shape[1]]
            )
        if self.config.consistency > 0 and z.shape[1] > 1:
            parts["consistency"] = self.config.consistency * (z[:, 1:] - z[:, :-1]).square().mean()
        if self.token_head is not None:
            parts["token_classification"] = criterion(self.token_logits(quantized.indices), labels)
        total = sum(parts.values())
        return total, logits, {name: float(value.detach()) for name, value in parts.items()}

    def motion_targets(self, x: Tensor) -> Tensor:
        """(N, S, 3, L, V) each segment's joint motion: body 0's joint positions relative to
        the centre joint at the segment's first frame (where the body is in the room is not
        the action's; how it moves and poses is)."""
        clips = segment_targets(x[:, :3, :, :, 0], self.clip_length)
        centre = get_layout(self.layout).centre
        return clips - clips[:, :, :, :1, centre : centre + 1]

    def fit_decoder(self, loader, device, steps: int = 400, lr: float = 1e-3) -> dict:
        """Fits the motion decoder to the final codebook (the encoder and codes fixed): the
        codes and motion targets of `loader`'s data, then `steps` full-batch Adam steps.
        Returns its reconstruction MSE and, for scale, that of the mean motion."""
        self.eval()
        codes, targets = [], []
        with torch.no_grad():
            for inputs, _ in loader:
                inputs = inputs.to(device)
                codes.append(
                    self.quantizer(self.segment_features(self.encoder.features(inputs))).quantized.flatten(0, 1)
                )
                targets.append(self.motion_targets(inputs)[:, : codes[-1].shape[0] // len(inputs)].flatten(0, 1))
        codes, targets = torch.cat(codes), torch.cat(targets)  # (n, D), (n, 3, L, V)
        optimizer = torch.optim.Adam(self.decoder.parameters(), lr=lr)
        self.decoder.train()
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = self.decoder.reconstruction_loss(codes, targets)
            loss.backward()
            optimizer.step()
        self.decoder.eval()
        with torch.no_grad():
            mse = float(self.decoder.reconstruction_loss(codes, targets))
        return {"decoder_mse": mse, "mean_motion_mse": float((targets - targets.mean(0)).square().mean())}

    @torch.no_grad()
    def tokenize(self, x: Tensor) -> list[list[TokenRun]]:
        """Each sample's narrative: tokens smoothed with the switch penalty, merged into runs
        with their spans in input frames."""
        return self.tokenize_features(self.encoder.features(x))

    @torch.no_grad()
    def tokenize_features(self, features: Tensor) -> list[list[TokenRun]]:
        """tokenize() from the encoder's features (N, M, C', T', V)."""
        z = self.segment_features(features)  # (N, S, D)
        spans = [
            (start * self.frames_per_step, end * self.frames_per_step)
            for start, end in fixed_segments(features.shape[3], self.config.segment_length)
        ]
        codes = self.segment_codes(z)
        return [run_length(sample_codes, spans) for sample_codes in codes]

    @torch.no_grad()
    def segment_codes(self, z: Tensor) -> list[list[int]]:
        """Each sample's code per segment, z (N, S, D): the nearest code, or the codes
        smoothed with the switch penalty."""
        codes = []
        for sample in z:
            if self.config.switch_penalty > 0:
                codes.append(smooth_tokens(self.quantizer.distances(sample), self.config.switch_penalty))
            else:
                codes.append(
                    self.quantizer.ops.nearest_code(
                        self.quantizer._on_sphere(sample).contiguous(), self.quantizer.codebook, self.quantizer.metric
                    )[0]
                )
        return [[int(code) for code in sample_codes] for sample_codes in codes]

    def code_probabilities(self, z: Tensor, temperature: float) -> Tensor:
        """(N, S, K) softmax(-distance / temperature) of each segment feature z (N, S, D) to
        the codes: a soft, differentiable stand-in for the hard code (straight-through)."""
        return (-self.quantizer.distances(z) / temperature).softmax(-1)

    @torch.no_grad()
    def token_metrics(self, loader, device) -> dict:
        """Top-1 of the token-only classifier and the codebook's usage on `loader`'s data."""
        self.eval()
        self.quantizer.reset_usage()
        correct = seen = 0
        for inputs, labels in loader:
            inputs, labels = inputs.to(device), labels.to(device)
            z = self.segment_features(self.encoder.features(inputs))
            indices = self.quantizer(z).indices
            self.quantizer.usage.add_(torch.bincount(indices.flatten(), minlength=self.config.num_codes))
            if self.token_head is not None:
                correct += (self.token_logits(indices).argmax(1) == labels).sum().item()
            seen += len(labels)
        stats = self.quantizer.usage_statistics()
        metrics = {"codebook_" + name: value for name, value in stats.items()}
        if self.token_head is not None:
            metrics["token_top1"] = correct / max(seen, 1)
        return metrics


def codes_of(runs: list[TokenRun]) -> list[int]:
    """The codes of a narrative, one per segment."""
    return [run.code for run in runs for _ in range(run.count)]
