"""Validation of the HDF5 layout: every bad-file kind is rejected with a message naming the field."""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from lapo_learning import dataset_format as fmt
from lapo_learning.create_dataset import main as create_dataset_main


def _copy(sample_file: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data.hdf5"
    shutil.copy(sample_file, dst)
    return dst


def _missing_key(f: h5py.File) -> None:
    del f["observations/right_image"]


def _short_rewards(f: h5py.File) -> None:
    r = f["rewards"][:-3]
    del f["rewards"]
    f["rewards"] = r


def _float_images(f: h5py.File) -> None:
    img = f["observations/global_image"][()].astype(np.float32)
    del f["observations/global_image"]
    f["observations/global_image"] = img


def _nan_joint(f: h5py.File) -> None:
    f["observations/joint"][5, 3] = np.nan


def _nan_action(f: h5py.File) -> None:
    f["actions"][7, 0] = np.inf


def _int_terminals(f: h5py.File) -> None:
    t = f["terminals"][()].astype(np.int64)
    del f["terminals"]
    f["terminals"] = t


def _bad_episode_ends(f: h5py.File) -> None:
    del f["episode_ends"]
    f["episode_ends"] = np.array([10, 5, len(f["actions"])])


@pytest.mark.parametrize("corrupt, expected", [
    (_missing_key, "observations/right_image: missing"),
    (_short_rewards, "rewards: has"),
    (_float_images, "observations/global_image: dtype float32, expected uint8"),
    (_nan_joint, "observations/joint: 1 NaN/inf values (first rows [5])"),
    (_nan_action, "actions: 1 NaN/inf"),
    (_int_terminals, "terminals: dtype int64"),
    (_bad_episode_ends, "episode_ends: must be strictly increasing"),
])
def test_validate_rejects_bad_file(sample_file, tmp_path, capsys, corrupt, expected):
    path = _copy(sample_file, tmp_path)
    with h5py.File(path, "a") as f:
        corrupt(f)
    problems = fmt.validate_file(path)
    assert any(expected in p for p in problems), problems
    assert create_dataset_main(["--validate", "--hdf5_path", str(path)]) == 1
    out = capsys.readouterr().out
    assert expected in out and str(path) in out


def test_validate_rejects_empty_and_non_hdf5(tmp_path, capsys):
    empty = tmp_path / "empty.hdf5"
    h5py.File(empty, "w").close()
    assert fmt.validate_file(empty) == [
        "file is empty: no datasets (expected observations/, actions, rewards, terminals)"]
    text = tmp_path / "notes.hdf5"
    text.write_text("not a dataset")
    assert fmt.validate_file(text) == ["not an HDF5 file (wrong format or not a dataset)"]
    for path in (empty, text):
        assert create_dataset_main(["--validate", "--hdf5_path", str(path)]) == 1
    assert "not an HDF5 file" in capsys.readouterr().out


def test_validate_accepts_sample_and_prints_tree(sample_file, capsys):
    assert fmt.validate_file(sample_file) == []
    assert create_dataset_main(["--validate", "--hdf5_path", str(sample_file)]) == 0
    out = capsys.readouterr().out
    assert "observations/" in out and "left_image: uint8, shape=(" in out and "valid" in out


def test_create_sample_never_overwrites(sample_file):
    before = sample_file.stat().st_mtime_ns
    assert create_dataset_main(["--create_sample", "--output", str(sample_file), "--n_samples", "10"]) == 1
    assert sample_file.stat().st_mtime_ns == before


def test_episode_ends_derived_from_terminals_and_timeouts(tmp_path):
    path = tmp_path / "flat.hdf5"
    n = 10
    with h5py.File(path, "w") as f:
        f["terminals"] = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool)
        f["timeouts"] = np.array([0, 0, 0, 0, 0, 1, 0, 0, 0, 0], bool)
        f["actions"] = np.zeros((n, 2), np.float32)
        np.testing.assert_array_equal(fmt.episode_ends(f), [3, 6, 10])
