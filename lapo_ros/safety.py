"""Safety filter between the policy's raw output and the joint command that is published.

Pure numpy (no rclpy), so every rule is tested without ROS. The node is a thin adapter: it feeds
each tick's action, the measured joint positions and the time in, and publishes only what comes
out.

Rules, applied in this order each tick:
1. stale or non-finite input, failed inference: handled before the filter by the node, which then
   calls `reset` (nothing published; the next command starts again from the measured position);
2. tracking watchdog: when the last published command has stayed farther than
   `tracking_max_error` from a joint's measured position for longer than `tracking_timeout`, the
   arm is not following: nothing is published, and the filter stays tripped until `rearm`;
3. non-finite action (NaN/inf) -> nothing is published that tick, and the filter resets;
4. clamp to per-joint limits [lower, upper];
5. rate limit: move at most `max_delta_per_tick` from the previous command, or, on the first tick
   after start/enable/any paused tick, from the measured joint position.
Rule 5 moves on a straight line from the reference towards the clamped target, so a command stays
within the limits whenever its reference does; a robot measured outside them is brought back
gradually instead of jumping to the limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lapo_learning.outliers import ABSOLUTE_BOUND, ROBUST_PERCENTILE
from lapo_learning.schema import DatasetStatistics


@dataclass
class SafetyConfig:
    """Per-command-joint limits, the per-tick change bound (command units) and the tracking watchdog."""

    lower: np.ndarray
    upper: np.ndarray
    max_delta_per_tick: float
    tracking_max_error: float  # command units (rad)
    tracking_timeout: float  # s

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
        for name in ("max_delta_per_tick", "tracking_max_error", "tracking_timeout"):
            if not getattr(self, name) > 0:  # also rejects NaN
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])


def limits_from_training(action_low: np.ndarray, action_high: np.ndarray, margin: float
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The range of the training actions widened by `margin` x range each side.

    The policy was only ever shown commands inside this range, so anything far outside it is a
    model failure, not a demonstrated motion.
    """
    if margin < 0:
        raise ValueError(f"limit margin must be >= 0, got {margin}")
    lo = np.asarray(action_low, dtype=np.float64)
    hi = np.asarray(action_high, dtype=np.float64)
    span = hi - lo
    return lo - margin * span, hi + margin * span


@dataclass(frozen=True)
class JointLimits:
    """The limits in force and where they come from (said at start-up)."""

    lower: np.ndarray
    upper: np.ndarray
    source: str
    from_training: bool

    def describe(self, names: Sequence[str]) -> str:
        return ", ".join(f"{n} [{lo:.4g}, {hi:.4g}]" for n, lo, hi in zip(names, self.lower, self.upper))


def resolve_limits(names: Sequence[str], configured_lower: Sequence[float], configured_upper: Sequence[float],
                   stats: DatasetStatistics, margin: float) -> JointLimits:
    """Configured limits when given (one per command joint), else the training actions' robust range
    widened by `margin`. ValueError names the problem: a wrong count, or training-derived limits
    beyond any plausible joint position (old checkpoints store only the raw extremes, which one
    outlier in the data sets)."""
    if configured_lower or configured_upper:
        for label, values in (("joint_lower_limits", configured_lower), ("joint_upper_limits", configured_upper)):
            if len(values) != len(names):
                raise ValueError(f"'{label}' has {len(values)} entries, expected {len(names)} "
                                 f"(one per action: {list(names)})")
        return JointLimits(np.asarray(configured_lower, dtype=np.float64),
                           np.asarray(configured_upper, dtype=np.float64),
                           "configured (joint_lower_limits/joint_upper_limits)", from_training=False)
    if stats.action_low is not None and stats.action_high is not None:
        low, high = stats.action_low, stats.action_high
        what = f"the {ROBUST_PERCENTILE:g}-{100 - ROBUST_PERCENTILE:g}th percentiles of the training actions"
    else:
        low, high = stats.action_min, stats.action_max
        what = ("the min/max of the training actions (the checkpoint predates robust statistics: "
                "one outlier in the data widens these)")
    lower, upper = limits_from_training(low, high, margin)
    implausible = [n for n, lo, hi in zip(names, lower, upper) if max(abs(lo), abs(hi)) > ABSOLUTE_BOUND]
    if implausible:
        raise ValueError(f"default limits from {what} are implausible for {implausible} "
                         f"(beyond +-{ABSOLUTE_BOUND:g}): set 'joint_lower_limits' and 'joint_upper_limits'")
    return JointLimits(lower, upper, f"training data: {what}, widened by limit_margin {margin:g} of the range",
                       from_training=True)


@dataclass(frozen=True)
class TrackingFault:
    """The joints (indices into the command joints) whose measured position did not follow."""

    joints: tuple[int, ...]
    errors: tuple[float, ...]  # |last command - measured| of each when it tripped
    duration: float  # s the longest of them had been beyond the bound

    def describe(self, names: Sequence[str], max_error: float) -> str:
        joints = ", ".join(f"{names[j]} ({e:.3g} from its command)" for j, e in zip(self.joints, self.errors))
        return (f"tracking watchdog: measured position of {joints} farther than tracking_max_error "
                f"{max_error:g} for {self.duration:.2f} s: the arm is not following; stopped publishing "
                "until re-enabled")


class TrackingWatchdog:
    """Per joint, how long the published command has been farther than `max_error` from the
    measured position; a fault once that lasts longer than `timeout`."""

    def __init__(self, max_error: float, timeout: float) -> None:
        self.max_error = max_error
        self.timeout = timeout
        self._since: np.ndarray | None = None  # per joint: time the error went beyond the bound, NaN within

    def reset(self) -> None:
        self._since = None

    def check(self, command: np.ndarray, measured: np.ndarray, now: float) -> TrackingFault | None:
        error = np.abs(command - measured)
        beyond = error > self.max_error
        since = np.full(error.shape, np.nan) if self._since is None else self._since
        # A clock that went back (a restarted sim) restarts the count rather than freezing it.
        since = np.where(beyond, np.fmin(since, now), np.nan)
        self._since = since
        duration = np.where(beyond, now - since, 0.0)
        late = np.flatnonzero(duration > self.timeout)
        if late.size == 0:
            return None
        return TrackingFault(tuple(int(j) for j in late), tuple(float(error[j]) for j in late),
                             float(duration.max()))


@dataclass
class SafetyResult:
    """What to publish this tick (None: nothing) and what the filter changed."""

    command: np.ndarray | None
    n_clamped: int = 0  # dimensions moved by the joint limits
    n_rate_limited: int = 0  # dimensions moved by max_delta_per_tick
    rejected_nonfinite: bool = False
    tracking_fault: TrackingFault | None = None


class SafetyFilter:
    """Stateful per-tick filter: the last published command (rate limit reference) and the watchdog."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
        self.watchdog = TrackingWatchdog(config.tracking_max_error, config.tracking_timeout)
        self._last: np.ndarray | None = None
        self.fault: TrackingFault | None = None  # set when the watchdog tripped, until `rearm`

    def reset(self) -> None:
        """Output paused: the next command is rate limited from the measured position again."""
        self._last = None
        self.watchdog.reset()

    def rearm(self) -> None:
        """Re-enabled by an operator: clear a tracking fault and start again from the measurement."""
        self.fault = None
        self.reset()

    def apply(self, action: np.ndarray, measured: Sequence[float] | np.ndarray, now: float) -> SafetyResult:
        """Filter one raw action; `measured`: the current (finite) positions of the command joints,
        `now`: the time in seconds on the clock that drives the ticks."""
        cfg = self.config
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape[0] != cfg.dim:
            raise ValueError(f"policy action has {action.shape[0]} entries, the limits {cfg.dim}")
        measured = np.asarray(measured, dtype=np.float64).reshape(-1)
        if measured.shape[0] != cfg.dim or not np.isfinite(measured).all():
            raise ValueError(f"measured joint positions must be {cfg.dim} finite values, got {measured.tolist()}")
        if self.fault is None and self._last is not None:
            self.fault = self.watchdog.check(self._last, measured, now)
        if self.fault is not None:
            self.reset()
            return SafetyResult(None, tracking_fault=self.fault)
        if not np.isfinite(action).all():
            self.reset()
            return SafetyResult(None, rejected_nonfinite=True)
        target = np.clip(action, cfg.lower, cfg.upper)
        n_clamped = int(np.count_nonzero(target != action))
        reference = measured if self._last is None else self._last
        step = target - reference
        limited = np.clip(step, -cfg.max_delta_per_tick, cfg.max_delta_per_tick)
        command = reference + limited
        self._last = command
        return SafetyResult(command, n_clamped=n_clamped,
                            n_rate_limited=int(np.count_nonzero(limited != step)))
