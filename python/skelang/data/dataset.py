"""Datasets for training and evaluation: sequences (a list, a cache, the synthetic set)
through a Preprocess pipeline into tensors, and DataLoaders whose workers persist across
epochs within the job's thread budget (skelang.threads)."""

from __future__ import annotations

from collections.abc import Sequence as SequenceOf

import numpy as np
import torch

from skelang.data.preprocess import Preprocess
from skelang.data.sequence import Sequence
from skelang.threads import worker_init


class SkeletonDataset(torch.utils.data.Dataset):
    """Item i -> (input (C * streams, T, V, M) float32 tensor, label int).

    With `train`, the random crop and augmentations of `preprocess` draw from a generator
    seeded by (seed, epoch, i): an item is the same whichever worker makes it, and a resumed
    run sees the same data. Call set_epoch at the start of each epoch. With `repeat` k the
    dataset holds every sequence k times (item i is sequence i mod N, with its own random
    draws), as CTR-GCN's NW-UCLA feeder makes one epoch of 5 passes. With `num_bodies`, every
    input has that many bodies: a sequence with fewer gets absent (zero) bodies, as the NTU
    and Kinetics readers pad one-person clips; one with more is a ValueError naming it (a
    model takes a fixed number of bodies, and dropping people would change the sample).
    """

    def __init__(
        self,
        sequences: SequenceOf[Sequence],
        preprocess: Preprocess,
        train: bool = False,
        seed: int = 0,
        repeat: int = 1,
        num_bodies: int | None = None,
    ):
        if repeat < 1:
            raise ValueError(f"SkeletonDataset.repeat must be a positive integer, got {repeat}")
        self.sequences = sequences
        self.preprocess = preprocess
        self.train = train
        self.seed = seed
        self.repeat = repeat
        self.num_bodies = num_bodies
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sequences) * self.repeat

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """Item i of the current epoch, or (epoch, i): the form EpochBatchSampler gives, so that
        persistent DataLoader workers (which hold a copy of the dataset) know the epoch."""
        epoch, i = item if isinstance(item, tuple) else (self.epoch, item)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        i %= len(self)
        sequence = self.sequences[i % len(self.sequences)]
        rng = np.random.default_rng([self.seed, epoch, i]) if self.train else None
        label = -1 if sequence.label is None else sequence.label
        inputs = torch.from_numpy(self.preprocess(sequence, rng))
        if self.num_bodies is not None and inputs.shape[-1] != self.num_bodies:
            if inputs.shape[-1] > self.num_bodies:
                raise ValueError(
                    f"{sequence.sample_id(i % len(self.sequences))}: {inputs.shape[-1]} bodies; the model "
                    f"takes {self.num_bodies}"
                )
            inputs = torch.nn.functional.pad(inputs, (0, self.num_bodies - inputs.shape[-1]))
        return inputs, label

    @property
    def labels(self) -> np.ndarray:
        """(N,) the labels of the distinct sequences (-1: unlabelled)."""
        return np.array([-1 if s.label is None else s.label for s in self.sequences])


def shard(items: list, rank: int, world: int) -> list:
    """Part `rank` of `world` contiguous parts of `items` whose lengths differ by at most one
    (data-parallel training: each rank's part of a global batch; the first parts are the
    longer ones)."""
    size, longer = divmod(len(items), world)
    start = rank * size + min(rank, longer)
    return items[start : start + size + (rank < longer)]


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of (epoch, index) over a dataset of `size` items, in an order fixed by (seed,
    epoch) (shuffled) or in order; set_epoch before each pass.

    With `world` > 1 (data-parallel training, skelang.runs.distributed) every rank draws the
    same global batches of `batch_size` and keeps its own contiguous part of each (see
    shard): the ranks together see exactly the batches one process sees, except a last batch
    with fewer items than ranks, which is left out (`dropped` counts its items). len() is the
    number of global batches.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world: int = 1,
    ):
        if batch_size < world:
            raise ValueError(f"the batch size ({batch_size}) must be at least the number of processes ({world})")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.epoch, self.rank, self.world = epoch, rank, world
        last = size % batch_size
        self.dropped = last if drop_last or last < world else 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-(self.size - self.dropped) // self.batch_size)

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        for start in range(0, self.size - self.dropped, self.batch_size):
            part = shard(order[start : start + self.batch_size], self.rank, self.world)
            yield [(self.epoch, i) for i in part]


def make_loader(
    dataset: SkeletonDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int | None = 0,
    drop_last: bool = False,
    rank: int = 0,
    world: int = 1,
) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` with an EpochBatchSampler (set its epoch with
    loader.batch_sampler.set_epoch; `rank` and `world` shard each batch for data-parallel
    training): its workers persist across epochs and compute on one thread each
    (skelang.threads); 0 workers preprocess in this process."""
    num_workers = num_workers or 0
    sampler = EpochBatchSampler(len(dataset), batch_size, shuffle, seed, dataset.epoch, drop_last, rank, world)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=worker_init if num_workers else None,
        pin_memory=False,
    )
