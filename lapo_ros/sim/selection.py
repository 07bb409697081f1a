"""Choose among a run's saved checkpoints by closed-loop success on validation seeds.

Held-out action error has not predicted closed-loop success on the sim (README, benchmarks), so
the main job and the benchmark choose by closed-loop success on validation seeds (never
demonstration or evaluation seeds), with the in-process evaluator: the latest checkpoint whose
success lies inside the best one's 95% interval (`choose`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from lapo_learning.checkpoint import CheckpointError
from lapo_learning.plotting import plot_progress
from lapo_learning.schema import SchemaMismatch
from lapo_ros.sim.episode_stats import summarize_returns
from lapo_ros.sim.evaluate import SimEvalConfig, evaluate
from lapo_ros.sim.processes import LoopError

log = logging.getLogger("lapo_ros.sim.selection")
ROLLOUTS_FILE = "rollouts.json"


def add_selection_flags(add_argument: Callable[..., Any], checkpoints: int, episodes: int) -> None:
    """--checkpoints, --select_episodes, --select_seed, --workers (the main job and the benchmark)."""
    add_argument("--checkpoints", type=int, default=checkpoints,
                 help="checkpoints saved along training (every steps/N) to choose from (default: %(default)s)")
    add_argument("--select_episodes", type=int, default=episodes,
                 help="validation episodes per saved checkpoint, in the in-process evaluator, to choose the one "
                      "evaluated (default: %(default)s)")
    add_argument("--select_seed", type=int, default=3000,
                 help="validation episode e uses sim seed select_seed+e, disjoint from the demonstrations and "
                      "the evaluation (default: %(default)s)")
    add_argument("--workers", type=int, default=2,
                 help="worker processes of the in-process evaluator (default: %(default)s)")


@dataclass(frozen=True)
class Candidate:
    step: int
    path: Path


def saved_checkpoints(run_dir: Path, algo: str) -> list[Candidate]:
    """model_<step>.pth of a run and its model_final_<algo>.pth (unless saved at the same step), by step."""
    found = {int(m.group(1)): p for p in run_dir.glob("model_*.pth")
             if (m := re.fullmatch(r"model_(\d+)\.pth", p.name))}
    final = run_dir / f"model_final_{algo}.pth"
    if final.is_file():
        params = run_dir / "params.json"  # written by lapo_learning.train; a copied run may lack it
        step = int(json.loads(params.read_text())["max_timesteps"]) if params.is_file() else max(found, default=0) + 1
        found.setdefault(step, final)
    return [Candidate(step, path) for step, path in sorted(found.items())]


def choose(rows: list[dict]) -> dict:
    """The latest of `rows` (step, success_rate, success_ci95) whose success is inside the 95%
    interval of the most successful one.

    A few validation episodes cannot tell 17/20 from 15/20, and taking the higher of the two chose
    the worse checkpoint where it was measured (the sim recipe's BC, seed 0: 4,000 steps 17/20 and
    8,000 steps 15/20 on validation, then 0.70 against 0.86 on the same 50 evaluation episodes).
    Training longer is what helped most on this task, so within the noise the most trained wins."""
    best = max(rows, key=lambda r: r["success_rate"])
    return max((r for r in rows if r["success_rate"] >= best["success_ci95"][0]), key=lambda r: r["step"])


def checkpoint_digest(path: Path) -> str:
    """sha256 of a checkpoint file: a retrained or replaced checkpoint is validated again."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def earlier_rows(run_dir: Path, seeds: list[int], eval_config: dict) -> dict[str, dict]:
    """Validation rows of an earlier selection on the same seeds and evaluator settings (as rollouts.json
    stores them), by checkpoint path."""
    try:
        done = json.loads((run_dir / ROLLOUTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if done.get("validation_seeds") != seeds or done.get("eval_config") != eval_config:
        return {}
    return {r["checkpoint"]: r for r in done.get("checkpoints", []) if "sha256" in r}


def select_checkpoint(run_dir: Path, algo: str, seeds: list[int], cfg: SimEvalConfig, workers: int) -> Path:
    """Evaluate each saved checkpoint on `seeds`; write rollouts.json and the training plot's success
    panel; return the chosen checkpoint's path.

    rollouts.json is rewritten after every checkpoint, and a checkpoint already validated there on the
    same seeds and settings (and unchanged since) is not run again: a benchmark or main job cut short
    during selection or evaluation resumes without repeating the validation rollouts. (Deleting
    rollouts.json validates every checkpoint again, e.g. after a change to the simulator.)"""
    candidates = saved_checkpoints(run_dir, algo)
    if not candidates:
        raise LoopError(f"{run_dir}: no saved checkpoints (model_<step>.pth or model_final_{algo}.pth) to "
                        "choose from")
    eval_config = json.loads(json.dumps(asdict(cfg)))  # tuples as JSON reads them back: lists
    done = earlier_rows(run_dir, seeds, eval_config)
    record = {"validation_seeds": seeds, "eval_config": eval_config, "chosen": None, "checkpoints": []}
    rows = record["checkpoints"]
    for cand in candidates:
        digest = checkpoint_digest(cand.path)
        earlier = done.get(str(cand.path))
        if earlier is not None and earlier["sha256"] == digest and earlier["step"] == cand.step:
            rows.append(earlier)
            log.info("validation seeds %d-%d: %s success %.2f (validated earlier, %s)", seeds[0], seeds[-1],
                     cand.path.name, earlier["success_rate"], run_dir / ROLLOUTS_FILE)
            continue
        try:
            summary = summarize_returns(evaluate(cand.path, seeds, cfg, workers))
        except (CheckpointError, SchemaMismatch, ValueError) as exc:
            raise LoopError(f"cannot evaluate {cand.path} on the sim: {exc}") from exc
        rows.append({"step": cand.step, "checkpoint": str(cand.path), "sha256": digest,
                     "success_rate": summary["success_rate"], "success_ci95": summary["success_ci95"],
                     "AverageReturn": summary["AverageReturn"], "episodes": summary["episodes"]})
        (run_dir / ROLLOUTS_FILE).write_text(json.dumps(record, indent=2))
        log.info("validation seeds %d-%d: %s success %.2f, AverageReturn %.2f", seeds[0], seeds[-1], cand.path.name,
                 summary["success_rate"], summary["AverageReturn"])
    chosen = choose(rows)
    record["chosen"] = chosen["checkpoint"]
    (run_dir / ROLLOUTS_FILE).write_text(json.dumps(record, indent=2))
    plot_progress(run_dir / "progress.csv", run_dir / "training_curves.png",
                  [(r["step"], r["success_rate"], *r["success_ci95"]) for r in rows])
    log.info("chose %s (validation success %.2f)", Path(chosen["checkpoint"]).name, chosen["success_rate"])
    return Path(chosen["checkpoint"])
