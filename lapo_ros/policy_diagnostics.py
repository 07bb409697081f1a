"""Rolling statistics of the policy loop: inference latency, achieved rate, publish jitter, counts,
and the health level they give.

Pure Python/numpy (no rclpy): the node feeds it and turns `summary()` and `loop_health` into a
DiagnosticArray and a log line; `bench/policy_latency.py` uses the same class, so the bench reports
what the node would.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np


@dataclass
class LoopSummary:
    latency_p50_ms: float
    latency_p99_ms: float
    achieved_rate_hz: float
    period_jitter_p99_ms: float  # p99 of |publish period - nominal period|
    counts: dict[str, int]


class LoopStatistics:
    """Latencies and publish times over the last `window` ticks, plus lifetime counters.

    Counter names used by the node: published, stale_skips, nonfinite_joints (measured joints not
    finite), nonfinite_rejections (policy output not finite), errors (inference failed),
    tracking_faults, clamped (ticks where the limits moved a dimension), rate_limited, late_ticks
    (the timer fired late: TickGap).
    """

    COUNTERS = ("published", "stale_skips", "nonfinite_joints", "nonfinite_rejections", "errors",
                "tracking_faults", "clamped", "rate_limited", "late_ticks")
    # Ticks whose output was refused (not merely skipped for want of input).
    REJECTIONS = ("nonfinite_joints", "nonfinite_rejections", "errors")

    def __init__(self, nominal_rate_hz: float, window: int = 500, rate_window_s: float = 5.0) -> None:
        if nominal_rate_hz <= 0 or window < 2 or rate_window_s <= 0:
            raise ValueError("nominal_rate_hz and rate_window_s must be > 0 and window >= 2")
        self.nominal_period = 1.0 / nominal_rate_hz
        self.rate_window_s = rate_window_s
        self._latencies: deque[float] = deque(maxlen=window)
        self._publish_times: deque[float] = deque(maxlen=window)
        self._start: float | None = None
        self.counts: Counter[str] = Counter({name: 0 for name in self.COUNTERS})

    def add_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)

    def add_publish(self, t: float) -> None:
        """A command went out at time `t` (seconds, on the clock that drives the timer)."""
        self._publish_times.append(t)
        self.counts["published"] += 1

    def start(self, t: float) -> None:
        """Publishing is meant to run from `t` (enabled): forget earlier publish times, so the
        intended pause before does not count. Gaps after `t` (stale input) do count."""
        self._publish_times.clear()
        self._start = t

    def count(self, name: str, n: int = 1) -> None:
        if name not in self.COUNTERS:
            raise KeyError(f"unknown counter {name!r}; known: {self.COUNTERS}")
        self.counts[name] += n

    def latency_percentiles_ms(self) -> tuple[float, float]:
        if not self._latencies:
            return float("nan"), float("nan")
        p50, p99 = np.percentile(np.asarray(self._latencies), [50, 99]) * 1e3
        return float(p50), float(p99)

    def periods(self) -> np.ndarray:
        """Intervals between consecutive publishes (a stale gap shows up as one long interval)."""
        return np.diff(np.asarray(self._publish_times))

    def achieved_rate_hz(self, now: float) -> float:
        """Publishes per second over the last rate_window_s before `now` (or since `start`)."""
        if self._start is None or now <= self._start:
            return 0.0
        since = now - min(self.rate_window_s, now - self._start)
        n = sum(1 for t in self._publish_times if since < t <= now)
        return n / (now - since)

    def period_jitter_p99_ms(self) -> float:
        periods = self.periods()
        if periods.size == 0:
            return float("nan")
        return float(np.percentile(np.abs(periods - self.nominal_period), 99) * 1e3)

    def summary(self, now: float) -> LoopSummary:
        p50, p99 = self.latency_percentiles_ms()
        return LoopSummary(p50, p99, self.achieved_rate_hz(now), self.period_jitter_p99_ms(),
                           dict(self.counts))

    def log_line(self, now: float) -> str:
        s = self.summary(now)
        counts = ", ".join(f"{k}={v}" for k, v in s.counts.items())
        return (f"inference p50={s.latency_p50_ms:.1f} ms p99={s.latency_p99_ms:.1f} ms, "
                f"rate={s.achieved_rate_hz:.1f} Hz (nominal {1.0 / self.nominal_period:.1f}), "
                f"period jitter p99={s.period_jitter_p99_ms:.1f} ms, {counts}")


# diagnostic_msgs/DiagnosticStatus levels, as plain ints so that this module needs no ROS.
OK, WARN, ERROR = 0, 1, 2


class TickGap:
    """Whether a control tick came so late that temporal ensembling no longer lines up.

    The ensemble counts ticks in calls (one per control period); when the timer stalls (a busy
    executor, a starved CPU), the next call would take the chunks' steps meant for the ticks that
    never fired. A tick more than (1 + tolerance) periods after the previous one is late (by default:
    at least one tick missed); the node then restarts the ensemble from this tick's chunk. On a sim
    clock a 30 Hz timer fires 20 or 40 ms apart on 20 ms steps (1.2 periods), which is not late.
    """

    def __init__(self, period_s: float, tolerance: float = 1.0) -> None:
        if period_s <= 0 or tolerance <= 0:
            raise ValueError("period_s and tolerance must be > 0")
        self.limit_s = (1.0 + tolerance) * period_s
        self._last: float | None = None

    def reset(self) -> None:
        """Forget the previous tick (on enable: the pause before is intended)."""
        self._last = None

    def late(self, t: float) -> bool:
        """Record a tick at time `t` (s); True if it came late after the previous one."""
        late = self._last is not None and t - self._last > self.limit_s
        self._last = t
        return late


def loop_health(enabled: bool, fault: str | None, recent: dict[str, int], latency_p99_ms: float,
                period_ms: float) -> tuple[int, str]:
    """Level and message of the control loop; `recent`: the counters' increase since the last report.

    A tripped watchdog is an ERROR until re-enabled; ticks rejected since the last report are a WARN,
    an ERROR when not one command went out meanwhile.
    """
    if fault:
        return ERROR, fault
    if not enabled:
        return OK, "disabled"
    rejected = {k: recent[k] for k in LoopStatistics.REJECTIONS if recent[k]}
    if rejected:
        what = ", ".join(f"{k}={v}" for k, v in rejected.items())
        if recent["published"] == 0:
            return ERROR, f"every tick rejected, nothing published ({what})"
        return WARN, f"ticks rejected ({what})"
    if latency_p99_ms > period_ms:
        return WARN, "inference p99 exceeds the control period"
    if recent["stale_skips"]:
        return WARN, "ticks skipped: stale or missing input"
    if recent["late_ticks"]:
        return WARN, "control timer fired late: action ensemble restarted"
    return OK, "running"
