"""Safety filter between the policy's raw output and the joint command that is published.

Pure numpy (no rclpy), so every rule is tested without ROS. The node is a thin adapter: it feeds
each tick's action, the measured joint positions and the inputs' ages in, and publishes only what
comes out.

Rules, applied in this order each tick:
1. stale input: handled before the filter by the sampler shared with the recorder (no sample ->
   nothing published; the node then calls `reset`, so commands resume from the measured position);
2. non-finite action (NaN/inf) -> nothing is published that tick, counted;
3. clamp to per-joint limits [lower, upper];
4. rate limit: move at most `max_delta_per_tick` from the previous command, or, on the first tick
   after start/enable/stale/reset, from the measured joint position.
Rule 4 moves on a straight line from the reference towards the clamped target, so a command stays
within the limits whenever its reference does; a robot measured outside them is brought back
gradually instead of jumping to the limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class SafetyConfig:
    """Per-command-joint limits and the per-tick change bound (same units as the commands)."""

    lower: np.ndarray
    upper: np.ndarray
    max_delta_per_tick: float

    def __post_init__(self) -> None:
        self.lower = np.asarray(self.lower, dtype=np.float64)
        self.upper = np.asarray(self.upper, dtype=np.float64)
        if self.lower.ndim != 1 or self.lower.shape != self.upper.shape:
            raise ValueError(f"joint limits: lower {self.lower.shape} and upper {self.upper.shape} "
                             "must be 1-D with one entry per command joint")
        if not (np.isfinite(self.lower).all() and np.isfinite(self.upper).all()):
            raise ValueError("joint limits must be finite")
        bad = np.flatnonzero(self.lower > self.upper)
        if bad.size:
            raise ValueError(f"joint limits: lower > upper at index {bad.tolist()}")
        if not self.max_delta_per_tick > 0:  # also rejects NaN
            raise ValueError(f"max_delta_per_tick must be > 0, got {self.max_delta_per_tick}")

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])


def limits_from_training(action_min: np.ndarray, action_max: np.ndarray, margin: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Default limits: the range of the training actions widened by `margin` x range each side.

    The policy was only ever shown commands inside this range, so anything far outside it is a
    model failure, not a demonstrated motion.
    """
    if margin < 0:
        raise ValueError(f"limit margin must be >= 0, got {margin}")
    lo = np.asarray(action_min, dtype=np.float64)
    hi = np.asarray(action_max, dtype=np.float64)
    span = hi - lo
    return lo - margin * span, hi + margin * span


@dataclass
class SafetyResult:
    """What to publish this tick (None: nothing) and what the filter changed."""

    command: np.ndarray | None
    n_clamped: int = 0  # dimensions moved by the joint limits
    n_rate_limited: int = 0  # dimensions moved by max_delta_per_tick
    rejected_nonfinite: bool = False


class SafetyFilter:
    """Stateful per-tick filter: remembers the last published command for the rate limit."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self._last: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the last command: the next one is rate limited against the measured position."""
        self._last = None

    def apply(self, action: np.ndarray, measured: Sequence[float] | np.ndarray) -> SafetyResult:
        """Filter one raw action; `measured` are the current positions of the command joints."""
        cfg = self.config
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape[0] != cfg.dim:
            raise ValueError(f"policy action has {action.shape[0]} entries, the limits {cfg.dim}")
        if not np.isfinite(action).all():
            return SafetyResult(None, rejected_nonfinite=True)
        target = np.clip(action, cfg.lower, cfg.upper)
        n_clamped = int(np.count_nonzero(target != action))
        if self._last is not None:
            reference = self._last
        else:
            reference = np.asarray(measured, dtype=np.float64).reshape(-1)
            if reference.shape[0] != cfg.dim or not np.isfinite(reference).all():
                raise ValueError(f"measured joint positions must be {cfg.dim} finite values, "
                                 f"got {reference.tolist()}")
        step = target - reference
        limited = np.clip(step, -cfg.max_delta_per_tick, cfg.max_delta_per_tick)
        command = reference + limited
        self._last = command
        return SafetyResult(command, n_clamped=n_clamped,
                            n_rate_limited=int(np.count_nonzero(limited != step)))
