"""The composite-topology spatial module CTS of HGLNet: the global spatial module GSM
(self-attention across joints with a topology-aware bias) and the local spatial encoder
LSE (graph convolution on a composite topology: physical + learned shared + per-channel
refinement from the input, as CTR-GCN's CTR-GC).

Features are (N, C, T, V) throughout: N samples (bodies folded in), C channels, T frames,
V joints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import skelang.ops
import skelang.reference
from skelang.encoder.pointwise import PointwiseConv

TOPOLOGIES = ("physical", "shared", "composite")


def ops_for(backend: str):
    """The fused ops of the C++ core ("cpp") or their pure-PyTorch references ("reference")."""
    if backend == "cpp":
        return skelang.ops
    if backend == "reference":
        return skelang.reference
    raise ValueError(f"backend must be 'cpp' or 'reference', got {backend!r}")


def kaiming_fan_out(tensor: torch.Tensor, fan_out: int) -> None:
    """CTR-GCN's conv_init (Kaiming normal, fan out) for weights stacked from several convolutions."""
    nn.init.normal_(tensor, 0.0, (2.0 / fan_out) ** 0.5)


class LocalSpatialEncoder(nn.Module):
    """LSE: y = sum over partitions k of A_k applied to W_k x, where A_k is
        physical:  the fixed partition of the skeleton graph,
        shared:    physical + a learned topology shared by all samples,
        composite: shared + alpha * a per-sample, per-channel refinement
                   expand(tanh(phi(x)_u - psi(x)_v)) from the time-pooled input (CTR-GC).
    The K projections W_k are one convolution, as are the K phi and psi; with backend "cpp"
    the composite topology is never materialised (skelang.ops.composite_aggregate).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        partitions: torch.Tensor,
        topology: str = "composite",
        reduction: int = 8,
        backend: str = "cpp",
    ):
        super().__init__()
        if topology not in TOPOLOGIES:
            raise ValueError(f"LSE topology must be one of {TOPOLOGIES}, got {topology!r}")
        self.topology = topology
        self.ops = ops_for(backend)
        K, V, _ = partitions.shape
        self.partitions, self.out_channels = K, out_channels
        self.register_buffer("physical", partitions)  # (K, V, V)
        self.shared = nn.Parameter(torch.zeros(K, V, V)) if topology != "physical" else None
        self.project = PointwiseConv(in_channels, K * out_channels, backend=backend)  # W_k x for every k
        if topology == "composite":
            self.relation_channels = 8 if in_channels < 16 else in_channels // reduction  # CTR-GCN's
            self.relate = PointwiseConv(in_channels, 2 * K * self.relation_channels, backend=backend)  # phi_k, psi_k
            self.expand_weight = nn.Parameter(torch.empty(K, out_channels, self.relation_channels))
            self.expand_bias = nn.Parameter(torch.zeros(K, out_channels))
            self.alpha = nn.Parameter(torch.zeros(1))
        self.norm = nn.BatchNorm2d(out_channels)
        self.residual = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(PointwiseConv(in_channels, out_channels, backend=backend), nn.BatchNorm2d(out_channels))
        )
        self.init_like_ctrgcn()

    def init_like_ctrgcn(self) -> None:
        """Each stacked convolution initialised as CTR-GCN initialises one of its parts."""
        kaiming_fan_out(self.project.weight, self.out_channels)
        nn.init.zeros_(self.project.bias)
        if self.topology == "composite":
            kaiming_fan_out(self.relate.weight, self.relation_channels)
            nn.init.zeros_(self.relate.bias)
            kaiming_fan_out(self.expand_weight, self.out_channels)
            nn.init.zeros_(self.expand_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, _, T, V = x.shape
        K, C = self.partitions, self.out_channels
        topology = self.physical if self.shared is None else self.physical + self.shared  # (K, V, V)
        projected = self.project(x).view(N, K, C, T, V)
        if self.topology == "composite":
            pooled = x.mean(2, keepdim=True)  # (N, C_in, 1, V)
            phi, psi = self.relate(pooled).view(N, 2, K, self.relation_channels, V).unbind(1)
            y = self.ops.composite_aggregate(
                projected, phi, psi, self.expand_weight, self.expand_bias, self.alpha, topology
            )
        else:
            y = sum(self.ops.graph_aggregate(projected[:, k], topology[k][None, None]) for k in range(K))
        return F.relu(self.norm(y) + self.residual(x))


class AxisSelfAttention(nn.Module):
    """What GSM and GTA share: multi-head self-attention along one axis (`axis`: 3 joints, 2
    frames) of (N, C, T, V) features with a learned bias per head (`distance_bias`, indexed by
    the subclass's `attention_bias`), 1x1 projections in and out, and a norm that starts at 0,
    so that the module starts as the identity: y = x + norm(out(attention(qkv(x)))).

    With `recompute` (when autograd records), nothing inside is kept for backward but x and
    the bias: the projections and the attention run again in backward (torch.utils.checkpoint),
    about 4C values and the H L attention probabilities per position less memory, for more
    time (see the README's encoder section for measurements)."""

    axis: int

    def __init__(self, channels: int, heads: int, bias_entries: int, backend: str, recompute: bool, name: str):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{name}: {channels} channels are not divisible by {heads} heads")
        self.heads, self.recompute = heads, recompute
        self.ops = ops_for(backend)
        self.distance_bias = nn.Parameter(torch.zeros(heads, bias_entries))
        self.qkv = PointwiseConv(channels, 3 * channels, backend=backend)
        self.out = PointwiseConv(channels, channels, backend=backend)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)  # starts as the identity: y = x

    def attention_bias(self, x: torch.Tensor) -> torch.Tensor:
        """(H, L, L) for features x."""
        raise NotImplementedError

    def attend(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.out(self.ops.axis_attention(self.qkv(x), bias, self.heads, self.axis))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.attention_bias(x)
        if self.recompute and torch.is_grad_enabled():
            return x + self.norm(checkpoint(self.attend, x, bias, use_reentrant=False))
        return x + self.norm(self.attend(x, bias))


class GlobalSpatialModule(AxisSelfAttention):
    """GSM: multi-head self-attention across the V joints of each frame, with a learned
    bias per head and per graph distance between the two joints (topology-aware)."""

    axis = 3

    def __init__(
        self, channels: int, hop_distance: torch.Tensor, heads: int = 4, backend: str = "cpp", recompute: bool = False
    ):
        super().__init__(channels, heads, int(hop_distance.max()) + 1, backend, recompute, "GSM")
        self.register_buffer("hop_distance", hop_distance)  # (V, V) int64

    def attention_bias(self, x: torch.Tensor) -> torch.Tensor:
        return self.distance_bias[:, self.hop_distance].to(x.dtype)  # (H, V, V)
