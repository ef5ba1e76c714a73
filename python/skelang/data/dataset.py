"""Datasets for training and evaluation: sequences (a list, a cache, the synthetic set)
through a Preprocess pipeline into tensors, and a DataLoader that keeps every core busy."""

from __future__ import annotations

import os
from collections.abc import Sequence as SequenceOf

import numpy as np
import torch

from skelang.data.preprocess import Preprocess
from skelang.data.sequence import Sequence


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

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} items")
        i %= len(self)
        sequence = self.sequences[i % len(self.sequences)]
        rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
        label = -1 if sequence.label is None else sequence.label
        return torch.from_numpy(self.preprocess(sequence, rng)), label

    @property
    def labels(self) -> np.ndarray:
        """(N,) the labels of the distinct sequences (-1: unlabelled)."""
        return np.array([-1 if s.label is None else s.label for s in self.sequences])


def make_loader(
    dataset: SkeletonDataset,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int | None = None,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader with one worker process per core (preprocessing runs in the workers),
    and a shuffling order fixed by (seed, epoch)."""
    if num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    generator = torch.Generator().manual_seed(seed + 1_000_003 * dataset.epoch)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=False,
    )
