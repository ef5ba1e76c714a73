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

import dataclasses

import torch
from torch import nn

from skelang.data.layouts import get_layout
from skelang.encoder.spatial import TOPOLOGIES, AxisSelfAttention, GlobalSpatialModule, LocalSpatialEncoder
from skelang.encoder.temporal import GlobalTemporalAttention, LocalTemporalConv
from skelang.encoder.topology import hop_distances, spatial_partitions

TEMPORAL_ORDERS = ("gta_ltc", "ltc_gta", "parallel")


@dataclasses.dataclass
class EncoderConfig:
    type: str = "hglnet"
    channels: tuple[int, ...] = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)
    strides: tuple[int, ...] = (1, 1, 1, 1, 2, 1, 1, 2, 1, 1)
    gsm: bool = True
    gta: bool = True
    lse_topology: str = "composite"
    ltc_kernel_size: int = 5
    ltc_dilations: tuple[int, ...] = (1, 2)
    ltc_pool_branch: bool = True
    ltc_pointwise_branch: bool = True
    ltc_residual: bool = False
    temporal_order: str = "gta_ltc"
    attention_heads: int = 4
    recompute_attention: bool = False  # GSM/GTA keep only their input for backward (less memory, more time)
    max_hops: int = 8
    dropout: float = 0.0
    backend: str = "cpp"

    def __post_init__(self):
        self.channels, self.strides = tuple(self.channels), tuple(self.strides)
        self.ltc_dilations = tuple(self.ltc_dilations)
        if len(self.channels) != len(self.strides) or not self.channels:
            raise ValueError(f"model.channels and model.strides must have the same non-zero length, "
                             f"got {len(self.channels)} and {len(self.strides)}")
        if self.lse_topology not in TOPOLOGIES:
            raise ValueError(f"model.lse_topology must be one of {TOPOLOGIES}, got {self.lse_topology!r}")
        if self.temporal_order not in TEMPORAL_ORDERS:
            raise ValueError(f"model.temporal_order must be one of {TEMPORAL_ORDERS}, got {self.temporal_order!r}")


# The baselines, as overrides of HGLNet's defaults.
PRESETS = {
    "hglnet": {},
    "ctrgcn": {"gsm": False, "gta": False},
    "stgcn": {"gsm": False, "gta": False, "lse_topology": "physical", "ltc_kernel_size": 9,
              "ltc_dilations": (1,), "ltc_pool_branch": False, "ltc_pointwise_branch": False},
}


def encoder_config(config: dict) -> EncoderConfig:
    """The `model` section of a config, over the preset of its `type`; unknown keys are errors."""
    config = dict(config)
    kind = config.get("type", "hglnet")
    if kind not in PRESETS:
        raise ValueError(f"model.type must be one of {', '.join(PRESETS)}, got {kind!r}")
    known = {field.name for field in dataclasses.fields(EncoderConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"unknown key(s) model.{', model.'.join(unknown)}; known: {', '.join(sorted(known))}")
    return EncoderConfig(**{**PRESETS[kind], **config})


class HGLBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int, layout: str, config: EncoderConfig,
                 residual: bool = True):
        super().__init__()
        self.order = config.temporal_order
        self.stride = stride
        self.lse = LocalSpatialEncoder(in_channels, out_channels, spatial_partitions(layout),
                                       config.lse_topology, backend=config.backend)
        self.gsm = (GlobalSpatialModule(out_channels, hop_distances(layout, config.max_hops), config.attention_heads,
                                        config.backend, config.recompute_attention) if config.gsm else None)
        self.gta = (GlobalTemporalAttention(out_channels, config.attention_heads, backend=config.backend,
                                            recompute=config.recompute_attention) if config.gta else None)
        self.ltc = LocalTemporalConv(out_channels, out_channels, stride, config.ltc_kernel_size, config.ltc_dilations,
                                     config.ltc_pool_branch, config.ltc_pointwise_branch, config.ltc_residual,
                                     config.backend)
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, (stride, 1)),
                                          nn.BatchNorm2d(out_channels))
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).mean(dim=(1, 3, 4))  # (N, C')
        return self.classifier(self.dropout(pooled))


def build_model(config: dict, in_channels: int, num_classes: int, layout: str, num_bodies: int = 2) -> SkeletonEncoder:
    """An encoder with a classification head from the `model` section of a config."""
    return SkeletonEncoder(encoder_config(config), in_channels, num_classes, layout, num_bodies)
