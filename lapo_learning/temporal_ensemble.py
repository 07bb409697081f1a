"""ACT's temporal ensembling of action chunks (Zhao et al., RSS 2023, section 3.2).

A policy that predicts the next K actions is queried every control tick, so K chunks overlap on
each tick. The command is their weighted mean, w_i = exp(-decay * i) with i = 0 the oldest chunk:
older predictions weigh more, which smooths the motion without the jerks of executing each chunk
open loop. Ticks are counted in calls; the caller must call once per control period at the rate the
data was recorded at, and `reset` whenever that breaks (a new episode, a skipped tick).
"""
from __future__ import annotations

from collections import deque

import numpy as np


class TemporalEnsemble:
    def __init__(self, chunk_size: int, decay: float = 0.01) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if decay < 0:
            raise ValueError(f"decay must be >= 0, got {decay}")
        self.chunk_size = chunk_size
        self.decay = decay
        self._chunks: deque[np.ndarray] = deque(maxlen=chunk_size)  # newest last; chunk j began j ticks before the newest

    def reset(self) -> None:
        self._chunks.clear()

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        """Add this tick's chunk [K,A]; the command [A] for this tick."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or len(chunk) != self.chunk_size:
            raise ValueError(f"expected a chunk of shape [{self.chunk_size}, A], got {chunk.shape}")
        self._chunks.append(chunk)
        n = len(self._chunks)
        # The oldest held chunk began n-1 ticks ago: its step n-1 is for this tick; the newest's step 0.
        predictions = np.stack([c[n - 1 - i] for i, c in enumerate(self._chunks)])
        weights = np.exp(-self.decay * np.arange(n, dtype=np.float32))
        return (weights @ predictions / weights.sum()).astype(np.float32)
