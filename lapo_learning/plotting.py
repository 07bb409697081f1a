"""Training curves from progress.csv as one PNG (a panel per logged quantity)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: training runs on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_progress(csv_path: Path, png_path: Path) -> None:
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = [float(r["step"]) for r in rows]
    keys = [k for k in rows[0] if k != "step"]
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(keys) / cols), cols, figsize=(4 * cols, 2.6 * math.ceil(len(keys) / cols)),
                             squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ax.plot(steps, [float(r[key]) for r in rows])
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png_path, dpi=80)
    plt.close(fig)
