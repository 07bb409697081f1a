"""bench/operator_choice.py: where a policy's chunk lies between the clean and the failing operator's."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from episode_files import write_episode
from learning_fixtures import SMALL_IMAGE, run_train

ROOT = Path(__file__).resolve().parents[1]
SHIFT = 0.3  # the clean operator commands joint + SHIFT, the failing one joint - SHIFT


def load_bench():
    spec = importlib.util.spec_from_file_location("operator_choice", ROOT / "bench" / "operator_choice.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_operator(folder: Path, first: int, shift: float, poses: int = 3, n: int = 40) -> None:
    """Episodes first.. of one operator; pose p starts from the same joints for both operators."""
    folder.mkdir(exist_ok=True)
    for p in range(poses):
        path = folder / f"episode_{first + p:04d}.hdf5"
        write_episode(path, n, size=SMALL_IMAGE, terminal=True, complete=True, offset=0.1 * p)
        with h5py.File(path, "r+") as f:
            f["actions"][...] = f["observations/joint"][...] + shift


def test_segment_position() -> None:
    bench = load_bench()
    clean, failing = np.zeros((2, 3)), np.ones((2, 3))
    assert bench.segment_position(clean, clean, failing) == pytest.approx(0.0)
    assert bench.segment_position(failing, clean, failing) == pytest.approx(1.0)
    assert bench.segment_position(0.5 * failing, clean, failing) == pytest.approx(0.5)
    assert np.isnan(bench.segment_position(clean, clean, clean))


def test_refuses_a_dataset_that_is_not_paired(tmp_path: Path) -> None:
    bench = load_bench()
    odd = tmp_path / "odd"
    write_operator(odd, 1, SHIFT, poses=3)
    with pytest.raises(ValueError, match="even number"):
        bench.paired_episodes(odd)
    unpaired = tmp_path / "unpaired"
    write_operator(unpaired, 1, SHIFT, poses=2)
    write_episode(unpaired / "episode_0003.hdf5", 40, size=SMALL_IMAGE, complete=True, offset=5.0)
    write_episode(unpaired / "episode_0004.hdf5", 40, size=SMALL_IMAGE, complete=True, offset=0.1)
    with pytest.raises(ValueError, match="episode_0001.hdf5 and episode_0003.hdf5 do not start from the same state"):
        bench.paired_episodes(unpaired)


def test_a_policy_trained_on_one_operator_is_placed_at_its_end(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    write_operator(mixed, 1, SHIFT)
    write_operator(mixed, 4, -SHIFT)
    runs = {}
    for name, first in (("clean", 1), ("failing", 4)):
        only = tmp_path / name
        only.mkdir()
        for i in range(3):
            shutil.copy(mixed / f"episode_{first + i:04d}.hdf5", only / f"episode_{i + 1:04d}.hdf5")
        runs[name] = run_train(only, tmp_path / "runs", name, 120, "--algo", "bc", "--train_test_split", "1.0",
                               "--actor_lr", "3e-3") / "model_final_bc.pth"
    out = tmp_path / "choice"
    assert load_bench().main([str(mixed), str(runs["clean"]), str(runs["failing"]), "--ticks", "0", "20",
                              "--out", str(out)]) == 0
    report = json.loads((out / "operator_choice.json").read_text())
    assert report["pairs"] == 3
    for tick in ("0", "20"):
        clean = report["checkpoints"][str(runs["clean"])][tick]["policy"]
        failing = report["checkpoints"][str(runs["failing"])][tick]["policy"]
        assert clean["pairs"] == failing["pairs"] == 3
        assert clean["mean"] < 0.25, clean
        assert failing["mean"] > 0.75, failing
