"""skelang.stats: the bootstrap interval shared by ablation sweeps and the faithfulness of
explanations."""

from __future__ import annotations

import numpy as np
import pytest

from skelang.stats import bootstrap_interval


def test_bootstrap_interval_of_a_mean():
    assert bootstrap_interval([0.25] * 10) == (0.25, 0.25, 0.25)
    values = np.random.default_rng(0).normal(1.0, 2.0, 400)
    mean, low, high = bootstrap_interval(values)
    assert mean == pytest.approx(values.mean())
    standard_error = values.std() / np.sqrt(len(values))  # the normal interval's half width is 1.96 se
    assert low == pytest.approx(mean - 1.96 * standard_error, abs=0.3 * standard_error)
    assert high == pytest.approx(mean + 1.96 * standard_error, abs=0.3 * standard_error)
    assert bootstrap_interval(values) == bootstrap_interval(values)  # a fixed seed
    narrower = bootstrap_interval(values, level=0.5)
    assert low < narrower[1] < narrower[2] < high
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_interval([])
