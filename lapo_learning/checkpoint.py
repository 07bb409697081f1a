"""Self-describing checkpoints: weights + observation schema + normalisation + config.

Saved with `torch.save` as plain containers of tensors, numbers and JSON strings, and loaded with
`torch.load(weights_only=True)`, so opening a checkpoint cannot run code. Written to a temporary
file and renamed, so a crash mid-save never leaves a truncated checkpoint under the final name.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from lapo_learning.agent import Agent, AgentConfig
from lapo_learning.bc_agent import BCAgent
from lapo_learning.lapo_agent import LAPOAgent
from lapo_learning.schema import DatasetStatistics, ObservationSchema

FORMAT = "lapo-checkpoint"
VERSION = 1
VALUE_RANGE_KEY = "value_range"  # in DatasetStatistics.extra: scaled reward range, for LAPO's V clamp


class CheckpointError(ValueError):
    """The file is not a usable lapo checkpoint; the message says why."""


def build_agent(schema: ObservationSchema, config: AgentConfig, stats: DatasetStatistics,
                device: torch.device | str) -> Agent:
    if config.algo == "bc":
        return BCAgent(schema, config, device)
    return LAPOAgent(schema, config, device, tuple(stats.extra[VALUE_RANGE_KEY]))


def save_checkpoint(path: str | Path, agent: Agent, stats: DatasetStatistics, args: dict[str, Any],
                    step: int, *, with_optimizers: bool, rng: dict[str, Any] | None = None) -> None:
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "algo": agent.config.algo,
        "step": int(step),
        "schema": agent.schema.to_json(),
        "stats": json.dumps(stats.to_dict()),
        "config": json.dumps(agent.config.to_dict()),
        "args": json.dumps(args),
        "state": agent.state_dict(with_optimizers=with_optimizers),
    }
    if rng is not None:
        payload["rng"] = rng
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, checked for format; CheckpointError on anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors vary by corruption; all mean "not a checkpoint"
        raise CheckpointError(f"{path}: not a readable lapo checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lapo checkpoint (missing format tag {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} unsupported (expected {VERSION})")
    missing = [k for k in ("schema", "stats", "config", "args", "state", "step") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    return ckpt


def restore_agent(ckpt: dict[str, Any], device: torch.device | str, path: str | Path = "<checkpoint>"
                  ) -> tuple[Agent, DatasetStatistics]:
    try:
        schema = ObservationSchema.from_json(ckpt["schema"])
        stats = DatasetStatistics.from_dict(json.loads(ckpt["stats"]))
        config = AgentConfig.from_dict(json.loads(ckpt["config"]))
        agent = build_agent(schema, config, stats, device)
        agent.load_state_dict(ckpt["state"])
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint contents do not build a model ({exc})") from exc
    return agent, stats
