"""Loading flat files and episode directories; episode boundaries; the episode split."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from lapo_learning import dataset_format as fmt
from lapo_learning.dataset import load_dataset, split_episodes
from lapo_learning.schema import CAMERAS, ObservationSchema


def write_episode(path: Path, n: int, *, joints: int = 16, size=(48, 64), terminal: bool = False,
                  timeout: bool = False, complete: bool | None = None, offset: float = 0.0) -> None:
    with h5py.File(path, "w") as f:
        for cam in CAMERAS:
            f[fmt.image_key(cam)] = np.full((n, *size, 3), 7, np.uint8)
        f[fmt.JOINT_PATH] = (np.arange(n * joints, dtype=np.float32).reshape(n, joints) + offset)
        f[fmt.ACTIONS_KEY] = np.ones((n, joints), np.float32)
        f[fmt.REWARDS_KEY] = np.zeros(n, np.float32)
        term = np.zeros(n, bool)
        term[-1] = terminal
        f[fmt.TERMINALS_KEY] = term
        to = np.zeros(n, bool)
        to[-1] = timeout
        f[fmt.TIMEOUTS_KEY] = to
        if complete is not None:
            f.attrs[fmt.COMPLETE_ATTR] = complete


def test_directory_of_episodes(tmp_path, caplog):
    write_episode(tmp_path / "ep_000.hdf5", 5, terminal=True, offset=0)
    write_episode(tmp_path / "ep_001.hdf5", 4, timeout=True, offset=1000)
    write_episode(tmp_path / "ep_002.hdf5", 6, complete=False, offset=2000)  # interrupted
    ds = load_dataset(tmp_path, image_size=(24, 32))
    assert len(ds) == 9 and ds.n_episodes == 2
    np.testing.assert_array_equal(ds.episode_ends, [5, 9])
    assert ds.images["left_image"].shape == (9, 24, 32, 3)
    assert "marked incomplete" in caplog.text
    # the next observation never crosses an episode boundary
    nxt = ds.next_index()
    assert nxt[3] == 4 and nxt[4] == 4 and nxt[8] == 8
    assert ds.joint[nxt[4], 0] < 1000  # still episode 0
    # terminal end is usable (no bootstrap), the time-out end has no next observation
    usable = ds.usable_for_td()
    assert usable[4] and not usable[8] and usable[:4].all()
    with_incomplete = load_dataset(tmp_path, include_incomplete=True)
    assert with_incomplete.n_episodes == 3 and with_incomplete.images["left_image"].shape[1:3] == (48, 64)


def test_joint_width_read_from_file(tmp_path):
    write_episode(tmp_path / "ep.hdf5", 3, joints=7)
    ds = load_dataset(tmp_path / "ep.hdf5")
    assert ds.schema.joint_dim == 7 and ds.schema.action_dim == 7


def test_mismatched_episode_files_refused(tmp_path):
    write_episode(tmp_path / "a.hdf5", 3, joints=16)
    write_episode(tmp_path / "b.hdf5", 3, joints=14)
    with pytest.raises(ValueError, match="b.hdf5 does not match"):
        load_dataset(tmp_path)


def test_schema_attr_names_are_kept(tmp_path):
    path = tmp_path / "ep.hdf5"
    write_episode(path, 3, joints=2)
    names = ObservationSchema(image_size=(48, 64), joint_names=("a", "b"), action_names=("a", "b"), rate_hz=30.0)
    with h5py.File(path, "a") as f:
        f.attrs[fmt.SCHEMA_ATTR] = names.to_json()
    ds = load_dataset(path)
    assert ds.schema.joint_names == ("a", "b") and ds.schema.rate_hz == 30.0


def test_flat_sample_file_and_episode_split(sample_file):
    ds = load_dataset(sample_file)
    with h5py.File(sample_file) as f:
        np.testing.assert_array_equal(ds.episode_ends, f["episode_ends"][()])
    train, val = split_episodes(ds.n_episodes, 0.8, seed=3)
    assert len(set(train) & set(val)) == 0 and len(train) + len(val) == ds.n_episodes
    assert abs(len(train) - 0.8 * ds.n_episodes) <= 1
    # whole episodes: every validation sample index belongs to a validation episode
    val_idx = set(ds.episode_indices(val).tolist())
    train_idx = set(ds.episode_indices(train).tolist())
    assert not val_idx & train_idx and len(val_idx) + len(train_idx) == len(ds)


def test_action_chunks_stay_inside_their_episode(tmp_path):
    write_episode(tmp_path / "ep_000.hdf5", 3)
    write_episode(tmp_path / "ep_001.hdf5", 2)
    ds = load_dataset(tmp_path)
    ds.actions = np.arange(len(ds), dtype=np.float32)[:, None] * np.ones((1, 16), np.float32)
    everything = np.arange(len(ds))
    chunks = ds.action_chunks(3, everything)
    assert chunks.shape == (5, 3, 16)
    # the tail of an episode repeats its last action, never the next episode's first
    np.testing.assert_array_equal(chunks[:, :, 0], [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]])
    np.testing.assert_array_equal(ds.action_chunks(3, np.array([4, 1])), chunks[[4, 1]])  # only those built
    np.testing.assert_array_equal(ds.action_chunks(1, everything)[:, 0], ds.actions)
    with pytest.raises(ValueError, match="chunk size must be >= 1"):
        ds.action_chunks(0, everything)
