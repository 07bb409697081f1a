"""Shared helpers for the lapo_learning tests: small sample datasets and short training runs."""
from __future__ import annotations

from pathlib import Path

from lapo_learning import train
from lapo_learning.create_dataset import create_sample

SMALL_IMAGE = (40, 40)  # the smallest size cnn_3conv_1fc_0 handles comfortably: keeps CPU tests fast


def make_sample(path: Path, n_samples: int = 600, poor_fraction: float = 0.0, seed: int = 0) -> Path:
    create_sample(path, n_samples, poor_fraction, seed, SMALL_IMAGE)
    return path


def train_args(data: Path, results: Path, exp: str, steps: int, *extra: str) -> list[str]:
    return ["--hdf5_path", str(data), "--results_dir", str(results), "--ExpID", exp,
            "--max_timesteps", str(steps), "--device", "cpu", "--batch_size", "32",
            "--image_size", *map(str, SMALL_IMAGE), "--log_level", "WARNING", *extra]


def run_train(data: Path, results: Path, exp: str, steps: int, *extra: str) -> Path:
    assert train.main(train_args(data, results, exp, steps, *extra)) == 0
    return results / f"Exp{exp}" / train.RUN_SUBDIR
