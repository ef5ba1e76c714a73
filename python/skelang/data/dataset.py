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
    draws), as CTR-GCN's NW-UCLA feeder makes one epoch of 5 passes.
    """

    def __init__(
        self,
        sequences: SequenceOf[Sequence],
        preprocess: Preprocess,
        train: bool = False,
        seed: int = 0,
        repeat: int = 1,
    ):
        if repeat < 1:
            raise ValueError(f"SkeletonDataset.repeat must be a positive integer, got {repeat}")
        self.sequences = sequences
        self.preprocess = preprocess
        self.train = train
        self.seed = seed
        self.repeat = repeat
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sequences) * self.repeat

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """Item i of the current epoch, or (epoch, i): the form EpochSampler gives, so that
        persistent DataLoader workers (which hold a copy of the dataset) know the epoch."""
        epoch, i = item if isinstance(item, tuple) else (self.epoch, item)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        i %= len(self)
        sequence = self.sequences[i % len(self.sequences)]
        rng = np.random.default_rng([self.seed, epoch, i]) if self.train else None
        label = -1 if sequence.label is None else sequence.label
        return torch.from_numpy(self.preprocess(sequence, rng)), label

    @property
    def labels(self) -> np.ndarray:
        """(N,) the labels of the distinct sequences (-1: unlabelled)."""
        return np.array([-1 if s.label is None else s.label for s in self.sequences])


class EpochSampler(torch.utils.data.Sampler):
    """(epoch, index) for every item of a dataset, in an order fixed by (seed, epoch)
    (shuffled) or in order; set_epoch before each pass."""

    def __init__(self, dataset: SkeletonDataset, shuffle: bool, seed: int = 0):
        self.size, self.shuffle, self.seed, self.epoch = len(dataset), shuffle, seed, dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        if not self.shuffle:
            return ((self.epoch, i) for i in range(self.size))
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        return ((self.epoch, int(i)) for i in torch.randperm(self.size, generator=generator))


def make_loader(
    dataset: SkeletonDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int | None = 0,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` with an EpochSampler (set its epoch with
    loader.sampler.set_epoch): its workers persist across epochs and compute on one thread
    each (skelang.threads); 0 workers preprocess in this process."""
    num_workers = num_workers or 0
    sampler = EpochSampler(dataset, shuffle, seed)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        worker_init_fn=worker_init if num_workers else None,
        pin_memory=False,
    )
