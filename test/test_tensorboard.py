"""`lapo_learning.train` writes every progress.csv column as TensorBoard scalars (default on)."""
import csv
from pathlib import Path

import pytest

from learning_fixtures import run_train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_progress(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "progress.csv").open() as f:
        return list(csv.DictReader(f))


def test_every_progress_column_is_a_scalar_and_resume_replaces_the_tail(sample_file, tmp_path):
    run_dir = run_train(sample_file, tmp_path, "tb", 6, "--eval_freq", "2", "--save_freq", "4", "--algo", "bc")
    rows = read_progress(run_dir)
    scalars = read_scalars(run_dir)
    assert set(scalars) == set(rows[0]) - {"step"}
    for tag, points in scalars.items():
        assert [s for s, _ in points] == [int(r["step"]) for r in rows]
        assert [v for _, v in points] == pytest.approx([float(r[tag]) for r in rows], rel=1e-6)

    # Resuming from step 4 keeps steps 2 and 4 and logs 6 anew: no step appears twice.
    run_train(sample_file, tmp_path, "tb", 6, "--eval_freq", "2", "--save_freq", "4", "--algo", "bc",
              "--load_model", "4")
    resumed = read_scalars(run_dir)
    assert [s for s, _ in resumed["selection_metric"]] == [2, 4, 6]
    rows = read_progress(run_dir)
    assert [v for _, v in resumed["selection_metric"]] == pytest.approx(
        [float(r["selection_metric"]) for r in rows], rel=1e-6)


def test_no_tensorboard_writes_none(sample_file, tmp_path):
    run_dir = run_train(sample_file, tmp_path, "notb", 2, "--eval_freq", "2", "--algo", "bc", "--no_tensorboard")
    assert (run_dir / "progress.csv").exists()
    assert not (run_dir / "tensorboard").exists()
