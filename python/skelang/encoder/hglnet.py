"""HGLNet, HocSLM's skeleton encoder, and the baselines that are configurations of it.

A block: CTS (the local spatial encoder LSE, plus the global spatial module GSM when on)
then DHT (global temporal attention GTA and the local temporal convolution LTC, in the
order `temporal_order`), with a residual around the block. The stack follows CTR-GCN's
channel plan (64 x4, 128 x3, 256 x3, temporal stride 2 at blocks 5 and 8); depth, width,
strides and every sub-module are set in the config:

    hglnet   LSE composite + GSM + GTA + LTC (multi-scale)
    ctrgcn   LSE composite + LTC (multi-scale): CTR-GCN
    stgcn    LSE physical + LTC with one 9 x 1 convolution: ST-GCN

Input x: (N, C, T, V, M); output logits (N, classes); `features(x)` gives the last block's
(N, M, C', T', V) features.
"""

from __future__ import annotations

import pydantic
import torch
from pydantic import Field
from torch import nn

from skelang.data.layouts import get_layout
from skelang.encoder.pointwise import PointwiseConv
from skelang.encoder.spatial import TOPOLOGIES, AxisSelfAttention, GlobalSpatialModule, LocalSpatialEncoder
from skelang.encoder.temporal import GlobalTemporalAttention, LocalTemporalConv
from skelang.encoder.topology import hop_distances, spatial_partitions
from skelang.schema import Bool, OneOf, PositiveInt, PositiveIntList, Rate, Section, validate

TEMPORAL_ORDERS = ("gta_ltc", "ltc_gta", "parallel")


# The baselines, as overrides of HGLNet's defaults.
PRESETS = {
    "hglnet": {},
    "ctrgcn": {"gsm": False, "gta": False},
    "stgcn": {
        "gsm": False,
        "gta": False,
        "lse_topology": "physical",
        "ltc_kernel_size": 9,
        "ltc_dilations": [1],
        "ltc_pool_branch": False,
        "ltc_pointwise_branch": False,
    },
}


class EncoderConfig(Section):
    """The `model` section: HGLNet's switches over the defaults of the preset `type`."""

    type: OneOf(*PRESETS) = Field("hglnet", description="preset: hglnet, ctrgcn (no GSM, GTA) or stgcn")
    channels: PositiveIntList = Field(
        [64, 64, 64, 64, 128, 128, 128, 256, 256, 256], description="output channels of each block (CTR-GCN's plan)"
    )
    strides: PositiveIntList = Field([1, 1, 1, 1, 2, 1, 1, 2, 1, 1], description="temporal stride of each block")
    gsm: Bool = Field(True, description="global spatial module: self-attention across joints (CTS)")
    gta: Bool = Field(True, description="global temporal attention across frames (DHT)")
    lse_topology: OneOf(*TOPOLOGIES) = Field("composite", description="LSE's graph: physical, shared or composite")
    ltc_kernel_size: PositiveInt = Field(5, description="LTC's temporal kernel size")
    ltc_dilations: PositiveIntList = Field([1, 2], description="LTC's dilated branches")
    ltc_pool_branch: Bool = Field(True, description="LTC's max-pool branch")
    ltc_pointwise_branch: Bool = Field(True, description="LTC's 1 x 1 branch")
    ltc_residual: Bool = Field(False, description="a residual inside LTC")
    temporal_order: OneOf(*TEMPORAL_ORDERS) = Field("gta_ltc", description="DHT's order: gta_ltc, ltc_gta, parallel")
    attention_heads: PositiveInt = Field(4, description="heads of GSM and GTA (divides every block's channels)")
    recompute_attention: Bool = Field(
        False, description="GSM/GTA keep only their input for backward (less memory, more time)"
    )
    max_hops: PositiveInt = Field(8, description="GSM's bias per graph distance, up to this many hops")
    dropout: Rate = Field(0.0, description="dropout before the classifier")
    backend: OneOf("cpp", "reference") = Field("cpp", description="cpp: skelang's fused ops; reference: plain PyTorch")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _preset(cls, values):
        """Keys the section leaves out take the preset's values."""
        if isinstance(values, dict) and values.get("type", "hglnet") in PRESETS:
            return {**PRESETS[values.get("type", "hglnet")], **values}
        return values

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        if len(self.channels) != len(self.strides):
            raise ValueError(
                f"model.channels and model.strides must have the same length (one entry per block), got "
                f"{len(self.channels)} and {len(self.strides)}: set both (their defaults are CTR-GCN's 10 blocks)"
            )
        if self.gsm or self.gta:
            bad = [c for c in self.channels if c % self.attention_heads]
            if bad:
                raise ValueError(
                    f"model.attention_heads ({self.attention_heads}) must divide every block's channels, not {bad}"
                )
        return self


def encoder_config(config: dict | EncoderConfig) -> EncoderConfig:
    """The `model` section of a config, over the preset of its `type`; a bad or unknown key is
    a ValueError naming it."""
    if isinstance(config, EncoderConfig):
        return config
    return validate(EncoderConfig, config, prefix=("model",))


class HGLBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        layout: str,
        config: EncoderConfig,
        residual: bool = True,
    ):
        super().__init__()
        self.order = config.temporal_order
        self.stride = stride
        self.lse = LocalSpatialEncoder(
            in_channels, out_channels, spatial_partitions(layout), config.lse_topology, backend=config.backend
        )
        self.gsm = (
            GlobalSpatialModule(
                out_channels,
                hop_distances(layout, config.max_hops),
                config.attention_heads,
                config.backend,
                config.recompute_attention,
            )
            if config.gsm
            else None
        )
        self.gta = (
            GlobalTemporalAttention(
                out_channels, config.attention_heads, backend=config.backend, recompute=config.recompute_attention
            )
            if config.gta
            else None
        )
        self.ltc = LocalTemporalConv(
            out_channels,
            out_channels,
            stride,
            config.ltc_kernel_size,
            config.ltc_dilations,
            config.ltc_pool_branch,
            config.ltc_pointwise_branch,
            config.ltc_residual,
            config.backend,
        )
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                PointwiseConv(in_channels, out_channels, stride, backend=config.backend),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, T, V) -> (N, C', T / stride, V)
        y = self.lse(x)
        if self.gsm is not None:
            y = self.gsm(y)
        if self.gta is None:
            y = self.ltc(y)
        elif self.order == "gta_ltc":
            y = self.ltc(self.gta(y))
        elif self.order == "ltc_gta":
            y = self.gta(self.ltc(y))
        else:  # parallel: both read the spatial features; GTA's output is pooled to LTC's stride
            y = self.ltc(y) + nn.functional.avg_pool2d(self.gta(y) - y, (self.stride, 1), ceil_mode=True)
        return self.relu(y if self.residual is None else y + self.residual(x))


class SkeletonEncoder(nn.Module):
    def __init__(self, config: EncoderConfig, in_channels: int, num_classes: int, layout: str, num_bodies: int = 2):
        super().__init__()
        V = get_layout(layout).num_joints
        self.config = config
        self.layout = layout  # the skeleton layout of its inputs
        self.num_bodies = num_bodies  # M of its inputs
        self.input_norm = nn.BatchNorm1d(num_bodies * V * in_channels)
        blocks, channels = [], in_channels
        for index, (width, stride) in enumerate(zip(config.channels, config.strides)):
            # as CTR-GCN's first block, the first has no residual around it
            blocks.append(HGLBlock(channels, width, stride, layout, config, residual=index > 0))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CTR-GCN's initialisation: convolutions Kaiming-normal (fan out) with zero bias,
        batch norms 1 and 0, except the norm after each graph convolution (LSE), which starts
        at 1e-6 so that every block starts close to its residual; the classifier normal with
        std sqrt(2 / classes). GSM and GTA keep their zero-initialised norms (identity)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, (LocalSpatialEncoder, LocalTemporalConv)):
                module.init_like_ctrgcn()  # their stacked convolutions
            if isinstance(module, LocalSpatialEncoder):
                nn.init.constant_(module.norm.weight, 1e-6)
            elif isinstance(module, AxisSelfAttention):
                nn.init.zeros_(module.norm.weight)
        nn.init.normal_(self.classifier.weight, 0.0, (2.0 / self.classifier.out_features) ** 0.5)
        nn.init.zeros_(self.classifier.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, V, M) -> (N, M, C', T', V)."""
        N, C, T, V, M = x.shape
        x = self.input_norm(x.permute(0, 4, 3, 1, 2).reshape(N, M * V * C, T))
        x = x.view(N, M, V, C, T).permute(0, 1, 3, 4, 2).reshape(N * M, C, T, V)
        y = self.blocks(x)
        return y.view(N, M, *y.shape[1:])

    @staticmethod
    def pool(features: torch.Tensor) -> torch.Tensor:
        """(N, M, C', T', V) features -> (N, C'): the mean over bodies, time and joints, the
        classifier's input."""
        return features.mean(dim=(1, 3, 4))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(N, M, C', T', V) features -> (N, classes) logits: pool, dropout (training only),
        classifier."""
        return self.classifier(self.dropout(self.pool(features)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def build_model(config: dict, in_channels: int, num_classes: int, layout: str, num_bodies: int = 2) -> SkeletonEncoder:
    """An encoder with a classification head from the `model` section of a config."""
    return SkeletonEncoder(encoder_config(config), in_channels, num_classes, layout, num_bodies)
