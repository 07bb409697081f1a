"""Converters between lapo datasets and the formats robot teams already hold (no ROS needed).

    python -m lapo_learning.convert from-rosbag2 BAG --config config/recorder.yaml --output DIR
    python -m lapo_learning.convert from-aloha SRC --output DIR
    python -m lapo_learning.convert to-lerobot DATASET --output DIR --repo_id NAME

`from-*` write lapo episode files (`episode_NNNN.hdf5`, numbered after those already in DIR) with
the recorder's episode writer, so a conversion that stops half-way leaves its last file marked
incomplete (`complete=False`), which loaders skip. `to-lerobot` writes a LeRobotDataset v3 folder
next to DIR and renames it into place only when it is whole.
"""
from __future__ import annotations

import importlib
from types import ModuleType


class ConvertError(ValueError):
    """The input cannot be converted; the message names the file, topic or key and what was expected."""


def require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency of one converter, or ConvertError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise ConvertError(f"{purpose} needs the Python package {package!r} ({exc}): "
                           f"pip install {package}, or pip install -e .[convert]") from exc
