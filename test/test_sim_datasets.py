"""Datasets the sim benchmark assembles from recorded episode files (lapo_ros.sim.recording):
renumbered copies, the recorder's sparse outcome reward in place of the stage rewards, and the
demonstrator's failure mode written into the botched demonstrations' files."""
from pathlib import Path

import h5py
import numpy as np
import pytest

from lapo_learning import dataset_format as fmt
from lapo_learning.episode_writer import FAILURE_MODE_ATTR, EpisodeConfig, EpisodeWriter
from lapo_learning.schema import CAMERAS
from lapo_ros.sim.episode_stats import EpisodeResult
from lapo_ros.sim.processes import LoopError
from lapo_ros.sim.recording import RecordConfig, assemble_dataset, label_failure_modes

NAMES = [f"j{i}" for i in range(4)]
STAGES = [0.0, 1.0, 2.0, 2.0, 3.0, 4.0]  # the sim's stage rewards along one episode


def record(path: Path, outcome: str, reward_topic: bool, first: int = 0) -> Path:
    """An episode as the recorder writes it, with the stage rewards of a reward topic or without one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    streams = [*CAMERAS, "joint", "action"]
    writer = EpisodeWriter(path, EpisodeConfig(joint_names=NAMES, action_names=NAMES, rate_hz=30.0, streams=streams,
                                               has_reward=reward_topic))
    for k, stage in enumerate(STAGES):
        images = {c: np.full((12, 10, 3), first + k, np.uint8) for c in CAMERAS}
        writer.append(images, np.full(4, first + k, np.float32), np.full(4, -k, np.float32),
                      stage if reward_topic else None, 100.0 + k / 30, {s: 100.0 + k / 30 for s in streams})
    writer.close(outcome)
    return path


def read(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {key: f[key][()] for key in (fmt.REWARDS_KEY, fmt.TERMINALS_KEY, fmt.TIMEOUTS_KEY, fmt.ACTIONS_KEY,
                                             fmt.JOINT_PATH, fmt.image_key(CAMERAS[0]))} | dict(f.attrs)


def test_outcome_reward_is_what_the_recorder_writes_without_a_reward_topic(tmp_path: Path) -> None:
    outcomes = ("success", "failure", "timeout")
    stage = [record(tmp_path / "stage" / f"{o}.hdf5", o, reward_topic=True) for o in outcomes]
    sparse = [record(tmp_path / "sparse" / f"{o}.hdf5", o, reward_topic=False) for o in outcomes]
    files = assemble_dataset(stage, tmp_path / "outcome", outcome_reward=True)
    assert [f.name for f in files] == ["episode_0001.hdf5", "episode_0002.hdf5", "episode_0003.hdf5"]
    for copy, src, expected in zip(files, stage, sparse):
        got, recorded, without_topic = read(copy), read(src), read(expected)
        np.testing.assert_array_equal(got[fmt.REWARDS_KEY], without_topic[fmt.REWARDS_KEY])
        assert got["reward_source"] == without_topic["reward_source"] == "sparse_outcome"
        np.testing.assert_array_equal(recorded[fmt.REWARDS_KEY], STAGES)  # the source keeps its stage rewards
        for key in (fmt.TERMINALS_KEY, fmt.TIMEOUTS_KEY, fmt.ACTIONS_KEY, fmt.JOINT_PATH, fmt.image_key(CAMERAS[0]),
                    "outcome"):
            np.testing.assert_array_equal(got[key], recorded[key])
    assert read(files[0])[fmt.REWARDS_KEY].tolist() == [0, 0, 0, 0, 0, 1]  # success: 1 on the last step


def test_recording_defaults_to_the_outcome_reward_and_names_a_wrong_kind() -> None:
    assert RecordConfig(episodes=1).rewards == "outcome"  # what a real robot's recorder has
    with pytest.raises(ValueError, match=r"rewards must be one of \('outcome', 'stage'\), got 'stages'"):
        RecordConfig(episodes=1, rewards="stages")


def test_assembled_dataset_keeps_the_order_and_is_built_once(tmp_path: Path) -> None:
    clean = [record(tmp_path / "clean" / f"{i}.hdf5", "success", True, first=10 * i) for i in range(2)]
    failing = [record(tmp_path / "failing" / f"{i}.hdf5", "failure", True, first=50 + 10 * i) for i in range(2)]
    stale = tmp_path / "mixed.partial"  # left by a build that was interrupted
    stale.mkdir()
    (stale / "episode_0009.hdf5").write_bytes(b"half a copy")
    files = assemble_dataset(clean + failing, tmp_path / "mixed")
    assert not stale.exists() and len(files) == 4
    assert [read(f)["outcome"] for f in files] == ["success", "success", "failure", "failure"]
    assert [read(f)[fmt.JOINT_PATH][0, 0] for f in files] == [0, 10, 50, 60]
    np.testing.assert_array_equal(read(files[2])[fmt.REWARDS_KEY], STAGES)  # stage rewards kept
    # A later run reuses it as it is (e.g. a benchmark resumed with other conditions).
    assert assemble_dataset(clean, tmp_path / "mixed") == files


def test_outcome_reward_needs_the_outcome(tmp_path: Path) -> None:
    path = record(tmp_path / "src" / "a.hdf5", "success", True)
    with h5py.File(path, "r+") as f:
        del f.attrs["outcome"]
    with pytest.raises(LoopError, match="episode_0001.hdf5: no 'outcome' attribute"):
        assemble_dataset([path], tmp_path / "outcome", outcome_reward=True)
    assert not (tmp_path / "outcome").exists()  # no dataset under its name, only the .partial


def test_failure_modes_are_written_into_the_botched_demonstrations(tmp_path: Path) -> None:
    outcomes = {"success": "", "failure": "left_miss"}  # a clean demonstration, then a botched one
    files = [record(tmp_path / "rec" / f"episode_{i:04d}.hdf5", o, True) for i, o in enumerate(outcomes, 1)]
    results = [EpisodeResult(seed=i, success=o == "success", episode_return=STAGES[-1] if o == "success" else 2.0,
                             reward_sum=0.0, reward_ticks=0, sim_duration=6.4, commands=0, max_joint_change=0.0,
                             outcome=o, failure_mode=mode) for i, (o, mode) in enumerate(outcomes.items(), 1)]
    label_failure_modes(files, results)
    assert FAILURE_MODE_ATTR not in read(files[0]) and read(files[1])[FAILURE_MODE_ATTR] == "left_miss"
    mixed = assemble_dataset(files, tmp_path / "mixed")
    assert read(mixed[1])[FAILURE_MODE_ATTR] == "left_miss"  # it travels into the benchmark's mixed sets
    # A file more or less than demonstrations (another writer in the folder): no guessing which is which.
    with pytest.raises(LoopError, match="wrote 2 episode files for 1 demonstrations"):
        label_failure_modes(files, results[1:])
