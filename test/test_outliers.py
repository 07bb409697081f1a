"""Implausible joint/action values: robust ranges, validation reports, training refusal, robust limits."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from lapo_learning import dataset_format as fmt
from lapo_learning import train
from lapo_learning.create_dataset import main as create_dataset_main
from lapo_learning.outliers import find_outliers, robust_range
from lapo_learning.schema import ObservationSchema
from learning_fixtures import run_train, train_args

ROW, COLUMN = 17, 3


def test_robust_range_ignores_the_extremes_and_outliers_are_named():
    rng = np.random.default_rng(0)
    values = rng.uniform(-1.0, 1.0, (300, 4))
    values[ROW, COLUMN] = 1e30
    values[40, 0] = -1e6
    low, high = robust_range(values)
    assert np.all(low >= -1.0) and np.all(high <= 1.0) and np.all(high - low > 1.5)
    found = find_outliers(values)
    assert [(o.column, o.rows.tolist(), o.values.tolist()) for o in found] == [(0, [40], [-1e6]), (3, [ROW], [1e30])]
    # Two rows: nothing to tell apart, the range is both values.
    np.testing.assert_array_equal(robust_range(np.array([[0.0], [5.0]])), ([0.0], [5.0]))
    # Real motion is not flagged: a gripper held shut that opens for a few rows, a fast sweep.
    gripper = np.full((300, 1), 0.021)
    gripper[100:103] = 0.057
    sweep = np.linspace(-3.0, 3.0, 300)[:, None]
    assert find_outliers(np.hstack([gripper, sweep])) == []
    # Beyond the absolute bound whatever the column holds.
    assert [o.column for o in find_outliers(np.full((10, 2), 2e4))] == [0, 1]


@pytest.fixture
def poisoned(sample_file, tmp_path):
    path = tmp_path / "poisoned.hdf5"
    shutil.copy(sample_file, path)
    with h5py.File(path, "a") as f:
        schema = fmt.read_schema(f)
        names = tuple(f"arm_{i}" for i in range(schema.action_dim))
        f.attrs[fmt.SCHEMA_ATTR] = ObservationSchema(schema.image_size, names, names, schema.cameras,
                                                     schema.rate_hz).to_json()
        f["actions"][ROW, COLUMN] = 1e30
    return path


def test_validate_flags_an_implausible_value_naming_file_field_joint_row_value(sample_file, poisoned, capsys):
    assert fmt.validate_file(sample_file) == []  # the clean sample has none
    problems = fmt.validate_file(poisoned)
    assert len(problems) == 1 and problems[0].startswith(f"actions: column {COLUMN} (arm_{COLUMN})"), problems
    assert f"row {ROW} = 1e+30" in problems[0]
    assert fmt.validate_file(poisoned, check_outliers=False) == []
    assert create_dataset_main(["--validate", "--hdf5_path", str(poisoned)]) == 1
    out = capsys.readouterr().out
    assert f"{poisoned}: actions: column {COLUMN} (arm_{COLUMN})" in out and f"row {ROW} = 1e+30" in out


def test_train_refuses_outliers_unless_allowed_and_limits_stay_robust(poisoned, tmp_path, caplog):
    assert train.main(train_args(poisoned, tmp_path, "refused", 5)) == 1
    assert str(poisoned) in caplog.text and f"row {ROW} = 1e+30" in caplog.text
    assert "--allow_outliers" in caplog.text
    assert not (tmp_path / "Exprefused" / train.RUN_SUBDIR / "model_final_lapo.pth").exists()

    run_dir = run_train(poisoned, tmp_path, "allowed", 5, "--allow_outliers", "--train_test_split", "1.0")
    stats = json.loads(torch.load(run_dir / "model_final_lapo.pth", weights_only=True)["stats"])
    assert stats["action_max"][COLUMN] == pytest.approx(1e30, rel=1e-6)  # the raw extreme, kept for what it is
    with h5py.File(poisoned) as f:
        clean = np.delete(f["actions"][()], ROW, axis=0)
    assert clean.min(axis=0)[COLUMN] <= stats["action_low"][COLUMN] < stats["action_high"][COLUMN] \
        <= clean.max(axis=0)[COLUMN]
    np.testing.assert_allclose(stats["action_high"], robust_range(clean)[1], rtol=0.05, atol=0.05)
