"""bench/advantage_analysis.py: a LAPO checkpoint's critic applied to every sample of a dataset,
grouped by the recorded outcome of each episode."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from episode_files import write_episode
from learning_fixtures import SMALL_IMAGE, run_train

ROOT = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("advantage_analysis", ROOT / "bench" / "advantage_analysis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_dataset(folder: Path, outcomes: list[str], n: int = 40) -> Path:
    folder.mkdir()
    for i, outcome in enumerate(outcomes, start=1):
        path = folder / f"episode_{i:04d}.hdf5"
        write_episode(path, n, size=SMALL_IMAGE, terminal=True, complete=True, offset=0.1 * i)
        with h5py.File(path, "r+") as f:
            f["rewards"][...] = np.linspace(0.0, 1.0 if outcome == "success" else 0.2, n, dtype=np.float32)
            f.attrs["outcome"] = outcome
            if outcome == "failure":
                f.attrs["failure_mode"] = "grasp_offset"
    return folder


@pytest.mark.parametrize("estimate", ["td", "mc", "mc_fit"])
def test_groups_every_sample_by_outcome(tmp_path: Path, estimate: str) -> None:
    data = write_dataset(tmp_path / "data", ["success", "failure", "success", "failure"])
    run = run_train(data, tmp_path / "runs", "adv", 20, "--algo", "lapo", "--train_test_split", "0.5",
                    "--advantage_estimate", estimate)
    out = tmp_path / "analysis"
    bench = load_bench()
    assert bench.main([str(run / "model_final_lapo.pth"), str(data), "--out", str(out)]) == 0
    report = json.loads((out / "advantages.json").read_text())
    groups = report["groups"]
    assert set(groups) == {"success", "failure (grasp_offset)"}
    for g in groups.values():
        assert g["episodes"] == 2 and g["samples"] == 80
        # each weight is expectile or 1 - expectile, so their mean lies between
        assert 0.1 - 1e-6 <= g["mean_weight"] <= 0.9 + 1e-6
        assert np.isfinite([g["mean_advantage"], g["mean_v"], g["policy_action_mse"]]).all()
    # the successes' rewards climb to 1, the failures' to 0.2: more reward lies ahead of the former
    assert groups["success"]["mean_return"] > groups["failure (grasp_offset)"]["mean_return"] > 0
    assert (out / "advantages.png").stat().st_size > 0


def test_refuses_a_bc_checkpoint(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", ["success", "failure"])
    run = run_train(data, tmp_path / "runs", "bc", 5, "--algo", "bc", "--train_test_split", "0.5")
    with pytest.raises(SystemExit):
        load_bench().main([str(run / "model_final_bc.pth"), str(data), "--out", str(tmp_path / "a")])
