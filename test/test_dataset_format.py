"""Validation of the HDF5 layout: every bad-file kind is rejected with a message naming the field."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from episode_files import (
    corrupt_image_chunk,
    truncate,
    write_compressed_episode,
    write_empty_partial,
    write_episode,
    write_presized,
)

from lapo_learning import dataset_format as fmt
from lapo_learning.create_dataset import main as create_dataset_main
from lapo_learning.dataset import load_dataset
from lapo_learning.schema import ObservationSchema


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


def _zero_size_images(f: h5py.File) -> None:
    n = len(f["actions"])
    del f["observations/left_image"]
    f["observations/left_image"] = np.zeros((n, 0, 0, 3), np.uint8)


def _zero_joint_columns(f: h5py.File) -> None:
    n = len(f["actions"])
    del f["observations/joint"]
    f["observations/joint"] = np.zeros((n, 0), np.float32)


def _schema_edit(**changes):
    def edit(f: h5py.File) -> None:
        stored = json.loads(f.attrs[fmt.SCHEMA_ATTR])
        stored.update({k: change(stored[k]) for k, change in changes.items()})
        f.attrs[fmt.SCHEMA_ATTR] = json.dumps(stored)
    return edit


@pytest.mark.parametrize("corrupt, expected", [
    (_missing_key, "observations/right_image: missing"),
    (_short_rewards, "rewards: has"),
    (_float_images, "observations/global_image: dtype float32, expected uint8"),
    (_nan_joint, "observations/joint: 1 NaN/inf values (first rows [5])"),
    (_nan_action, "actions: 1 NaN/inf"),
    (_int_terminals, "terminals: dtype int64"),
    (_bad_episode_ends, "episode_ends: must be strictly increasing"),
    # issue 12: what train refused with a traceback, validate reports
    (_zero_size_images, "observations/left_image: images of 0x0 pixels, expected H and W >= 1"),
    (_zero_joint_columns, "observations/joint: 0 columns, expected at least one joint dimension"),
    # issue 11: the stored schema against the shapes
    (_schema_edit(joint_names=lambda names: names[:14]),
     "attrs/lapo_schema: 14 joint_names, but observations/joint has 16 columns"),
    (_schema_edit(action_names=lambda names: names + ["extra_0", "extra_1"]),
     "attrs/lapo_schema: 18 action_names, but actions has 16 columns"),
    (_schema_edit(image_size=lambda size: [48, 64]),
     "attrs/lapo_schema: image_size [48, 64], but observations/left_image holds 40x40 images"),
    (_schema_edit(cameras=lambda cams: cams[:2] + ["top"]),
     "attrs/lapo_schema: cameras ['left_image', 'right_image', 'top'], but the layout's cameras are"),
    (_schema_edit(rate_hz=lambda rate: 30.0), "attrs/lapo_schema: rate_hz 30.0, but attrs/rate_hz is 10.0"),
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
    # the loader refuses with the same words (one check behind both), never a shape error later
    with pytest.raises(fmt.DatasetError, match=re.escape(f"{path}: {expected}")):
        load_dataset(path)


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


def _set_names(path: Path, joint_prefix: str) -> None:
    with h5py.File(path, "a") as f:
        names = ObservationSchema.default_names(joint_prefix, 16)
        f.attrs[fmt.SCHEMA_ATTR] = ObservationSchema(image_size=(48, 64), joint_names=names,
                                                     action_names=names).to_json()


def test_validate_reports_files_that_differ_from_the_others(tmp_path, capsys):
    """Issue 12: files of one directory with different joint counts or names; the odd one is
    named, even when it comes first, and the loader can leave it out."""
    write_episode(tmp_path / "ep_000.hdf5", 3, joints=14)
    for i in range(1, 5):
        write_episode(tmp_path / f"ep_00{i}.hdf5", 3)
    for i in range(1, 4):
        _set_names(tmp_path / f"ep_00{i}.hdf5", "arm")
    _set_names(tmp_path / "ep_004.hdf5", "gripper")
    assert create_dataset_main(["--validate", "--hdf5_path", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert (f"{tmp_path / 'ep_000.hdf5'}: schema does not match ep_001.hdf5, whose schema most files share "
            "(its value first): joint_names: 16 entries != 14 entries") in out
    assert f"{tmp_path / 'ep_004.hdf5'}: schema does not match ep_001.hdf5" in out
    assert "joint_names differ at 0: 'arm_0' != 'gripper_0'" in out
    assert "3 usable, 0 incomplete (skipped), 2 invalid of 5 file(s)" in out
    ds = load_dataset(tmp_path, skip_invalid=True)
    assert ds.sources == [str(tmp_path / f"ep_00{i}.hdf5") for i in (1, 2, 3)]


@pytest.mark.parametrize("chunked, expected", [
    (True, ("rows never written: no data was ever stored in part of observations/left_image "
            "(99880 of 100000 chunks of 1 rows)")),
    (False, ("rows 120-99999 (99880 of N=100000) were never written: all images, joints and actions hold "
             "only the fill value there")),
], ids=["chunked", "contiguous"])
def test_rows_never_written_are_found(tmp_path, capsys, chunked, expected):
    """Issue 12: datasets declared with 100,000 rows of which 120 were written. HDF5 reads the
    rest as zeros, which train took for 99,880 demonstration rows."""
    path = tmp_path / "presized.hdf5"
    write_presized(path, 100_000, 120, chunked=chunked)
    assert any(expected in p for p in fmt.validate_file(path)), fmt.validate_file(path)
    assert create_dataset_main(["--validate", "--hdf5_path", str(path)]) == 1
    assert expected in capsys.readouterr().out
    with pytest.raises(fmt.DatasetError, match=re.escape(expected)):
        load_dataset(path)
    # written files are valid: a last chunk only partly used, and zero joints and actions at the
    # end (the arm at its zero pose) while the cameras show something
    full = tmp_path / "full.hdf5"
    write_presized(full, 300, 300, chunked=chunked)
    with h5py.File(full, "a") as f:
        f["observations/joint"][250:] = 0.0
        f["actions"][250:] = 0.0
    assert fmt.validate_file(full) == []
    assert len(load_dataset(full)) == 300


def test_validate_reports_incomplete_and_empty_partial_episodes_without_failing(tmp_path, capsys):
    """Issue 13: an interrupted episode (complete="False" as a string too) and the 0-row file a
    kill leaves are reported as incomplete episodes that loaders skip, not as invalid files."""
    write_episode(tmp_path / "ep_000.hdf5", 4)
    write_episode(tmp_path / "ep_001.hdf5", 4, complete="False")
    write_empty_partial(tmp_path / "ep_002.hdf5")
    assert create_dataset_main(["--validate", "--hdf5_path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"ep_001.hdf5\n{'=' * 60}" in out and "! episode marked incomplete (interrupted recording): loaders skip it" in out
    assert "! incomplete episode with no rows (the recording stopped before its first sample): loaders skip it" in out
    assert "1 usable, 2 incomplete (skipped), 0 invalid of 3 file(s)" in out and "invalid:" not in out
    assert create_dataset_main(["--validate", "--hdf5_path", str(tmp_path), "--include_incomplete"]) == 0
    assert "2 usable, 1 incomplete (skipped), 0 invalid of 3 file(s)" in capsys.readouterr().out
    (tmp_path / "ep_000.hdf5").unlink()  # nothing left to train on: train refuses, so validate fails
    assert create_dataset_main(["--validate", "--hdf5_path", str(tmp_path)]) == 1
    assert "no episode to load" in capsys.readouterr().out


def test_validate_names_truncated_and_corrupt_files(tmp_path, capsys):
    """Issue 10: validate reads every image, so a corrupt chunk that train would hit is reported first."""
    for i in range(3):
        write_compressed_episode(tmp_path / f"ep_00{i}.hdf5", 5)
    truncate(tmp_path / "ep_001.hdf5")
    corrupt_image_chunk(tmp_path / "ep_002.hdf5")
    assert create_dataset_main(["--validate", "--hdf5_path", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'ep_001.hdf5'}: cannot be read as HDF5 (" in out
    assert f"{tmp_path / 'ep_002.hdf5'}: observations/left_image: rows 0-4 cannot be read as HDF5 (" in out
    assert "truncated or corrupt" in out and "1 usable, 0 incomplete (skipped), 2 invalid of 3 file(s)" in out
