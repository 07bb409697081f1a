"""ACT's temporal ensembling: which predictions are averaged on each tick, their weights, reset."""
from __future__ import annotations

import numpy as np
import pytest

from lapo_learning.temporal_ensemble import TemporalEnsemble


def chunk(tick: int, k: int = 3) -> np.ndarray:
    """A chunk made at `tick` whose step j predicts 100*tick + (tick + j): every entry is traceable."""
    return np.array([[100.0 * tick + tick + j, -(100.0 * tick + tick + j)] for j in range(k)], np.float32)


def test_averages_the_overlapping_steps_for_each_tick():
    ens = TemporalEnsemble(3, decay=0.0)
    np.testing.assert_allclose(ens(chunk(0)), chunk(0)[0])
    np.testing.assert_allclose(ens(chunk(1)), (chunk(0)[1] + chunk(1)[0]) / 2)
    np.testing.assert_allclose(ens(chunk(2)), (chunk(0)[2] + chunk(1)[1] + chunk(2)[0]) / 3)
    # chunk 0 has no step for tick 3 any more: only chunks 1..3 count
    np.testing.assert_allclose(ens(chunk(3)), (chunk(1)[2] + chunk(2)[1] + chunk(3)[0]) / 3, rtol=1e-6)


def test_older_predictions_weigh_more():
    decay = 0.5
    ens = TemporalEnsemble(3, decay=decay)
    ens(chunk(0))
    w = np.exp(-decay * np.arange(2))  # oldest first
    np.testing.assert_allclose(ens(chunk(1)), (w[0] * chunk(0)[1] + w[1] * chunk(1)[0]) / w.sum(), rtol=1e-6)


def test_agreeing_chunks_reproduce_the_trajectory():
    trajectory = np.linspace(0.0, 1.0, 20, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
    ens = TemporalEnsemble(5)
    for t in range(15):
        np.testing.assert_allclose(ens(trajectory[t:t + 5]), trajectory[t], rtol=1e-6)


def test_reset_forgets_earlier_chunks():
    ens = TemporalEnsemble(3, decay=0.0)
    ens(chunk(0))
    ens(chunk(1))
    ens.reset()
    np.testing.assert_allclose(ens(chunk(7)), chunk(7)[0])


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="chunk_size"):
        TemporalEnsemble(0)
    with pytest.raises(ValueError, match="decay"):
        TemporalEnsemble(3, decay=-1.0)
    with pytest.raises(ValueError, match=r"shape \[3, A\], got \(2, 2\)"):
        TemporalEnsemble(3)(np.zeros((2, 2)))
