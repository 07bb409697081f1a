"""Loading HDF5 datasets (one flat file or a directory of per-episode files) into RAM.

Images are read once, resized once to the model's image size with `schema.resize_image` and kept
as uint8; nothing is read from disk during training. Episode boundaries come from `episode_ends`
(or terminals/timeouts), so the next observation never crosses into another episode.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from lapo_learning import dataset_format as fmt
from lapo_learning.schema import CAMERAS, ObservationSchema, resize_image

log = logging.getLogger(__name__)


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

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def episode_starts(self) -> np.ndarray:
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    def next_index(self) -> np.ndarray:
        """Index of each sample's next observation; a sample's own index at an episode's end."""
        nxt = np.arange(1, len(self) + 1, dtype=np.int64)
        last = self.episode_ends - 1
        nxt[last] = last
        return nxt

    def usable_for_td(self) -> np.ndarray:
        """Samples with a TD target: terminals (no bootstrap) and steps whose next obs exists.

        The last step of an episode cut by a time-out (or by the end of the recording) has no next
        observation, so it cannot be bootstrapped and is left out of the critic's samples.
        """
        ok = np.ones(len(self), dtype=bool)
        ok[self.episode_ends - 1] = False
        return ok | self.terminals

    def action_chunks(self, size: int, indices: np.ndarray) -> np.ndarray:
        """float32 [len(indices),size,A]: each indexed sample's action and the next size-1 of its
        episode (only the indexed chunks are built: the full array is size times the actions).

        Past the episode's end the last action is repeated: the demonstrator holds its final
        command, so that is what the chunk's tail means (ACT pads and masks instead).
        """
        if size < 1:
            raise ValueError(f"action chunk size must be >= 1, got {size}")
        indices = np.asarray(indices, dtype=np.int64)
        last = np.repeat(self.episode_ends - 1, self.episode_ends - self.episode_starts)[indices]
        steps = np.minimum(indices[:, None] + np.arange(size)[None], last[:, None])
        return self.actions[steps]

    def episode_indices(self, episodes: np.ndarray) -> np.ndarray:
        starts, ends = self.episode_starts, self.episode_ends
        return np.concatenate([np.arange(starts[e], ends[e]) for e in episodes]).astype(np.int64)

    def episode_returns(self) -> np.ndarray:
        return np.add.reduceat(self.rewards, self.episode_starts) if len(self) else np.zeros(0)


def list_episode_files(path: Path, include_incomplete: bool) -> list[Path]:
    """The .hdf5 files of a directory, sorted, incomplete episodes skipped (with a warning)."""
    files = sorted(path.glob(fmt.EPISODE_GLOB))
    if not files:
        raise fmt.DatasetError(f"{path}: directory holds no {fmt.EPISODE_GLOB} episode files")
    kept = []
    for file in files:
        with fmt.open_episode(file) as f:
            if not fmt.is_complete(f) and not include_incomplete:
                log.warning("skipping %s: episode marked incomplete (interrupted recording)", file)
                continue
        kept.append(file)
    if not kept:
        raise fmt.DatasetError(f"{path}: every episode file is marked incomplete")
    return kept


def load_dataset(
    path: str | Path,
    image_size: tuple[int, int] | None = None,
    include_incomplete: bool = False,
) -> OfflineDataset:
    """Load a flat HDF5 file or a directory of episode files, validating each file first.

    `image_size` (H, W) resizes every image once; None keeps the size stored in the data (all files
    must then agree).
    """
    path = Path(path)
    files = list_episode_files(path, include_incomplete) if path.is_dir() else [path]
    parts: list[dict[str, np.ndarray]] = []
    schema: ObservationSchema | None = None
    for file in tqdm(files, desc="loading episodes", unit="file", disable=len(files) < 20):
        problems = fmt.validate_file(file)
        if problems:
            raise fmt.DatasetError(f"{file}: invalid dataset:\n  " + "\n  ".join(problems))
        with fmt.open_episode(file) as f:
            file_schema = fmt.read_schema(f)
            if schema is None:
                schema = file_schema
            else:
                schema.require_compatible(file_schema, f"{file} does not match {files[0]}")
            parts.append(_read_arrays(f, image_size or schema.image_size))
    assert schema is not None
    if image_size is not None:
        schema = ObservationSchema(image_size=image_size, joint_names=schema.joint_names,
                                   action_names=schema.action_names, cameras=schema.cameras,
                                   rate_hz=schema.rate_hz)
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
    )


def _read_arrays(f: h5py.File, image_size: tuple[int, int]) -> dict[str, np.ndarray]:
    n = len(f[fmt.ACTIONS_KEY])
    out: dict[str, np.ndarray] = {}
    for cam in CAMERAS:
        ds = f[fmt.image_key(cam)]
        if tuple(ds.shape[1:3]) == tuple(image_size):
            out[cam] = ds[()]
        else:  # resized frame by frame so a raw-size file never sits in RAM whole
            out[cam] = np.stack([resize_image(ds[i], image_size) for i in range(n)])
    out["joint"] = f[fmt.JOINT_PATH][()].astype(np.float32)
    out["actions"] = f[fmt.ACTIONS_KEY][()].astype(np.float32)
    out["rewards"] = f[fmt.REWARDS_KEY][()].astype(np.float32)
    out["terminals"] = f[fmt.TERMINALS_KEY][()].astype(bool)
    out["timeouts"] = (f[fmt.TIMEOUTS_KEY][()].astype(bool) if fmt.TIMEOUTS_KEY in f
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
