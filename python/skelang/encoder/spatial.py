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

import skelang.ops
import skelang.reference

TOPOLOGIES = ("physical", "shared", "composite")


def graph_aggregate_for(backend: str):
    """The graph_aggregate of the C++ core ("cpp") or of skelang.reference ("reference")."""
    if backend == "cpp":
        return skelang.ops.graph_aggregate
    if backend == "reference":
        return skelang.reference.graph_aggregate
    raise ValueError(f"backend must be 'cpp' or 'reference', got {backend!r}")


class LocalSpatialEncoder(nn.Module):
    """LSE: y = sum over partitions k of A_k applied to W_k x, where A_k is
        physical:  the fixed partition of the skeleton graph,
        shared:    physical + a learned topology shared by all samples,
        composite: shared + alpha * a per-sample, per-channel refinement
                   conv(tanh(phi(x)_u - psi(x)_v)) from the input (CTR-GC).
    """

    def __init__(self, in_channels: int, out_channels: int, partitions: torch.Tensor,
                 topology: str = "composite", reduction: int = 8, backend: str = "cpp"):
        super().__init__()
        if topology not in TOPOLOGIES:
            raise ValueError(f"LSE topology must be one of {TOPOLOGIES}, got {topology!r}")
        self.topology = topology
        self.aggregate = graph_aggregate_for(backend)
        K, V, _ = partitions.shape
        self.register_buffer("physical", partitions)  # (K, V, V)
        self.shared = nn.Parameter(torch.zeros(K, V, V)) if topology != "physical" else None
        self.project = nn.ModuleList(nn.Conv2d(in_channels, out_channels, 1) for _ in range(K))
        if topology == "composite":
            relation = max(in_channels // reduction, 4)
            self.phi = nn.ModuleList(nn.Conv2d(in_channels, relation, 1) for _ in range(K))
            self.psi = nn.ModuleList(nn.Conv2d(in_channels, relation, 1) for _ in range(K))
            self.expand = nn.ModuleList(nn.Conv2d(relation, out_channels, 1) for _ in range(K))
            self.alpha = nn.Parameter(torch.zeros(1))
        self.norm = nn.BatchNorm2d(out_channels)
        self.residual = (nn.Identity() if in_channels == out_channels else
                         nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels)))

    def topology_of(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """(1, 1, V, V) for physical/shared, (N, C_out, V, V) for composite."""
        A = self.physical[k] if self.shared is None else self.physical[k] + self.shared[k]
        A = A[None, None]
        if self.topology == "composite":
            pooled = x.mean(2, keepdim=True)  # (N, C, 1, V)
            relation = torch.tanh(self.phi[k](pooled).squeeze(2)[..., :, None]
                                  - self.psi[k](pooled).squeeze(2)[..., None, :])  # (N, R, V, V)
            A = A + self.alpha * self.expand[k](relation)
        return A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = sum(self.aggregate(self.project[k](x), self.topology_of(k, x)) for k in range(len(self.project)))
        return F.relu(self.norm(y) + self.residual(x))


class GlobalSpatialModule(nn.Module):
    """GSM: multi-head self-attention across the V joints of each frame, with a learned
    bias per head and per graph distance between the two joints (topology-aware)."""

    def __init__(self, channels: int, hop_distance: torch.Tensor, heads: int = 4):
        super().__init__()
        if channels % heads:
            raise ValueError(f"GSM: {channels} channels are not divisible by {heads} heads")
        self.heads = heads
        self.register_buffer("hop_distance", hop_distance)  # (V, V) int64
        self.distance_bias = nn.Parameter(torch.zeros(heads, int(hop_distance.max()) + 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)  # starts as the identity: y = x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, T, V = x.shape
        H = self.heads
        q, k, v = self.qkv(x).view(N, 3, H, C // H, T, V).permute(1, 0, 4, 2, 5, 3).reshape(3, N * T, H, V, C // H)
        bias = self.distance_bias[:, self.hop_distance]  # (H, V, V)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))  # (N*T, H, V, C/H)
        attended = attended.view(N, T, H, V, C // H).permute(0, 2, 4, 1, 3).reshape(N, C, T, V)
        return x + self.norm(self.out(attended))
