"""Self-describing checkpoints: weights + observation schema + normalisation + config.

Saved with `torch.save` as plain containers of tensors, numbers and JSON strings, and loaded with
`torch.load(weights_only=True)`, so opening a checkpoint cannot run code. Written to a temporary
file and renamed, so a crash mid-save never leaves a truncated checkpoint under the final name.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
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


def _unreadable(path: Path, exc: Exception) -> CheckpointError:
    """What is wrong with a file torch.load refused, and what to do.

    torch's own message is left out on purpose: it advises retrying with weights_only=False, which
    would let a malicious file run code."""
    if not zipfile.is_zipfile(path):
        what = ("it is not a complete torch archive: truncated (an interrupted copy, download or save) "
                "or not a checkpoint at all")
    elif isinstance(exc, pickle.UnpicklingError):
        what = ("it holds Python objects other than tensors, numbers and strings, which lapo never writes "
                "and never unpickles (unpickling them could run code)")
    else:
        what = f"the archive is corrupt ({type(exc).__name__} while reading it)"
    return CheckpointError(f"{path}: not a readable lapo checkpoint: {what}. Check the path, copy the file "
                           "again from where it was trained, or retrain with python -m lapo_learning.train")


def _tensors(tree: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts/lists, with its dotted path."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _tensors(value, f"{prefix}.{i}")


def _require_finite(path: str | Path, named: Iterable[tuple[str, torch.Tensor | np.ndarray]]) -> None:
    """A NaN/inf weight or statistic makes every action non-finite: refuse it at load."""
    for name, value in named:
        value = torch.as_tensor(value)
        bad = int((~torch.isfinite(value)).sum()) if value.is_floating_point() else 0
        if bad:
            raise CheckpointError(f"{path}: {name} holds {bad} NaN/inf value(s) (training diverged or the file is "
                                  "corrupt): use an earlier checkpoint of the run, or retrain (e.g. with lower "
                                  "learning rates)")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, checked for format and finite weights; CheckpointError on anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors vary by corruption; all mean "not a checkpoint"
        raise _unreadable(path, exc) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a lapo checkpoint (missing format tag {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} unsupported (expected {VERSION})")
    missing = [k for k in ("schema", "stats", "config", "args", "state", "step") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    _require_finite(path, _tensors(ckpt["state"], "state"))
    return ckpt


def restore_agent(ckpt: dict[str, Any], device: torch.device | str, path: str | Path = "<checkpoint>",
                  *, with_optimizers: bool = True) -> tuple[Agent, DatasetStatistics]:
    """The agent and statistics of a checkpoint; `with_optimizers` False (inference) leaves out the
    training state (optimizers, augmentation generator) that a resumable checkpoint also holds, and
    gives the modules the weight average where training kept one (--ema_decay)."""
    try:
        state = ckpt["state"] if with_optimizers else {"modules": ckpt["state"].get("ema", ckpt["state"])["modules"]}
        schema = ObservationSchema.from_json(ckpt["schema"])
        stats = DatasetStatistics.from_dict(json.loads(ckpt["stats"]))
        config = AgentConfig.from_dict(json.loads(ckpt["config"]))
        agent = build_agent(schema, config, stats, device)
        agent.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint contents do not build a model ({exc})") from exc
    _require_finite(path, ((f"stats.{k}", v) for k, v in stats.arrays().items()))
    return agent, stats
