"""Multimodal LAPO (offline RL) for bimanual robots: datasets, models, training, inference.

Pure Python (no ROS import), so it trains on any machine with PyTorch. The public names are
imported lazily so that the recorder, which only needs the schema, does not import torch.
"""
from importlib import import_module
from typing import Any

_EXPORTS = {
    "CheckpointError": "lapo_learning.checkpoint",
    "Policy": "lapo_learning.policy",
    "load_policy": "lapo_learning.policy",
    "ObservationSchema": "lapo_learning.schema",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lapo_learning' has no attribute {name!r}")
