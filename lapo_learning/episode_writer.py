"""Incremental, crash-safe writer of one recorded episode as an HDF5 file (no ROS needed).

The file follows `lapo_learning.dataset_format` (the seed layout plus timeouts, after_gap,
timestamps, stamps/<stream> and the metadata attributes). It is created on the first sample (never
over an existing file) with `complete=False`, grows one row per sample in resizable datasets, and is
written in HDF5 SWMR mode (`libver='latest'`) and flushed every `flush_every` samples, so a reader
can follow it and a SIGKILL leaves a readable file holding the rows flushed so far. Every dataset
has the same row count whenever the file is flushed: a sample is checked against the stored shapes
before anything is written, and a write that fails half-way is cut back to the last whole row. A
clean `close()` sets the episode's end flags and `complete=True`; `abort()` keeps `complete=False`,
which the training loader skips.

A write error (a full disk, a camera changing resolution) stops the episode with
EpisodeWriteError naming the file: the rows written so far are kept, marked incomplete. A full
disk is survived by a reserve: while an episode is open, a preallocated file (RESERVE_NAME, in the
episode's directory) holds back the space that closing the file needs; after a failed write it is
deleted, so the flush that closes the file cleanly can succeed. A free-space check
(`min_free_bytes`) stops the episode before the disk actually fills up.
"""
from __future__ import annotations

import errno
import json
import os
import queue
import re
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
# Simulated demonstrations only: the scripted operator's deliberate mistake (lapo_ros.sim.recording writes it).
FAILURE_MODE_ATTR = "failure_mode"
LOW_DIM_CHUNK = 256  # rows per chunk of the small per-sample datasets
RESERVE_NAME = ".lapo_disk_reserve"  # not *.hdf5: loaders never see it
METADATA_RESERVE = 2 << 20  # bytes of HDF5 metadata a closing flush may write, besides the rows
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
EPISODE_PATTERN = re.compile(r"^episode_(\d+)\.hdf5$")


class EpisodeWriteError(RuntimeError):
    """Writing the episode failed or the disk is (almost) full; the episode is stopped."""


class SampleShapeError(ValueError):
    """A sample does not fit the episode's datasets (found before anything is written)."""


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
    # less free space than this at a flush; 0 = no check.
    min_free_bytes: int = 0
    # A sample more than this many seconds after the previous one is marked `after_gap` (no
    # transition is made across it); 0 = never.
    max_gap: float = 0.0
    attrs: Mapping[str, Any] = field(default_factory=dict)  # extra root attributes (metadata)

    def __post_init__(self) -> None:
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {self.compression!r}")
        if self.flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {self.flush_every}")
        if not self.max_gap >= 0:
            raise ValueError(f"max_gap must be >= 0 s, got {self.max_gap}")


def next_episode_index(output_dir: Path) -> int:
    """1 + the highest episode number of the `episode_NNNN.hdf5` files in `output_dir` (the
    recorder's and the converters' numbering: files are never overwritten)."""
    numbers = [int(m.group(1)) for p in output_dir.glob("episode_*.hdf5")
               if (m := EPISODE_PATTERN.match(p.name))]
    return max(numbers, default=0) + 1


def check_writable_dir(directory: str | Path) -> None:
    """Create `directory` if needed and write a probe file in it; OSError naming it if impossible."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".lapo_write_probe_{os.getpid()}"
        try:
            with probe.open("wb") as f:
                f.write(b"\0" * 4096)
                f.flush()
                os.fsync(f.fileno())  # a full disk may only refuse the data when it is flushed
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"{directory}: cannot write episode files there ({exc.strerror or exc})") from exc


def disk_full(exc: BaseException) -> bool:
    """Whether an error (an OSError, or h5py's RuntimeError quoting errno) means a full disk or quota."""
    code = getattr(exc, "errno", None)
    if code is None:
        found = re.search(r"errno = (\d+)", str(exc))
        code = int(found.group(1)) if found else None
    return code in DISK_FULL_ERRNOS


def _text(exc: BaseException) -> str:
    """An error's message on one line (HDF5's carry line breaks)."""
    return " ".join(str(exc).split())


def _reserve(path: Path, nbytes: int) -> None:
    """Preallocate `nbytes` in `path` (an existing larger reserve, left by a killed writer, is kept)."""
    try:
        with path.open("ab") as f:
            if os.fstat(f.fileno()).st_size < nbytes:
                os.posix_fallocate(f.fileno(), 0, nbytes)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise EpisodeWriteError(
            f"{path.parent}: cannot reserve {nbytes / 1e6:.1f} MB of disk space for closing an episode "
            f"safely ({exc.strerror or exc}): the disk is (almost) full; no episode file was created") from exc


def _abandon(objects: Sequence[Any]) -> None:
    """Leave HDF5 handles open until the process exits instead of closing them.

    Closing a dataset whose flush failed leaves HDF5 with a half-destroyed object, and closing the
    file afterwards segfaults the process (h5py#914, HDFGroup/hdf5#6601; HDF5 1.8 to 2.x). An extra
    reference keeps h5py from ever closing them; the file keeps what its last good flush wrote.
    """
    for obj in objects:
        h5py.h5i.inc_ref(obj.id)


class EpisodeWriter:
    """Appends samples of one episode to `path`; see the module docstring for the guarantees."""

    def __init__(self, path: str | Path, config: EpisodeConfig) -> None:
        self.path = Path(path)
        self.config = config
        self.n = 0
        self.gaps = 0  # rows marked after_gap
        self._flushed = 0  # rows on disk as of the last successful flush
        self._last_time: float | None = None
        self._file: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}  # kept open: no per-row handle churn
        self._streams: dict[str, str] = {}  # dataset key -> the sample argument/stream it stores
        self._reserve: Path | None = None
        self._closed = False
        if self.path.exists():
            raise FileExistsError(f"{self.path}: episode file exists, refusing to overwrite it")

    def _layout(self, images: Mapping[str, np.ndarray], joint_dim: int,
                action_dim: int) -> dict[str, tuple[tuple[int, ...], type]]:
        """Dataset key -> (row shape, dtype), images first."""
        layout: dict[str, tuple[tuple[int, ...], type]] = {
            fmt.image_key(c): (tuple(np.shape(images[c])), np.uint8) for c in CAMERAS}
        layout.update({fmt.JOINT_PATH: ((joint_dim,), np.float32), fmt.ACTIONS_KEY: ((action_dim,), np.float32),
                       fmt.REWARDS_KEY: ((), np.float32), fmt.TERMINALS_KEY: ((), np.bool_),
                       fmt.TIMEOUTS_KEY: ((), np.bool_), fmt.AFTER_GAP_KEY: ((), np.bool_),
                       fmt.TIMESTAMPS_KEY: ((), np.float64)})
        layout.update({f"{fmt.STAMPS_GROUP}/{s}": ((), np.float64) for s in self.config.streams})
        return layout

    def _reserve_bytes(self, layout: Mapping[str, tuple[tuple[int, ...], type]]) -> int:
        """What the flush closing the file after a failed write may still have to write: the rows
        since the last flush (twice: a compressed chunk rewritten moves), a chunk of every small
        dataset, and metadata."""
        images = sum(int(np.prod(shape)) * np.dtype(t).itemsize for shape, t in layout.values() if len(shape) == 3)
        small = sum(LOW_DIM_CHUNK * int(np.prod(shape)) * np.dtype(t).itemsize
                    for shape, t in layout.values() if len(shape) < 3)
        return 2 * ((self.config.flush_every + 1) * images + small) + METADATA_RESERVE

    def _create(self, images: Mapping[str, np.ndarray], joint: np.ndarray, action: np.ndarray) -> h5py.File:
        cfg = self.config
        first = images[CAMERAS[0]]
        schema = ObservationSchema(image_size=first.shape[:2], joint_names=cfg.joint_names,
                                   action_names=cfg.action_names, rate_hz=cfg.rate_hz)
        if len(joint) != schema.joint_dim or len(action) != schema.action_dim:
            raise ValueError(f"sample has {len(joint)} joints / {len(action)} actions, the episode "
                             f"expects {schema.joint_dim} / {schema.action_dim}")
        layout = self._layout(images, schema.joint_dim, schema.action_dim)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._reserve = self.path.parent / RESERVE_NAME
        _reserve(self._reserve, self._reserve_bytes(layout))
        f = h5py.File(self.path, "w-", libver="latest")  # "w-": fails if the file exists
        try:
            compression = None if cfg.compression == "none" else cfg.compression
            for key, (shape, dtype) in layout.items():
                image = len(shape) == 3
                f.create_dataset(key, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                 chunks=(1 if image else LOW_DIM_CHUNK, *shape),
                                 compression=compression if image else None)
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
            self._datasets = {name: f[name] for name in layout}
        except BaseException:  # a file without its layout holds nothing: not left behind
            self._release_reserve()  # room for the close
            f.close()
            self.path.unlink(missing_ok=True)
            raise
        self._streams = {fmt.image_key(c): c for c in CAMERAS}
        self._streams.update({fmt.JOINT_PATH: "joint", fmt.ACTIONS_KEY: "action", fmt.REWARDS_KEY: "reward"})
        return f

    def append(self, images: Mapping[str, np.ndarray], joint: np.ndarray, action: np.ndarray,
               reward: float | None, timestamp: float, stamps: Mapping[str, float]) -> None:
        """Add one sample (images keyed by CAMERAS, uint8 HxWx3 of a constant size per camera)."""
        if self._closed:
            raise RuntimeError(f"{self.path}: episode already closed")
        try:
            if self._file is None:
                self._file = self._create(images, joint, action)
            gap = (self._last_time is not None and self.config.max_gap > 0
                   and timestamp - self._last_time > self.config.max_gap)
            row = {fmt.image_key(c): images[c] for c in CAMERAS}
            row.update({
                fmt.JOINT_PATH: np.asarray(joint, dtype=np.float32),
                fmt.ACTIONS_KEY: np.asarray(action, dtype=np.float32),
                fmt.REWARDS_KEY: 0.0 if reward is None else float(reward),
                fmt.TERMINALS_KEY: False,
                fmt.TIMEOUTS_KEY: False,
                fmt.AFTER_GAP_KEY: gap,
                fmt.TIMESTAMPS_KEY: float(timestamp),
            })
            row.update({f"{fmt.STAMPS_GROUP}/{s}": float(stamps[s]) for s in self.config.streams})
            self._check_shapes(row)
            i = self.n
            # All rows grow first and are filled after: a failure in between is cut back by _fail.
            for ds in self._datasets.values():
                ds.resize(i + 1, axis=0)
            for key, value in row.items():
                self._datasets[key][i] = value
            if (i + 1) % self.config.flush_every == 0:
                self._file.flush()
                self._flushed = i + 1
            self.n, self._last_time = i + 1, float(timestamp)
            self.gaps += gap
        except FileExistsError as exc:  # created by someone else since __init__
            self._closed = True
            self._release_reserve()
            raise FileExistsError(f"{self.path}: episode file exists, refusing to overwrite it") from exc
        except EpisodeWriteError:
            self._closed = True
            raise
        except (OSError, RuntimeError, ValueError, TypeError) as exc:  # ENOSPC, EIO (h5py raises either), shapes
            outcome, index = "disk_full" if disk_full(exc) else "write_error", self.n
            kept = self._fail(outcome, exc)
            cause = f"the disk is full ({_text(exc)})" if outcome == "disk_full" else _text(exc)
            raise EpisodeWriteError(f"{self.path}: writing sample {index} failed: {cause}; "
                                    f"the episode is stopped: {kept}") from exc
        if self.n % self.config.flush_every == 0 and self.config.min_free_bytes:
            free = shutil.disk_usage(self.path.parent).free
            if free < self.config.min_free_bytes:
                self.abort("disk_full", {"error": f"{free} bytes free"})
                raise EpisodeWriteError(
                    f"{self.path}: only {free / 1e6:.0f} MB free on the disk (< "
                    f"{self.config.min_free_bytes / 1e6:.0f} MB): episode stopped, its {self.n} "
                    "samples are kept (marked incomplete)")

    def _check_shapes(self, row: Mapping[str, Any]) -> None:
        """SampleShapeError naming the stream when a value does not fit its dataset's rows."""
        for key, value in row.items():
            ds, stream = self._datasets[key], self._streams.get(key, key)
            if np.shape(value) != ds.shape[1:]:
                raise SampleShapeError(f"stream {stream} has shape {np.shape(value)}, the episode stores "
                                       f"{ds.shape[1:]} (from its first sample) in {key}")
            if ds.dtype == np.uint8 and np.asarray(value).dtype != np.uint8:
                raise SampleShapeError(f"stream {stream} has dtype {np.asarray(value).dtype}, expected uint8 in {key}")

    def _release_reserve(self) -> None:
        if self._reserve is not None:
            self._reserve.unlink(missing_ok=True)
            self._reserve = None

    def _fail(self, outcome: str, exc: BaseException) -> str:
        """Stop after a write error: release the reserve, cut the datasets back to the rows of the
        last good flush, flush, close and mark the file (outcome, error, complete=False). Says what
        was kept.

        Rows written since the last flush are dropped: HDF5 discards a chunk whose write failed, so
        any of them may have lost a dataset's part.
        """
        self._closed = True
        if not isinstance(exc, SampleShapeError):
            self.n = self._flushed
        f, self._file = self._file, None
        datasets, self._datasets = list(self._datasets.values()), {}
        self._release_reserve()  # the space the closing flush needs
        if f is None:
            return "no sample was written"
        try:
            for ds in datasets:
                ds.resize(self.n, axis=0)
            f.flush()
        except (OSError, RuntimeError) as again:
            _abandon([f, *datasets])
            return (f"the file cannot be flushed either ({_text(again)}), it keeps the rows of its "
                    "last flush, marked incomplete")
        del datasets  # closes them: nothing is left to write
        try:
            f.close()
            self._mark(outcome, False, {"error": _text(exc)})
        except (OSError, RuntimeError) as again:
            return f"its {self.n} samples are flushed but closing failed ({_text(again)}), marked incomplete"
        return f"its first {self.n} samples are kept (marked incomplete)"

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
        f = self._file
        if f is None:
            self._closed = True
            self._release_reserve()
            return None
        try:
            if complete:
                last = self.n - 1
                if outcome == "success":
                    self._datasets[fmt.TERMINALS_KEY][last] = True
                    if not self.config.has_reward:
                        self._datasets[fmt.REWARDS_KEY][last] = 1.0
                elif outcome == "timeout":
                    self._datasets[fmt.TIMEOUTS_KEY][last] = True
                # failure: neither flag; the last step is left out of TD targets like a time-out's
            f.flush()
        except (OSError, RuntimeError) as exc:
            kept = self._fail("disk_full" if disk_full(exc) else "write_error", exc)
            raise EpisodeWriteError(f"{self.path}: closing the episode failed ({_text(exc)}); {kept}") from exc
        self._closed, self._file, self._datasets = True, None, {}
        try:
            f.close()
            self._mark(outcome, complete, attrs or {})
        except (OSError, RuntimeError) as exc:
            raise EpisodeWriteError(f"{self.path}: closing the episode failed ({_text(exc)}); "
                                    "it stays marked incomplete") from exc
        finally:
            self._release_reserve()
        return self.path

    def _mark(self, outcome: str, complete: bool, attrs: Mapping[str, Any]) -> None:
        # Attributes are set outside SWMR mode, which older HDF5 releases require; a crash in
        # between leaves complete=False, the safe side.
        with h5py.File(self.path, "r+", libver="latest") as g:
            g.attrs[OUTCOME_ATTR] = outcome
            g.attrs["n_samples"] = self.n
            for key, value in attrs.items():
                g.attrs[key] = value
            g.attrs[fmt.COMPLETE_ATTR] = complete

    def discard(self) -> None:
        """Drop the episode: close and delete its file."""
        if not self._closed and self._file is not None:
            try:
                self._finish("discarded", False, {})
            except EpisodeWriteError:
                pass  # the file is deleted anyway
        self._closed = True
        self._release_reserve()
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

    `submit` never blocks (unless asked to): when `max_queue` samples are already waiting (the disk
    cannot keep up) the sample is dropped and counted in `stats.dropped`; the caller must report it. Episode
    control (start/end/abort/discard) is queued in order with the samples and is never dropped.
    Results and errors are reported through `on_event(kind, info)`, called on the writer thread:
    kind is "closed" (info: path, samples, outcome, gaps, complete) or "error" (info: message, path).
    """

    def __init__(self, max_queue: int, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        self.stats = WriterStats()
        self._on_event = on_event
        self._queue: queue.Queue[tuple] = queue.Queue()  # unbounded: the bound applies to samples only
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # notified when a queued sample is taken
        self._writer: EpisodeWriter | None = None
        self._failed = False  # the current episode hit a write error
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    def start_episode(self, path: Path, config: EpisodeConfig) -> None:
        self._queue.put(("start", path, config))

    def submit(self, images: Mapping[str, np.ndarray], joint: np.ndarray, action: np.ndarray,
               reward: float | None, timestamp: float, stamps: Mapping[str, float], block: bool = False) -> bool:
        """Queue a sample; False (and counted as dropped) when the queue is full, unless `block`:
        then wait for room (a converter, which reads faster than the disk and must lose nothing)."""
        with self._room:
            while self.stats.queued >= self.max_queue:
                if not block:
                    self.stats.dropped += 1
                    return False
                self._room.wait()
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
                    with self._room:
                        self.stats.queued -= 1
                        self._room.notify()
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
        self._on_event("closed", {"path": path, "samples": n, "outcome": outcome, "gaps": writer.gaps,
                                  "complete": kind == "end" and path is not None})
