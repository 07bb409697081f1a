"""Loading flat files and episode directories; episode boundaries; the episode split."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from episode_files import (
    corrupt_image_chunk,
    truncate,
    write_compressed_episode,
    write_empty_partial,
    write_episode,
)
from learning_fixtures import train_args

from lapo_learning import dataset_format as fmt
from lapo_learning import train
from lapo_learning.dataset import load_dataset, split_episodes
from lapo_learning.schema import ObservationSchema


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
    with pytest.raises(fmt.DatasetError, match="b.hdf5: schema does not match a.hdf5"):
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


def test_unreadable_files_are_named_and_can_be_skipped(tmp_path, caplog):
    """Issue 10: a truncated or corrupt file ends in an error naming it, not an OSError traceback;
    skip_invalid (train --skip_invalid) trains on the others with a warning naming each."""
    for i in range(4):
        write_compressed_episode(tmp_path / f"ep_00{i}.hdf5", 5)
    truncate(tmp_path / "ep_001.hdf5")
    corrupt_image_chunk(tmp_path / "ep_002.hdf5")  # opens, and its layout reads as valid
    with pytest.raises(fmt.DatasetError) as refused:
        load_dataset(tmp_path)
    assert f"{tmp_path / 'ep_001.hdf5'}: cannot be read as HDF5" in str(refused.value)
    assert "truncated or corrupt" in str(refused.value) and "--skip_invalid" in str(refused.value)

    ds = load_dataset(tmp_path, skip_invalid=True)
    assert ds.sources == [str(tmp_path / "ep_000.hdf5"), str(tmp_path / "ep_003.hdf5")] and len(ds) == 10
    skipped = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipping invalid" in r.getMessage()]
    assert len(skipped) == 2 and "ep_001.hdf5" in skipped[0] and "ep_002.hdf5" in skipped[1]
    assert "filter returned failure" in skipped[1]

    (tmp_path / "ep_001.hdf5").unlink()  # the corrupt image alone is found when it is read
    with pytest.raises(fmt.DatasetError, match="ep_002.hdf5: cannot be read as HDF5 .* truncated or corrupt"):
        load_dataset(tmp_path)

    # the trainer: one error line naming the file, or --skip_invalid
    caplog.clear()
    assert train.main(train_args(tmp_path, tmp_path / "results", "t", 1)) == 1
    assert "ep_002.hdf5: cannot be read as HDF5" in caplog.text
    ds, _, _ = train.prepare(
        train.build_parser().parse_args(train_args(tmp_path, tmp_path / "results", "t", 1, "--skip_invalid")))
    assert ds.sources == [str(tmp_path / "ep_000.hdf5"), str(tmp_path / "ep_003.hdf5")]


@pytest.mark.parametrize("stored, complete", [
    (True, True), (np.bool_(False), False), (1, True), (0, False), ("TRUE", True), ("false", False),
    ("False", False), (b"False", False), (np.bytes_(b"true"), True),
])
def test_complete_flag_is_parsed_strictly(tmp_path, stored, complete):
    """Issue 13: the flag as any tool stores it (bool, 0/1, "true"/"false" in any case) round-trips
    through HDF5 to what it says; complete="False" is incomplete (bool("False") is True)."""
    write_episode(tmp_path / "ep.hdf5", 3, complete=stored)
    with fmt.open_episode(tmp_path / "ep.hdf5") as f:
        assert fmt.is_complete(f) is complete
    assert fmt.check_file(tmp_path / "ep.hdf5").complete is complete


@pytest.mark.parametrize("stored", ["yes", "", 2, -1, 1.0, np.array([True, False])])
def test_complete_flag_that_is_not_a_boolean_names_the_file(tmp_path, stored):
    write_episode(tmp_path / "ep_000.hdf5", 3)
    write_episode(tmp_path / "ep_001.hdf5", 3, complete=stored)
    with pytest.raises(fmt.DatasetError, match=r"ep_001.hdf5: attrs/complete: expected a boolean \(true/false or 1/0\)"):
        load_dataset(tmp_path)
    with fmt.open_episode(tmp_path / "ep_001.hdf5") as f, pytest.raises(fmt.DatasetError, match="ep_001.hdf5"):
        fmt.is_complete(f)


def test_incomplete_and_empty_partial_episodes_are_skipped(tmp_path, caplog):
    """Issue 13: complete="False" (a string) is skipped like False; a 0-row file left by a kill
    (complete false, or no flag) is an incomplete episode the loader skips, even with
    include_incomplete (nothing to load), never an error."""
    write_episode(tmp_path / "ep_000.hdf5", 4, offset=0)
    write_episode(tmp_path / "ep_001.hdf5", 5, complete="False", offset=1000)
    write_episode(tmp_path / "ep_002.hdf5", 6, complete="true", offset=2000)
    write_empty_partial(tmp_path / "ep_003.hdf5", complete=False)
    write_empty_partial(tmp_path / "ep_004.hdf5", complete=None)
    ds = load_dataset(tmp_path)
    assert ds.sources == [str(tmp_path / f"ep_00{i}.hdf5") for i in (0, 2)] and len(ds) == 10
    assert "ep_001.hdf5: episode marked incomplete" in caplog.text
    for name in ("ep_003.hdf5", "ep_004.hdf5"):
        assert f"{name}: incomplete episode with no rows" in caplog.text
    with_incomplete = load_dataset(tmp_path, include_incomplete=True)
    assert with_incomplete.sources == [str(tmp_path / f"ep_00{i}.hdf5") for i in (0, 1, 2)]
    # a 0-row file that says it is complete is not a partial: it is refused
    write_empty_partial(tmp_path / "ep_005.hdf5", complete=True)
    with pytest.raises(fmt.DatasetError, match="ep_005.hdf5: actions: N=0, the file holds no samples but is marked"):
        load_dataset(tmp_path)


def test_recording_gaps_end_transitions_and_action_chunks(tmp_path):
    """Issue 10: a row marked after_gap (the recording paused before it) is never the next
    observation of the row before, and no action chunk spans the gap; the episode stays one."""
    path = tmp_path / "ep.hdf5"
    write_episode(path, 6, terminal=True)
    with h5py.File(path, "a") as f:
        f[fmt.AFTER_GAP_KEY] = np.array([0, 0, 0, 1, 0, 0], bool)
        f[fmt.ACTIONS_KEY][:, 0] = np.arange(6)
    assert fmt.validate_file(path) == []
    ds = load_dataset(path)
    assert ds.n_episodes == 1 and len(ds.episode_returns()) == 1
    np.testing.assert_array_equal(ds.next_index(), [1, 2, 2, 4, 5, 5])
    np.testing.assert_array_equal(ds.usable_for_td(), [1, 1, 0, 1, 1, 1])  # 5: the terminal
    np.testing.assert_array_equal(ds.action_chunks(3, np.arange(6))[:, :, 0],
                                  [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 5], [4, 5, 5], [5, 5, 5]])
    with h5py.File(path, "a") as f:
        del f[fmt.AFTER_GAP_KEY]
        f[fmt.AFTER_GAP_KEY] = np.zeros(5, bool)
    assert "after_gap: has 5 rows, expected N=6" in fmt.validate_file(path)
