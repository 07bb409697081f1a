"""Evaluation reports of the sim: eval_summary.json and a bar plot of the episodes. No ROS."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lapo_ros.sim.episode_stats import EpisodeResult, summarize_returns


def write_eval_summary(path: Path, results: list[EpisodeResult], extra: dict[str, Any]) -> dict[str, Any]:
    """eval_summary.json (+ eval_episodes.png next to it); returns the summary."""
    summary = {**summarize_returns(results), **extra, "per_episode": [r.to_dict() for r in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    plot_episodes(path.with_name("eval_episodes.png"), results, summary)
    return summary


def plot_episodes(path: Path, results: list[EpisodeResult], summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, min(0.4 * len(results) + 2, 16.0)), 3))
    colors = ["tab:green" if r.success else "tab:red" for r in results]
    ax.bar(np.arange(len(results)), [r.episode_return for r in results], color=colors)
    ax.set_xticks(np.arange(len(results)), [str(r.seed) for r in results], fontsize=7, rotation=90)
    ax.set_xlabel("episode seed (green: hand-over succeeded)")
    ax.set_ylabel("highest stage reward")
    ax.set_ylim(0, 4.2)
    lo, hi = summary["success_ci95"]
    ax.set_title(f"success {summary['success_rate']:.0%} (95% CI {lo:.0%}-{hi:.0%}, {len(results)} episodes), "
                 f"AverageReturn {summary['AverageReturn']:.2f} ± {summary['StdReturn']:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
