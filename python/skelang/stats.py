"""Small statistics shared by the layers above: a bootstrap interval of a mean."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_DRAWS = 2000


def bootstrap_interval(
    values, draws: int = BOOTSTRAP_DRAWS, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high) of `values` (N,): their mean and the percentile bootstrap interval of
    the mean at `level` (Efron & Tibshirani, An Introduction to the Bootstrap, 1993, ch. 13),
    the N values resampled with replacement `draws` times from a fixed seed. A paired
    comparison passes the per-sample differences. ValueError when `values` is empty."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (draws, values.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
