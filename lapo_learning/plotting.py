"""Training curves from progress.csv as one PNG of the few panels a person reads.

Panels (each only when its columns are there): the training losses; the held-out action error
against the mean-action predictor's (the scale that says whether the policy learned anything);
LAPO's critic values; and the closed-loop success of saved checkpoints when they were evaluated
(`rollouts`: step -> success rate and its 95% interval). Every column stays in progress.csv and
TensorBoard; the plot is not a dump of them.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: training runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

# (title, y label, log scale, [(column, legend)])
PANELS: tuple[tuple[str, str, bool, tuple[tuple[str, str], ...]], ...] = (
    ("training losses", "loss", True, (("bc_loss", "BC action loss"), ("critic_loss", "critic (Q + V)"),
                                       ("recon_loss", "VAE reconstruction"), ("kl_loss", "VAE KL"))),
    ("held-out action error", "MSE (normalised)", True,
     (("val_action_mse", "policy"), ("val_weighted_action_mse", "policy, advantage-weighted"),
      ("val_mean_action_mse", "mean-action predictor"))),
    ("critic values", "value", False, (("q_mean", "Q(s, a) batch mean"), ("v_mean", "V(s) batch mean"),
                                       ("target_q_mean", "target Q"))),
)


def plot_progress(csv_path: Path, png_path: Path,
                  rollouts: Sequence[tuple[int, float, float, float]] | None = None) -> None:
    """`rollouts`: (step, success rate, 95% low, 95% high) of evaluated checkpoints, if any."""
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = [float(r["step"]) for r in rows]
    panels = [p for p in PANELS if any(col in rows[0] for col, _ in p[3])]
    n = len(panels) + bool(rollouts)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (title, ylabel, log, columns) in zip(axes[0], panels):
        for col, label in columns:
            if col in rows[0]:
                style = "--" if col == "val_mean_action_mse" else "-"
                ax.plot(steps, [float(r[col]) for r in rows], style, label=label)
        if log:
            ax.set_yscale("log")
        ax.set(title=title, xlabel="training step", ylabel=ylabel)
        ax.legend(fontsize=7)
    if rollouts:
        ax = axes[0][-1]
        steps_, rate, low, high = (list(col) for col in zip(*rollouts))
        ax.errorbar(steps_, rate, yerr=[[r - lo for r, lo in zip(rate, low)], [hi - r for r, hi in zip(rate, high)]],
                    fmt="o-", capsize=3)
        ax.set(title="closed-loop success (validation seeds)", xlabel="training step", ylabel="success rate",
               ylim=(-0.02, 1.02))
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
