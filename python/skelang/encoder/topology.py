"""Skeleton topologies for graph layers, from a layout's bones."""

from __future__ import annotations

import numpy as np
import torch

from skelang.data.layouts import get_layout


def normalize_columns(adjacency: np.ndarray) -> np.ndarray:
    """A D^-1 with D the in-degree of each column (zero columns stay zero)."""
    degree = adjacency.sum(0)
    return adjacency / np.where(degree > 0, degree, 1)[None, :]


def spatial_partitions(layout_name: str) -> torch.Tensor:
    """(3, V, V) float32: ST-GCN's spatial partitions of the physical graph (as CTR-GCN
    builds them): self-links, inward bones (child to parent) and outward bones, the last two
    normalised by in-degree. Row u, column v: how much joint v feeds joint u."""
    layout = get_layout(layout_name)
    V = layout.num_joints
    inward = np.zeros((V, V), dtype=np.float32)
    for child, parent in layout.bones:
        inward[parent, child] = 1.0  # the parent gathers from its child
    outward = inward.T.copy()
    return torch.from_numpy(
        np.stack([np.eye(V, dtype=np.float32), normalize_columns(inward), normalize_columns(outward)])
    )


def hop_distances(layout_name: str, max_hops: int) -> torch.Tensor:
    """(V, V) int64: graph distance between joints along bones, clipped at max_hops."""
    layout = get_layout(layout_name)
    V = layout.num_joints
    adjacency = layout.adjacency(self_loops=False) > 0
    distance = np.full((V, V), max_hops, dtype=np.int64)
    np.fill_diagonal(distance, 0)
    reach = np.eye(V, dtype=bool)
    for hop in range(1, max_hops):
        reach = reach | (reach.astype(np.int64) @ adjacency.astype(np.int64) > 0)
        distance[(distance == max_hops) & reach] = hop
    return torch.from_numpy(distance)
