"""Random-generator state in checkpoints, across devices.

A CPU generator's state (Mersenne Twister, 5056 bytes) and a CUDA one's (Philox seed and offset,
16 bytes) cannot be loaded into each other, yet a run trained on a GPU is resumed or deployed on a
CPU. Such a state seeds the generator instead: deterministic, but not the same random stream.
"""
from __future__ import annotations

import hashlib
import logging

import torch

log = logging.getLogger(__name__)


def load_generator_state(generator: torch.Generator, state: torch.Tensor, name: str) -> None:
    """Restore `generator` from `state`, or seed it from `state` when that was saved on another device type."""
    if state.numel() == generator.get_state().numel():
        generator.set_state(state)
        return
    seed = int.from_bytes(hashlib.sha256(state.cpu().numpy().tobytes()).digest()[:8], "little")
    generator.manual_seed(seed)
    log.warning("%s: the saved random state is from another device type than %s (trained on a GPU, resumed "
                "on a CPU or the reverse): seeded from it instead, so the random stream differs from the "
                "original run's", name, generator.device)
