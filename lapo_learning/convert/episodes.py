"""Numbered lapo episode files written by a converter, through the recorder's episode writer.

Samples go through the recorder's BackgroundWriter (its writer thread, so HDF5 writes overlap
with reading and decoding the source), with back-pressure instead of drops: nothing is lost.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from lapo_learning.episode_writer import (BackgroundWriter, EpisodeConfig, EpisodeWriteError, check_writable_dir,
                                          next_episode_index)

log = logging.getLogger(__name__)
QUEUE = 64  # samples the writer thread may lag behind before the converter waits


@dataclass
class Row:
    """One sample as EpisodeWriter.append takes it."""

    images: Mapping[str, np.ndarray]
    joint: np.ndarray
    action: np.ndarray
    reward: float | None
    timestamp: float
    stamps: Mapping[str, float]


class EpisodeOutput:
    """Writes episodes as `episode_NNNN.hdf5` in `directory`, numbered after those already there
    (so several conversions can fill one dataset directory; files are never overwritten), one
    open at a time. An episode not ended with `end` stays marked incomplete. `close()` waits for
    the writer; a write error is raised (EpisodeWriteError) at the next call after it happened."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"{self.directory}: exists and is not a directory")
        check_writable_dir(self.directory)
        self.written: list[Path] = []
        self._next = next_episode_index(self.directory)
        self._error: str | None = None
        self._writer = BackgroundWriter(QUEUE, self._on_event)

    def _on_event(self, kind: str, info: dict[str, Any]) -> None:  # writer thread
        if kind == "error":
            self._error = info["message"]
        elif info["complete"]:
            self.written.append(info["path"])
            log.info("wrote %s: %d samples, %s", info["path"], info["samples"], info["outcome"])
        elif info["path"] is not None:
            log.warning("%s: %s after %d samples, kept marked incomplete", info["path"], info["outcome"],
                        info["samples"])

    def _check(self) -> None:
        if self._error is not None:
            raise EpisodeWriteError(self._error)

    def start(self, config: Callable[[int], EpisodeConfig]) -> None:
        """Open the next episode; `config(number)` sets it up."""
        self._check()
        number = self._next = max(self._next, next_episode_index(self.directory))
        self._next += 1
        self._writer.start_episode(self.directory / f"episode_{number:04d}.hdf5", config(number))

    def append(self, row: Row) -> None:
        self._check()
        self._writer.submit(row.images, row.joint, row.action, row.reward, row.timestamp, row.stamps, block=True)

    def end(self, outcome: str, attrs: Mapping[str, Any] | None = None) -> None:
        """Close the open episode cleanly with `outcome` (no file when it had no samples)."""
        self._writer.end_episode(outcome, attrs or {})

    def abort(self, reason: str, attrs: Mapping[str, Any] | None = None) -> None:
        """Close the open episode, if any, marked incomplete (the loaders skip it)."""
        self._writer.abort_episode(reason, attrs or {})

    def discard(self) -> None:
        """Drop the open episode and its file."""
        self._writer.discard_episode()

    def close(self) -> list[Path]:
        """Finish every queued write; the episodes written complete."""
        self._writer.close()
        self._check()
        return self.written

    def write(self, config: EpisodeConfig, rows: Iterable[Row], outcome: str) -> None:
        """One whole episode from `rows`. Any error, Ctrl-C included, leaves its file incomplete."""
        self.start(lambda number: config)
        try:
            for row in rows:
                self.append(row)
        except BaseException as exc:
            self.abort("conversion_failed", {"error": " ".join(str(exc).split())})
            raise
        self.end(outcome)
