"""Fixed-rate sampling of the newest message of every input stream (pure Python, no rclpy).

Every stream keeps only its newest message with its stamp (the header stamp, or the arrival time
for messages without one). A sample at time `now` takes the newest message of each stream; when
any stream has no message yet or its newest one is more than `max_age` seconds away from `now`,
the sample is skipped and the offending streams' skip counters are incremented. With
`reject_nonfinite` (the recorder), a sample whose joints, action or reward hold NaN/inf is skipped
too and counted per stream in `nonfinite`. With `newer_than` (the recorder: its episode's start
time), a sample waits, uncounted, until every observation stream (cameras, joints) has a message
stamped after that time, so an episode never opens with what the robot saw before it (a sim reset
while paused, frames still in flight). Messages are converted lazily, so only the messages
that end up in a sample are decoded, each at most once.
This is what ALOHA 2 and LeRobot do (newest-per-stream at a fixed rate), plus per-stream stamps.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from lapo_learning.schema import CAMERAS

# Stream names besides the cameras (which use the names in CAMERAS).
JOINT_STREAM = "joint"
ACTION_STREAM = "action"
REWARD_STREAM = "reward"
# Streams that carry the robot's observation; actions and reward are commands/signals that stay in
# force until replaced (a controller holds its last command), so an episode may start with an older one.
OBSERVATION_STREAMS = (*CAMERAS, JOINT_STREAM)


@dataclass(frozen=True)
class Sample:
    """One synchronised observation (and, when recording, the action and reward at that time)."""

    time: float  # sample time (s) on the node's clock
    images: dict[str, np.ndarray]  # camera name (CAMERAS) -> uint8 HxWx3
    joint: np.ndarray  # float32 [J]
    action: np.ndarray | None  # float32 [A], None when actions are not subscribed
    reward: float | None  # None when no reward stream
    stamps: dict[str, float]  # stream -> stamp (s) of the message used


class _Entry:
    __slots__ = ("raw", "stamp", "arrival", "value", "converted")

    def __init__(self, raw: Any, stamp: float, arrival: float) -> None:
        self.raw, self.stamp, self.arrival = raw, stamp, arrival
        self.value: Any = None
        self.converted = False


class StreamCache:
    """The newest message of one stream, its stamp and arrival time; converted on first use.

    Thread-safe: subscription callbacks may update it while a timer samples it.
    """

    def __init__(self, name: str, convert: Callable[[Any], Any] = lambda raw: raw) -> None:
        self.name = name
        self._convert = convert
        self._lock = threading.Lock()
        self._entry: _Entry | None = None
        self.received = 0

    def update(self, raw: Any, stamp: float | None, arrival: float) -> None:
        """Store a message; a missing or zero stamp means "unstamped": the arrival time is used."""
        entry = _Entry(raw, stamp if stamp else arrival, arrival)
        with self._lock:
            self._entry = entry
            self.received += 1

    def newest(self) -> tuple[Any, float] | None:
        """(converted value, stamp) of the newest message, or None before the first message."""
        with self._lock:
            entry = self._entry
        if entry is None:
            return None
        if not entry.converted:  # a message sampled twice (slow stream) is converted once
            entry.value = self._convert(entry.raw)
            entry.raw = None
            entry.converted = True
        return entry.value, entry.stamp

    def stamp(self) -> float | None:
        with self._lock:
            return None if self._entry is None else self._entry.stamp


class StreamSampler:
    """Samples the newest message of each stream; skips (and counts) when one is missing or stale.

    `caches` maps stream names to caches: the camera names of CAMERAS and JOINT_STREAM are
    required, ACTION_STREAM and REWARD_STREAM optional.
    """

    def __init__(self, caches: Mapping[str, StreamCache], max_age: float, reject_nonfinite: bool = False) -> None:
        required = set(CAMERAS) | {JOINT_STREAM}
        missing = required - set(caches)
        if missing:
            raise ValueError(f"StreamSampler needs streams {sorted(missing)}")
        unknown = set(caches) - required - {ACTION_STREAM, REWARD_STREAM}
        if unknown:
            raise ValueError(f"StreamSampler got unknown streams {sorted(unknown)}")
        if not max_age > 0:
            raise ValueError(f"max_age must be > 0 s, got {max_age}")
        self.caches = dict(caches)
        self.max_age = float(max_age)
        self.reject_nonfinite = reject_nonfinite
        self.skipped: Counter[str] = Counter()  # stream -> samples skipped because it was stale/missing
        self.nonfinite: Counter[str] = Counter()  # stream -> samples skipped because of its NaN/inf
        self.skipped_samples = 0  # samples skipped (a sample with two bad streams counts once)
        self.sampled = 0

    def stale_streams(self, now: float) -> list[str]:
        """Streams without a message, or whose newest message is more than max_age from `now`.

        A stamp ahead of `now` by more than max_age (publisher on another clock) is stale too.
        """
        return [name for name in self.caches if self.problem(name, now) is not None]

    def problem(self, name: str, now: float) -> str | None:
        """Why stream `name` blocks a sample at `now` (no message, too old, ahead), or None."""
        stamp = self.caches[name].stamp()
        if stamp is None:
            return "no message received"
        age = now - stamp
        if age > self.max_age:
            return f"newest message {age:.2f} s old (max_age {self.max_age:g} s)"
        if -age > self.max_age:
            return f"stamped {-age:.2f} s ahead of this node's clock (max_age {self.max_age:g} s)"
        return None

    def sample(self, now: float, newer_than: float | None = None) -> Sample | None:
        """The sample at `now`, or None (skip counted) when a stream is missing or stale, or
        (with reject_nonfinite) when its joints, action or reward are not finite; or None, not
        counted, while an observation stream's newest message is stamped at or before `newer_than`."""
        stale = self.stale_streams(now)
        if stale:
            self.skipped.update(stale)
            self.skipped_samples += 1
            return None
        if newer_than is not None and any(self.caches[name].stamp() <= newer_than for name in OBSERVATION_STREAMS):
            return None
        values: dict[str, Any] = {}
        stamps: dict[str, float] = {}
        for name, cache in self.caches.items():
            newest = cache.newest()
            assert newest is not None  # checked by stale_streams; caches never forget a message
            values[name], stamps[name] = newest
        if self.reject_nonfinite:
            bad = [name for name in (JOINT_STREAM, ACTION_STREAM, REWARD_STREAM)
                   if name in values and not np.isfinite(values[name]).all()]
            if bad:
                self.nonfinite.update(bad)
                self.skipped_samples += 1
                return None
        self.sampled += 1
        return Sample(
            time=now,
            images={cam: values[cam] for cam in CAMERAS},
            joint=values[JOINT_STREAM],
            action=values.get(ACTION_STREAM),
            reward=None if REWARD_STREAM not in values else float(values[REWARD_STREAM]),
            stamps=stamps,
        )
