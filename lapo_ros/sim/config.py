"""The YAML parameter files in config/ that the sim's nodes are started with, read without ROS, so
the main job and the in-process evaluator use the very values the nodes get."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def ros_params(file: str, node: str) -> dict[str, Any]:
    """The `ros__parameters` of `node` (its key in the file, e.g. "sim_robot" or "/**") in config/FILE."""
    return yaml.safe_load((CONFIG_DIR / file).read_text())[node]["ros__parameters"]
