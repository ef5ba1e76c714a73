"""The vector quantizer of VST: nearest-code search in C++ (never an N x K distance matrix),
straight-through gradients, commitment loss, an EMA codebook with Laplace smoothing,
k-means++ initialisation from the first batches, dead-code revival from recent encoder
outputs, and usage statistics. Under DDP the statistics are all-reduced and every random
choice (initialisation, revival) is made on rank 0 and broadcast, so that every rank holds
the identical codebook.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

import skelang.ops
import skelang.reference

METRICS = ("euclidean", "cosine")


@dataclasses.dataclass
class QuantizerOutput:
    quantized: Tensor  # (..., D) the codes, with straight-through gradients to the input
    indices: Tensor  # (...) int64 code ids
    distances: Tensor  # (...) distance of each input to its code
    commitment_loss: Tensor  # scalar: commitment * |x - sg(code)|^2


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(*tensors: Tensor) -> None:
    if _distributed():
        for tensor in tensors:
            dist.all_reduce(tensor)


def _broadcast(*tensors: Tensor) -> None:
    if _distributed():
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


def _is_rank_zero() -> bool:
    return not _distributed() or dist.get_rank() == 0


class VectorQuantizer(nn.Module):
    """Quantizes (..., D) vectors to the nearest of `num_codes` codes.

    metric: "euclidean" (squared distance) or "cosine" (inputs and codes on the unit sphere).
    decay: EMA decay of the cluster sizes and sums; commitment: weight of |x - sg(code)|^2.
    kmeans_init: the codebook starts as k-means++ plus `kmeans_iterations` Lloyd steps on the
        first `init_vectors` training vectors (collected over the first batches); until
        then codes are random and not updated.
    dead_threshold: a code whose EMA cluster size falls under this fraction of the average
        code's is revived: replaced by a random recent encoder output (from the last
        `recent_size` training vectors). Relative, so it means the same for any batch size
        and codebook size.
    """

    def __init__(
        self,
        num_codes: int = 512,
        dim: int = 64,
        metric: str = "euclidean",
        decay: float = 0.99,
        commitment: float = 0.25,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iterations: int = 10,
        init_vectors: int | None = None,
        dead_threshold: float = 0.1,
        recent_size: int = 8192,
        backend: str = "cpp",
    ):
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"VectorQuantizer metric must be one of {METRICS}, got {metric!r}")
        if not 0 <= decay < 1:
            raise ValueError(f"VectorQuantizer decay must be in [0, 1), got {decay}")
        if num_codes < 1 or dim < 1:
            raise ValueError(f"VectorQuantizer needs num_codes >= 1 and dim >= 1, got {num_codes} and {dim}")
        self.num_codes, self.dim, self.metric = num_codes, dim, metric
        self.decay, self.commitment, self.epsilon = decay, commitment, epsilon
        self.kmeans_iterations = kmeans_iterations
        self.init_vectors = init_vectors if init_vectors is not None else min(recent_size, 4 * num_codes)
        self.dead_threshold = dead_threshold
        self.ops = skelang.ops if backend == "cpp" else skelang.reference
        codebook = torch.randn(num_codes, dim)
        self.register_buffer("codebook", self._on_sphere(codebook))  # (K, D)
        self.register_buffer("cluster_size", torch.ones(num_codes))  # (K) EMA counts
        self.register_buffer("embed_sum", self.codebook.clone())  # (K, D) EMA sums
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("usage", torch.zeros(num_codes))  # counts since reset_usage()
        self.register_buffer("revived", torch.zeros((), dtype=torch.int64))  # codes revived so far
        self.register_buffer("recent", torch.zeros(recent_size, dim))  # ring of training inputs
        self.register_buffer("recent_seen", torch.zeros((), dtype=torch.int64))  # vectors written

    def _on_sphere(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.metric == "cosine" else x

    # --- the forward pass ---------------------------------------------------------------------
    def forward(self, x: Tensor) -> QuantizerOutput:
        if x.shape[-1] != self.dim:
            raise ValueError(f"VectorQuantizer: inputs must end in D = {self.dim}, got shape {list(x.shape)}")
        flat = self._on_sphere(x.reshape(-1, self.dim))  # (N, D)
        if self.training:
            self._remember(flat.detach())
            if not bool(self.initialized) and self._ready_to_initialize():
                self._kmeans_init(self._recent_vectors(), len(flat))
        indices, distances = self.ops.nearest_code(flat.detach(), self.codebook, self.metric)
        if self.training and bool(self.initialized):
            self._update(flat.detach(), indices)
        code = self.codebook[indices]  # (N, D)
        commitment_loss = self.commitment * F.mse_loss(flat, code)
        quantized = flat + (code - flat).detach()  # straight-through
        shape = x.shape[:-1]
        return QuantizerOutput(quantized.view(x.shape), indices.view(shape), distances.view(shape), commitment_loss)

    def distances(self, x: Tensor) -> Tensor:
        """(..., K) distances of each input to every code (for token smoothing of a few
        segments at a time; the training path never builds this), in float32 whatever the
        autocast: |x|^2 - 2 x.c + |c|^2 loses the small differences in bfloat16."""
        with torch.autocast(x.device.type, enabled=False):
            flat = self._on_sphere(x.reshape(-1, self.dim).float())
            codebook = self.codebook.float()
            if self.metric == "cosine":
                d = 1 - flat @ codebook.T
            else:
                # as torch.cdist computes large inputs (its choice by size would fix an
                # exported model's batch size)
                d = (flat.square().sum(-1, keepdim=True) - 2 * flat @ codebook.T + codebook.square().sum(-1)).clamp_min(
                    0
                )
        return d.view(*x.shape[:-1], self.num_codes)

    # --- the codebook ---------------------------------------------------------------------------
    @torch.no_grad()
    def _update(self, flat: Tensor, indices: Tensor) -> None:
        counts, sums = self.ops.code_statistics(flat, indices, self.num_codes)
        _all_reduce(counts, sums)
        self.ops.ema_codebook_update_(
            self.codebook, self.cluster_size, self.embed_sum, counts, sums, self.decay, self.epsilon
        )
        if self.metric == "cosine":
            self.codebook.copy_(F.normalize(self.codebook, dim=-1))
        self.usage.add_(counts)
        self._revive_dead_codes()

    @torch.no_grad()
    def _remember(self, flat: Tensor) -> None:
        """Keep the latest training inputs in the ring buffer `recent`."""
        size = self.recent.shape[0]
        flat = flat[-size:]
        position = int(self.recent_seen) % size
        first = min(len(flat), size - position)
        self.recent[position : position + first] = flat[:first]
        self.recent[: len(flat) - first] = flat[first:]
        self.recent_seen.add_(len(flat))

    def _ready_to_initialize(self) -> bool:
        """Whether rank 0 has seen init_vectors training vectors: decided there and broadcast,
        so that every rank starts k-means at the same step whatever its share of the batch."""
        ready = torch.tensor(int(self.recent_seen) >= self.init_vectors, device=self.codebook.device)
        _broadcast(ready)
        return bool(ready)

    def _recent_vectors(self) -> Tensor:
        return self.recent[: min(int(self.recent_seen), self.recent.shape[0])]

    @torch.no_grad()
    def _revive_dead_codes(self) -> None:
        dead = self._dead()  # identical on every rank
        count = int(dead.sum())
        if count == 0:
            return
        replacements = torch.empty(count, self.dim, dtype=self.codebook.dtype, device=self.codebook.device)
        if _is_rank_zero():
            pool = self._recent_vectors()
            replacements.copy_(pool[torch.randint(len(pool), (count,), device=pool.device)])
        _broadcast(replacements)
        size = self.cluster_size[~dead].mean() if count < self.num_codes else torch.ones(())
        self.codebook[dead] = replacements
        self.cluster_size[dead] = size
        self.embed_sum[dead] = replacements * size
        self.revived.add_(count)

    @torch.no_grad()
    def _kmeans_init(self, vectors: Tensor, batch_size: int) -> None:
        """k-means++ seeding and Lloyd iterations on `vectors` (N, D), on rank 0; broadcast.
        The cluster sizes start as the clusters' shares of one step's vectors (`batch_size`
        here, summed over the ranks)."""
        step_vectors = torch.tensor(float(batch_size), device=self.codebook.device)
        _all_reduce(step_vectors)
        if _is_rank_zero():
            centres = kmeans_plus_plus(vectors, self.num_codes, self.metric, self.ops)
            for _ in range(self.kmeans_iterations):
                indices, _ = self.ops.nearest_code(vectors, centres, self.metric)
                counts, sums = self.ops.code_statistics(vectors, indices, self.num_codes)
                used = counts > 0
                centres[used] = self._on_sphere(sums[used] / counts[used, None])
            indices, _ = self.ops.nearest_code(vectors, centres, self.metric)
            counts, _ = self.ops.code_statistics(vectors, indices, self.num_codes)
            counts *= float(step_vectors) / len(vectors)  # EMA sizes count one step's vectors
            self.codebook.copy_(centres)
            self.cluster_size.copy_(counts.clamp_min(self.dead_threshold * float(counts.mean())))
        _broadcast(self.codebook, self.cluster_size)
        self.embed_sum.copy_(self.codebook * self.cluster_size[:, None])
        self.initialized.fill_(True)

    def _dead(self) -> Tensor:
        """(K) bool: codes whose EMA size is under dead_threshold x the average code's."""
        return self.cluster_size < self.dead_threshold * self.cluster_size.mean()

    # --- statistics -----------------------------------------------------------------------------
    def reset_usage(self) -> None:
        self.usage.zero_()

    def usage_statistics(self) -> dict:
        """Of the codes chosen since reset_usage(): perplexity (exp of the usage entropy; K
        when uniform), used fraction; and the fraction of codes whose EMA size is under the
        dead threshold (relative to the average code's)."""
        total = float(self.usage.sum())
        probabilities = self.usage / max(total, 1.0)
        entropy = -(probabilities[probabilities > 0] * probabilities[probabilities > 0].log()).sum()
        return {
            "perplexity": math.exp(float(entropy)) if total > 0 else 0.0,
            "used_fraction": float((self.usage > 0).float().mean()),
            "dead_fraction": float(self._dead().float().mean()),
            "revived": int(self.revived),
        }


def kmeans_plus_plus(vectors: Tensor, k: int, metric: str = "euclidean", ops=skelang.ops) -> Tensor:
    """k centres chosen by k-means++ (each next centre drawn with probability proportional to
    the distance to the nearest chosen one), with the global torch generator. With fewer
    distinct vectors than k, the remaining centres are copies of random vectors."""
    N = len(vectors)
    centres = torch.empty(k, vectors.shape[1], dtype=vectors.dtype, device=vectors.device)
    centres[0] = vectors[torch.randint(N, ())]
    nearest = ops.nearest_code(vectors, centres[:1], metric)[1].clamp_min(0)  # (N)
    for i in range(1, k):
        total = float(nearest.sum())
        choice = torch.multinomial(nearest / total, 1)[0] if total > 0 else torch.randint(N, ())
        centres[i] = vectors[choice]
        _, to_new = ops.nearest_code(vectors, centres[i : i + 1], metric)
        nearest = torch.minimum(nearest, to_new.clamp_min(0))
    return centres
