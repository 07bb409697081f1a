"""The HDF5 episode layout (the seed's contract plus optional extensions) and its validation.

Required (the seed's layout, never to be broken)::

    observations/{left_image,right_image,global_image}  [N,H,W,3] uint8
    observations/joint                                  [N,J]     float
    actions                                             [N,A]     float
    rewards                                             [N]       float
    terminals                                           [N]       bool

Optional extensions:

    timeouts      [N] bool     episode cut by a time limit (bootstrapped, unlike a terminal)
    episode_ends  [E] int64    exclusive end index of every episode, increasing, last == N
    timestamps    [N] float64  sample time (s), written by the recorder
    stamps/<stream> [N] float64 header stamp of each stream's message used for the sample
    attrs: `lapo_schema` (ObservationSchema JSON), `complete` (False while an episode is being
           written or when it was interrupted), `rate_hz`, plus recorder metadata.

Without `episode_ends`, episodes end after every terminal/timeout and at the end of the file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lapo_learning.schema import CAMERAS, ObservationSchema

OBS_GROUP = "observations"
JOINT_KEY = "joint"
ACTIONS_KEY = "actions"
REWARDS_KEY = "rewards"
TERMINALS_KEY = "terminals"
TIMEOUTS_KEY = "timeouts"
EPISODE_ENDS_KEY = "episode_ends"
TIMESTAMPS_KEY = "timestamps"
STAMPS_GROUP = "stamps"
SCHEMA_ATTR = "lapo_schema"
COMPLETE_ATTR = "complete"
RATE_ATTR = "rate_hz"
EPISODE_GLOB = "*.hdf5"


class DatasetError(ValueError):
    """A dataset file does not follow the layout; the message names the file and the field."""


def image_key(camera: str) -> str:
    return f"{OBS_GROUP}/{camera}"


JOINT_PATH = f"{OBS_GROUP}/{JOINT_KEY}"


def open_episode(path: str | Path) -> h5py.File:
    """Open a dataset file read-only. `swmr=True` because the recorder writes in SWMR mode: a file
    whose writer was killed can only be opened that way (it then reads `complete=False`)."""
    return h5py.File(path, "r", swmr=True)


def validate_file(path: str | Path) -> list[str]:
    """Every layout problem of one file, as `'<key>: <problem>'` strings (empty list = valid).

    Callers prefix the file name."""
    path = Path(path)
    if not path.is_file():
        return ["no such file"]
    if not h5py.is_hdf5(path):
        return ["not an HDF5 file (wrong format or not a dataset)"]
    try:
        with open_episode(path) as f:
            return _validate_open(f)
    except OSError as exc:  # truncated or corrupt HDF5
        return [f"cannot be read as HDF5 ({exc})"]


def _validate_open(f: h5py.File) -> list[str]:
    if len(f.keys()) == 0:
        return ["file is empty: no datasets (expected observations/, actions, rewards, terminals)"]
    problems: list[str] = []
    required = [image_key(c) for c in CAMERAS] + [JOINT_PATH, ACTIONS_KEY, REWARDS_KEY, TERMINALS_KEY]
    missing = [k for k in required if k not in f]
    problems += [f"{k}: missing (required key)" for k in missing]
    present = {k: f[k] for k in required if k in f}
    n = len(present[ACTIONS_KEY]) if ACTIONS_KEY in present else None
    for key, ds in present.items():
        if not isinstance(ds, h5py.Dataset):
            problems.append(f"{key}: is a group, expected a dataset")
            continue
        if n is not None and ds.shape[:1] != (n,):
            problems.append(f"{key}: has {ds.shape[0] if ds.shape else 0} rows, expected N={n} "
                            f"(the length of {ACTIONS_KEY})")
    for cam in CAMERAS:
        ds = present.get(image_key(cam))
        if isinstance(ds, h5py.Dataset):
            if ds.dtype != np.uint8:
                problems.append(f"{image_key(cam)}: dtype {ds.dtype}, expected uint8")
            if ds.ndim != 4 or ds.shape[-1] != 3:
                problems.append(f"{image_key(cam)}: shape {ds.shape}, expected [N,H,W,3]")
    for key in (JOINT_PATH, ACTIONS_KEY):
        ds = present.get(key)
        if isinstance(ds, h5py.Dataset):
            if not np.issubdtype(ds.dtype, np.floating):
                problems.append(f"{key}: dtype {ds.dtype}, expected float32")
            elif ds.ndim != 2:
                problems.append(f"{key}: shape {ds.shape}, expected [N,D]")
            else:
                bad = ~np.isfinite(ds[()])
                if bad.any():
                    rows = np.unique(np.nonzero(bad)[0])
                    problems.append(f"{key}: {int(bad.sum())} NaN/inf values (first rows {rows[:5].tolist()})")
    ds = present.get(REWARDS_KEY)
    if isinstance(ds, h5py.Dataset):
        if ds.ndim != 1 or not (np.issubdtype(ds.dtype, np.floating) or np.issubdtype(ds.dtype, np.integer)):
            problems.append(f"{REWARDS_KEY}: dtype {ds.dtype} shape {ds.shape}, expected float [N]")
        elif not np.isfinite(ds[()]).all():
            problems.append(f"{REWARDS_KEY}: contains NaN/inf")
    for key in (TERMINALS_KEY, TIMEOUTS_KEY):
        ds = f.get(key)
        if isinstance(ds, h5py.Dataset) and (ds.dtype != np.bool_ or ds.ndim != 1):
            problems.append(f"{key}: dtype {ds.dtype} shape {ds.shape}, expected bool [N]")
        if key == TIMEOUTS_KEY and isinstance(ds, h5py.Dataset) and n is not None and len(ds) != n:
            problems.append(f"{key}: has {len(ds)} rows, expected N={n}")
    if n == 0:
        problems.append(f"{ACTIONS_KEY}: N=0, the file holds no samples")
    if EPISODE_ENDS_KEY in f and n is not None:
        ends = np.asarray(f[EPISODE_ENDS_KEY][()])
        if ends.ndim != 1 or len(ends) == 0 or not np.issubdtype(ends.dtype, np.integer):
            problems.append(f"{EPISODE_ENDS_KEY}: expected a non-empty int [E] array")
        elif np.any(np.diff(ends) <= 0) or ends[0] <= 0 or ends[-1] != n:
            problems.append(f"{EPISODE_ENDS_KEY}: must be strictly increasing, > 0, last == N={n}; "
                            f"got {ends[:5].tolist()}...{ends[-1:].tolist()}")
    if SCHEMA_ATTR in f.attrs:
        try:
            ObservationSchema.from_json(_attr_str(f.attrs[SCHEMA_ATTR]))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(f"attrs/{SCHEMA_ATTR}: invalid schema JSON ({exc})")
    return problems


def _attr_str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def is_complete(f: h5py.File) -> bool:
    """False for an episode the recorder did not close cleanly (still open, interrupted, crashed)."""
    return bool(f.attrs.get(COMPLETE_ATTR, True))


def read_schema(f: h5py.File) -> ObservationSchema:
    """The schema stored in the file, or one derived from its shapes when it carries none."""
    if SCHEMA_ATTR in f.attrs:
        return ObservationSchema.from_json(_attr_str(f.attrs[SCHEMA_ATTR]))
    image_shape = f[image_key(CAMERAS[0])].shape
    rate = f.attrs.get(RATE_ATTR)
    return ObservationSchema(
        image_size=(image_shape[1], image_shape[2]),
        joint_names=ObservationSchema.default_names("joint", f[JOINT_PATH].shape[1]),
        action_names=ObservationSchema.default_names("action", f[ACTIONS_KEY].shape[1]),
        rate_hz=float(rate) if rate is not None else None,
    )


def episode_ends(f: h5py.File) -> np.ndarray:
    """Exclusive end index of every episode in the file."""
    n = len(f[ACTIONS_KEY])
    if EPISODE_ENDS_KEY in f:
        return np.asarray(f[EPISODE_ENDS_KEY][()], dtype=np.int64)
    done = np.asarray(f[TERMINALS_KEY][()], dtype=bool)
    if TIMEOUTS_KEY in f:
        done = done | np.asarray(f[TIMEOUTS_KEY][()], dtype=bool)
    ends = np.nonzero(done)[0] + 1
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    return ends.astype(np.int64)


def describe_tree(f: h5py.File) -> list[str]:
    """The file's tree as printed by `create_dataset --validate` (the seed's format)."""
    lines: list[str] = []

    def walk(group: h5py.Group, indent: str) -> None:
        keys = list(group.keys())
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            branch = "└─" if last else "├─"
            item = group[key]
            if isinstance(item, h5py.Group):
                lines.append(f"{indent}{branch} {key}/")
                walk(item, indent + ("   " if last else "│  "))
            else:
                lines.append(f"{indent}{branch} {key}: {item.dtype}, shape={item.shape}")

    walk(f, "  ")
    for key, value in f.attrs.items():
        text = _attr_str(value) if not isinstance(value, np.ndarray) else json.dumps(value.tolist())
        lines.append(f"  @{key} = {text[:120]}")
    return lines
