"""Loading HDF5 datasets (one flat file or a directory of per-episode files) into RAM.

Images are read once, cropped and resized once to the model's input (`ObservationSchema.preprocess`)
and kept as uint8; nothing is read from disk during training. Episode boundaries come from `episode_ends`
(or terminals/timeouts), so the next observation never crosses into another episode.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from lapo_learning import dataset_format as fmt
from lapo_learning.schema import CAMERAS, ObservationSchema

log = logging.getLogger(__name__)
SKIP_HINT = "train --skip_invalid, or load_dataset(skip_invalid=True), leaves invalid files out with a warning each"


@dataclass
class OfflineDataset:
    """All transitions of a dataset, concatenated episode after episode."""

    images: dict[str, np.ndarray]  # camera -> uint8 [N,H,W,3]
    joint: np.ndarray  # float32 [N,J]
    actions: np.ndarray  # float32 [N,A]
    rewards: np.ndarray  # float32 [N]
    terminals: np.ndarray  # bool [N]
    timeouts: np.ndarray  # bool [N]
    episode_ends: np.ndarray  # int64 [E], exclusive
    schema: ObservationSchema
    sources: list[str]
    after_gap: np.ndarray | None = None  # bool [N]: the recording paused before this row; None = no gaps

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def segment_ends(self) -> np.ndarray:
        """Exclusive ends of the stretches recorded without a break (see `segment_ends`)."""
        return segment_ends(self.episode_ends, self.after_gap)

    def next_index(self) -> np.ndarray:
        """Index of each sample's next observation; a sample's own index at an episode's end or
        before a recording gap."""
        nxt = np.arange(1, len(self) + 1, dtype=np.int64)
        last = self.segment_ends - 1
        nxt[last] = last
        return nxt

    def usable_for_td(self) -> np.ndarray:
        """Samples with a TD target: terminals (no bootstrap) and steps whose next obs exists.

        The last step of an episode cut by a time-out (or by the end of the recording) or before a
        recording gap has no next observation, so it cannot be bootstrapped and is left out of the
        critic's samples.
        """
        ok = np.ones(len(self), dtype=bool)
        ok[self.segment_ends - 1] = False
        return ok | self.terminals

    def action_chunks(self, size: int, indices: np.ndarray) -> np.ndarray:
        """float32 [len(indices),size,A]: each indexed sample's action and the next size-1 of its
        episode (only the indexed chunks are built: the full array is size times the actions).

        Past the episode's end (or a recording gap) the last action is repeated: the demonstrator
        holds its final command, so that is what the chunk's tail means (ACT pads and masks instead).
        """
        if size < 1:
            raise ValueError(f"action chunk size must be >= 1, got {size}")
        indices = np.asarray(indices, dtype=np.int64)
        ends = self.segment_ends
        last = np.repeat(ends - 1, np.diff(ends, prepend=0))[indices]
        steps = np.minimum(indices[:, None] + np.arange(size)[None], last[:, None])
        return self.actions[steps]

    def episode_indices(self, episodes: np.ndarray) -> np.ndarray:
        starts, ends = self.episode_starts, self.episode_ends
        return np.concatenate([np.arange(starts[e], ends[e]) for e in episodes]).astype(np.int64)

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.rewards, self.episode_starts) if len(self) else np.zeros(0)


def segment_ends(episode_ends: np.ndarray, after_gap: np.ndarray | None) -> np.ndarray:
    """Exclusive ends of the stretches recorded without a break: the episode ends and the rows
    before a recording gap (`after_gap`), which end a stretch like a time-out does."""
    if after_gap is None:
        return episode_ends
    gaps = np.nonzero(after_gap)[0]
    return np.union1d(episode_ends, gaps[gaps > 0]).astype(np.int64)


def load_dataset(
    path: str | Path,
    image_size: tuple[int, int] | None = None,
    include_incomplete: bool = False,
    allow_outliers: bool = False,
    crops: dict[str, tuple[float, float, float, float]] | None = None,
    skip_invalid: bool = False,
) -> OfflineDataset:
    """Load a flat HDF5 file or a directory of episode files, validating each file first.

    `image_size` (H, W) resizes every image once; None keeps the size stored in the data (files of
    another size are resized to that of the schema most files share). `crops` (camera -> (top,
    left, height, width), fractions of the stored image) crops a camera's images before the resize
    (see ObservationSchema.preprocess); the returned schema carries both. `allow_outliers` skips the
    check for implausible joint/action values.

    Every file is checked first (`dataset_format.check_dataset`, what `create_dataset --validate`
    reports). Incomplete episodes are skipped with a warning unless `include_incomplete`; an
    invalid or unreadable file raises DatasetError naming each file and problem, or with
    `skip_invalid` is left out with a warning naming it.
    """
    check = fmt.check_dataset(path, include_incomplete, check_outliers=not allow_outliers)
    for c in check.incomplete:
        log.warning("skipping %s: %s", c.path, check.skip_reason(c))
    if check.invalid and not skip_invalid:
        raise fmt.DatasetError("invalid dataset files (" + SKIP_HINT + "):\n  " + "\n  ".join(check.problem_lines()))
    for line in check.problem_lines():
        log.warning("skipping invalid file %s", line)
    if check.reference is None:
        raise fmt.DatasetError(f"{path}: no episode to load ({len(check.incomplete)} incomplete, "
                               f"{len(check.invalid)} invalid of {len(check.files)} files)")
    stored = check.reference.schema
    # The model's view of the data: the stored schema with the model's image size and crops.
    schema = dataclasses.replace(stored, image_size=image_size or stored.image_size, crops=dict(crops or {}))
    parts: list[dict[str, np.ndarray]] = []
    files: list[Path] = []
    for c in tqdm(check.usable, desc="loading episodes", unit="file", disable=len(check.usable) < 20):
        try:
            with fmt.open_episode(c.path) as f:
                parts.append(_read_arrays(f, schema))
        except fmt.READ_ERRORS as exc:  # data the check did not read (images) can still be corrupt
            if not skip_invalid:
                raise fmt.DatasetError(f"{c.path}: {fmt.unreadable(exc)} ({SKIP_HINT})") from exc
            log.warning("skipping invalid file %s: %s", c.path, fmt.unreadable(exc))
            continue
        files.append(c.path)
    if not parts:
        raise fmt.DatasetError(f"{path}: no episode file could be read")
    lengths = [len(p["actions"]) for p in parts]
    offsets = np.cumsum([0] + lengths[:-1])
    ends = np.concatenate([p["episode_ends"] + off for p, off in zip(parts, offsets)])
    return OfflineDataset(
        images={c: np.concatenate([p[c] for p in parts]) for c in CAMERAS},
        joint=np.concatenate([p["joint"] for p in parts]),
        actions=np.concatenate([p["actions"] for p in parts]),
        rewards=np.concatenate([p["rewards"] for p in parts]),
        terminals=np.concatenate([p["terminals"] for p in parts]),
        timeouts=np.concatenate([p["timeouts"] for p in parts]),
        episode_ends=ends.astype(np.int64),
        schema=schema,
        sources=[str(f) for f in files],
        after_gap=np.concatenate([p["after_gap"] for p in parts]),
    )


def _read_arrays(f: h5py.File, schema: ObservationSchema) -> dict[str, np.ndarray]:
    n = len(f[fmt.ACTIONS_KEY])
    out: dict[str, np.ndarray] = {}
    for cam in CAMERAS:
        ds = f[fmt.image_key(cam)]
        if tuple(ds.shape[1:3]) == tuple(schema.image_size) and cam not in schema.crops:
            out[cam] = ds[()]
        else:  # preprocessed frame by frame so a raw-size file never sits in RAM whole
            out[cam] = np.stack([schema.preprocess(cam, ds[i]) for i in range(n)])
    out["joint"] = f[fmt.JOINT_PATH][()].astype(np.float32)
    out["actions"] = f[fmt.ACTIONS_KEY][()].astype(np.float32)
    out["rewards"] = f[fmt.REWARDS_KEY][()].astype(np.float32)
    out["terminals"] = f[fmt.TERMINALS_KEY][()].astype(bool)
    out["timeouts"] = (f[fmt.TIMEOUTS_KEY][()].astype(bool) if fmt.TIMEOUTS_KEY in f
                       else np.zeros(n, dtype=bool))
    out["after_gap"] = (f[fmt.AFTER_GAP_KEY][()].astype(bool) if fmt.AFTER_GAP_KEY in f
                        else np.zeros(n, dtype=bool))
    out["episode_ends"] = fmt.episode_ends(f)
    return out


def split_episodes(n_episodes: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle whole episodes into train/validation sets (never split inside an episode).

    With one episode there is nothing to hold out: it is used for both, with a warning.
    """
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_test_split must be in (0, 1], got {train_fraction}")
    order = np.random.default_rng(seed).permutation(n_episodes)
    n_train = int(round(train_fraction * n_episodes))
    n_train = min(max(n_train, 1), n_episodes - 1) if n_episodes > 1 and train_fraction < 1.0 else n_episodes
    train, val = np.sort(order[:n_train]), np.sort(order[n_train:])
    if len(val) == 0:
        log.warning("no validation episodes (%d episode(s), split %.2f): validating on training data",
                    n_episodes, train_fraction)
        val = train
    return train, val
