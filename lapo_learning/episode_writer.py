"""Incremental, crash-safe writer of one recorded episode as an HDF5 file (no ROS needed).

The file follows `lapo_learning.dataset_format` (the seed layout plus timeouts, timestamps,
stamps/<stream> and the metadata attributes). It is created on the first sample (never over an
existing file) with `complete=False`, grows one row per sample in resizable datasets, and is
written in HDF5 SWMR mode (`libver='latest'`) and flushed every `flush_every` samples, so a reader
can follow it and a SIGKILL leaves a readable file holding the rows flushed so far. A clean
`close()` sets the episode's end flags and `complete=True`; `abort()` keeps `complete=False`, which
the training loader skips. A write error (e.g. a full disk) raises EpisodeWriteError after
keeping what was already written; a free-space check (`min_free_bytes`) stops the episode
cleanly before the disk actually fills up.
"""
from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import h5py
import numpy as np

from lapo_learning import dataset_format as fmt
from lapo_learning.schema import CAMERAS, ObservationSchema

OUTCOMES = ("success", "failure", "timeout")
COMPRESSIONS = ("lzf", "gzip", "none")
OUTCOME_ATTR = "outcome"
LOW_DIM_CHUNK = 256  # rows per chunk of the small per-sample datasets


class EpisodeWriteError(RuntimeError):
    """Writing the episode failed or the disk is (almost) full; the episode is stopped."""


@dataclass
class EpisodeConfig:
    joint_names: Sequence[str]
    action_names: Sequence[str]
    rate_hz: float
    streams: Sequence[str]  # names of the stamps/<stream> datasets
    has_reward: bool  # False: sparse reward from the outcome (1 on the last step of a success)
    compression: str = "lzf"  # image compression: lzf, gzip or none
    flush_every: int = 1  # samples between flushes (what a SIGKILL can lose at most)
    # Stop the episode cleanly (file valid, complete=False, outcome "disk_full") when the disk has
    # less free space than this at a flush; 0 = no check. A write that actually fails for lack of
    # space can leave an HDF5 file whose stored end lies beyond the data, which HDF5 won't open.
    min_free_bytes: int = 0
    attrs: Mapping[str, Any] = field(default_factory=dict)  # extra root attributes (metadata)

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {self.compression!r}")
        if self.flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {self.flush_every}")


class EpisodeWriter:
    """Appends samples of one episode to `path`; see the module docstring for the guarantees."""

    def __init__(self, path: str | Path, config: EpisodeConfig) -> None:
        self.path = Path(path)
        self.config = config
        self.n = 0
        self._file: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}  # kept open: no per-row handle churn
        self._closed = False
        if self.path.exists():
            raise FileExistsError(f"{self.path}: episode file exists, refusing to overwrite it")

    def _create(self, images: Mapping[str, np.ndarray], joint: np.ndarray, action: np.ndarray) -> h5py.File:
        cfg = self.config
        first = images[CAMERAS[0]]
        schema = ObservationSchema(image_size=first.shape[:2], joint_names=cfg.joint_names,
                                   action_names=cfg.action_names, rate_hz=cfg.rate_hz)
        if len(joint) != schema.joint_dim or len(action) != schema.action_dim:
            raise ValueError(f"sample has {len(joint)} joints / {len(action)} actions, the episode "
                             f"expects {schema.joint_dim} / {schema.action_dim}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = h5py.File(self.path, "w-", libver="latest")  # "w-": fails if the file exists
        dataset_names = ([fmt.image_key(c) for c in CAMERAS] + [fmt.JOINT_PATH, fmt.ACTIONS_KEY]
                         + [fmt.REWARDS_KEY, fmt.TERMINALS_KEY, fmt.TIMEOUTS_KEY, fmt.TIMESTAMPS_KEY]
                         + [f"{fmt.STAMPS_GROUP}/{s}" for s in cfg.streams])
        try:
            compression = None if cfg.compression == "none" else cfg.compression
            for cam in CAMERAS:
                shape = images[cam].shape
                f.create_dataset(fmt.image_key(cam), shape=(0, *shape), maxshape=(None, *shape),
                                 dtype=np.uint8, chunks=(1, *shape), compression=compression)
            for key, dim in ((fmt.JOINT_PATH, schema.joint_dim), (fmt.ACTIONS_KEY, schema.action_dim)):
                f.create_dataset(key, shape=(0, dim), maxshape=(None, dim), dtype=np.float32,
                                 chunks=(LOW_DIM_CHUNK, dim))
            for key, dtype in ((fmt.REWARDS_KEY, np.float32), (fmt.TERMINALS_KEY, np.bool_),
                               (fmt.TIMEOUTS_KEY, np.bool_), (fmt.TIMESTAMPS_KEY, np.float64)):
                f.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(LOW_DIM_CHUNK,))
            for stream in cfg.streams:
                f.create_dataset(f"{fmt.STAMPS_GROUP}/{stream}", shape=(0,), maxshape=(None,),
                                 dtype=np.float64, chunks=(LOW_DIM_CHUNK,))
            f.attrs[fmt.COMPLETE_ATTR] = False
            f.attrs[fmt.SCHEMA_ATTR] = schema.to_json()
            f.attrs[fmt.RATE_ATTR] = float(cfg.rate_hz)
            f.attrs["joint_names"] = json.dumps(list(cfg.joint_names))
            f.attrs["action_names"] = json.dumps(list(cfg.action_names))
            f.attrs["image_size"] = list(first.shape[:2])
            f.attrs["reward_source"] = "topic" if cfg.has_reward else "sparse_outcome"
            for key, value in cfg.attrs.items():
                f.attrs[key] = value
            # No new objects may be created from here on: readers follow the file while it grows.
            f.swmr_mode = True
            f.flush()
            self._datasets = {name: f[name] for name in dataset_names}
        except BaseException:
            f.close()
            raise
        return f

    def append(self, images: Mapping[str, np.ndarray], joint: np.ndarray, action: np.ndarray,
               reward: float | None, timestamp: float, stamps: Mapping[str, float]) -> None:
        """Add one sample (images keyed by CAMERAS, uint8 HxWx3 of a constant size per camera)."""
        if self._closed:
            raise RuntimeError(f"{self.path}: episode already closed")
        try:
            if self._file is None:
                self._file = self._create(images, joint, action)
            f, i = self._file, self.n
            row = {fmt.image_key(c): images[c] for c in CAMERAS}
            row.update({
                fmt.JOINT_PATH: np.asarray(joint, dtype=np.float32),
                fmt.ACTIONS_KEY: np.asarray(action, dtype=np.float32),
                fmt.REWARDS_KEY: 0.0 if reward is None else float(reward),
                fmt.TERMINALS_KEY: False,
                fmt.TIMEOUTS_KEY: False,
                fmt.TIMESTAMPS_KEY: float(timestamp),
            })
            row.update({f"{fmt.STAMPS_GROUP}/{s}": float(stamps[s]) for s in self.config.streams})
            for key, value in row.items():
                ds = self._datasets[key]
                ds.resize(i + 1, axis=0)
                ds[i] = value
            self.n = i + 1
            if self.n % self.config.flush_every == 0:
                f.flush()
                free = shutil.disk_usage(self.path.parent).free
                if free < self.config.min_free_bytes:
                    self.abort("disk_full", {"error": f"{free} bytes free"})
                    raise EpisodeWriteError(
                        f"{self.path}: only {free / 1e6:.0f} MB free on the disk (< "
                        f"{self.config.min_free_bytes / 1e6:.0f} MB): episode stopped, its {self.n} "
                        "samples are kept (marked incomplete)")
        except FileExistsError as exc:  # created by someone else since __init__
            self._closed = True
            raise FileExistsError(f"{self.path}: episode file exists, refusing to overwrite it") from exc
        except (OSError, RuntimeError) as exc:  # ENOSPC, EIO (h5py raises either): keep what is on disk
            self._fail()
            raise EpisodeWriteError(f"{self.path}: writing sample {self.n} failed ({exc}); "
                                    f"the episode is stopped and keeps its first {self.n} samples") from exc

    def _fail(self) -> None:
        self._closed = True
        if self._file is not None:
            self._datasets = {}
            try:
                self._file.close()
            except (OSError, RuntimeError):
                pass  # the disk is failing; the file keeps complete=False from its creation
            self._file = None

    def close(self, outcome: str, attrs: Mapping[str, Any] | None = None) -> Path | None:
        """End the episode cleanly: set the end flags, metadata and complete=True.

        Returns the file, or None when the episode has no samples (no file is left behind).
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        return self._finish(outcome, True, attrs)

    def abort(self, reason: str, attrs: Mapping[str, Any] | None = None) -> Path | None:
        """End the episode as incomplete (interrupted): the file keeps complete=False."""
        return self._finish(reason, False, attrs)

    def _finish(self, outcome: str, complete: bool, attrs: Mapping[str, Any] | None) -> Path | None:
        if self._closed:
            return self.path if self.path.exists() else None
        self._closed = True
        f, self._file = self._file, None
        if f is None:
            return None
        self._datasets = {}
        try:
            if complete:
                last = self.n - 1
                if outcome == "success":
                    f[fmt.TERMINALS_KEY][last] = True
                    if not self.config.has_reward:
                        f[fmt.REWARDS_KEY][last] = 1.0
                elif outcome == "timeout":
                    f[fmt.TIMEOUTS_KEY][last] = True
                # failure: neither flag; the last step is left out of TD targets like a time-out's
            f.close()
            # Attributes are set outside SWMR mode, which older HDF5 releases require; a crash
            # in between leaves complete=False, the safe side.
            with h5py.File(self.path, "r+", libver="latest") as g:
                g.attrs[OUTCOME_ATTR] = outcome
                g.attrs["n_samples"] = self.n
                for key, value in (attrs or {}).items():
                    g.attrs[key] = value
                g.attrs[fmt.COMPLETE_ATTR] = complete
        except (OSError, RuntimeError) as exc:
            raise EpisodeWriteError(f"{self.path}: closing the episode failed ({exc}); "
                                    "it stays marked incomplete") from exc
        return self.path

    def discard(self) -> None:
        """Drop the episode: close and delete its file."""
        self._fail()
        self.path.unlink(missing_ok=True)


@dataclass
class WriterStats:
    """Counters of a BackgroundWriter (read from any thread; ints are updated atomically)."""

    written: int = 0  # samples written, all episodes
    dropped: int = 0  # samples refused because the queue was full, all episodes
    lost_after_error: int = 0  # samples of an episode whose file had failed
    max_lag: float = 0.0  # worst submit -> written delay (s) since the last reset_lag()
    queued: int = 0  # samples waiting in the queue


class BackgroundWriter:
    """Writes episodes on a dedicated thread fed by a bounded queue of samples.

    `submit` never blocks: when `max_queue` samples are already waiting (the disk cannot keep up)
    the sample is dropped and counted in `stats.dropped`; the caller must report it. Episode
    control (start/end/abort/discard) is queued in order with the samples and is never dropped.
    Results and errors are reported through `on_event(kind, info)`, called on the writer thread:
    kind is "closed" (info: path, samples, outcome, complete) or "error" (info: message, path).
    """

    def __init__(self, max_queue: int, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        self.stats = WriterStats()
        self._on_event = on_event
        self._queue: queue.Queue[tuple] = queue.Queue()  # unbounded: the bound applies to samples only
        self._lock = threading.Lock()
        self._writer: EpisodeWriter | None = None
        self._failed = False  # the current episode hit a write error
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    def start_episode(self, path: Path, config: EpisodeConfig) -> None:
        self._queue.put(("start", path, config))

    def submit(self, images: Mapping[str, np.ndarray], joint: np.ndarray, action: np.ndarray,
               reward: float | None, timestamp: float, stamps: Mapping[str, float]) -> bool:
        """Queue a sample; False (and counted as dropped) when the queue is full."""
        with self._lock:
            if self.stats.queued >= self.max_queue:
                self.stats.dropped += 1
                return False
            self.stats.queued += 1
        self._queue.put(("sample", time.monotonic(), (images, joint, action, reward, timestamp, stamps)))
        return True

    def end_episode(self, outcome: str, attrs: Mapping[str, Any]) -> None:
        self._queue.put(("end", outcome, dict(attrs)))

    def abort_episode(self, reason: str, attrs: Mapping[str, Any]) -> None:
        self._queue.put(("abort", reason, dict(attrs)))

    def discard_episode(self) -> None:
        self._queue.put(("discard",))

    def reset_lag(self) -> float:
        """The worst lag since the previous call (for periodic status)."""
        lag, self.stats.max_lag = self.stats.max_lag, 0.0
        return lag

    def close(self, timeout: float | None = None) -> bool:
        """Finish everything queued (an open episode is aborted first by the caller) and stop.

        Returns False if the thread did not finish within `timeout`.
        """
        self._queue.put(("stop",))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            kind = item[0]
            try:
                if kind == "sample":
                    with self._lock:
                        self.stats.queued -= 1
                    self._write(item[2])
                    self.stats.max_lag = max(self.stats.max_lag, time.monotonic() - item[1])
                elif kind == "start":
                    self._finish_current("abort", "superseded", {})
                    self._writer, self._failed = EpisodeWriter(item[1], item[2]), False
                elif kind in ("end", "abort"):
                    self._finish_current(kind, item[1], item[2])
                elif kind == "discard":
                    if self._writer is not None:
                        self._writer.discard()
                        self._writer = None
                elif kind == "stop":
                    self._finish_current("abort", "interrupted", {})
                    return
            except Exception as exc:  # noqa: BLE001 - reported, the thread must keep serving
                self._failed = True
                path = self._writer.path if self._writer is not None else None
                if self._writer is not None:
                    try:  # keeps the rows written so far, marked incomplete
                        self._writer.abort("error", {"error": str(exc)})
                    except EpisodeWriteError:
                        pass  # already reported through `exc`
                self._on_event("error", {"message": str(exc), "path": path})

    def _write(self, sample: tuple) -> None:
        if self._writer is None or self._failed:
            self.stats.lost_after_error += 1
            return
        self._writer.append(*sample)
        self.stats.written += 1

    def _finish_current(self, kind: str, outcome: str, attrs: Mapping[str, Any]) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        n = writer.n
        path = writer.close(outcome, attrs) if kind == "end" else writer.abort(outcome, attrs)
        self._on_event("closed", {"path": path, "samples": n, "outcome": outcome,
                                  "complete": kind == "end" and path is not None})
