"""LAPO vs BC on a mixed-quality dataset: whose actions are closer to the good behaviour?

    python bench/lapo_vs_bc.py [--steps 3000] [--out bench_results/lapo_vs_bc]

Makes a synthetic dataset (lapo_learning.synthetic_task) where half the episodes come from a good
demonstrator and half from a poor one that heads for a consistent wrong target (rewards tell them
apart), trains LAPO and BC with the same encoder, seed and steps, then reports on held-out
episodes:
  - good-action error: MSE between the policy's command and the good demonstrator's command
    (ground truth stored in the sample file), in normalised action units;
  - closed-loop AverageReturn / StdReturn / success rate over fresh seeded episodes of the task.
Writes a table (stdout + results.json) and a bar chart (lapo_vs_bc.png).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lapo_learning import load_policy  # noqa: E402
from lapo_learning.create_dataset import create_sample  # noqa: E402
from lapo_learning.dataset import load_dataset, split_episodes  # noqa: E402
from lapo_learning.policy import Policy  # noqa: E402
from lapo_learning.synthetic_task import evaluate_policy  # noqa: E402
from lapo_learning.train import main as train_main  # noqa: E402

log = logging.getLogger("bench.lapo_vs_bc")


def good_action_error(policy: Policy, data: Path, image_size: tuple[int, int], split: float, seed: int) -> float:
    ds = load_dataset(data, image_size=image_size)
    _, val = split_episodes(ds.n_episodes, split, seed)  # the trainer's own held-out episodes
    idx = ds.episode_indices(val)
    with h5py.File(data) as f:
        target = f["info/target"][()][idx]
    pred = np.concatenate([
        policy.select_action_batch(*(ds.images[c][idx[i:i + 256]] for c in ds.schema.cameras), ds.joint[idx[i:i + 256]])
        for i in range(0, len(idx), 256)])
    norm = policy.stats.action
    return float(np.mean((norm.normalize(pred) - norm.normalize(target)) ** 2))


def plot(results: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, title in zip(axes, ("good_action_mse", "AverageReturn", "success_rate"),
                              ("good-action error (lower is better)", "AverageReturn", "success rate")):
        vals = [results[a][key] for a in algos]
        errs = [results[a]["StdReturn"] for a in algos] if key == "AverageReturn" else None
        ax.bar(algos, vals, yerr=errs, color=["tab:blue", "tab:orange"][: len(algos)], capsize=4)
        ax.set_title(title, fontsize=10)
    fig.suptitle("mixed-quality data (50% poor demonstrations)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("bench_results/lapo_vs_bc"), help="output folder")
    p.add_argument("--n_samples", type=int, default=6000, help="transitions in the mixed dataset")
    p.add_argument("--poor_fraction", type=float, default=0.5, help="share of poor episodes")
    p.add_argument("--steps", type=int, default=3000, help="training steps per algorithm")
    p.add_argument("--image_size", type=int, nargs=2, default=(48, 48), metavar=("H", "W"), help="image size")
    p.add_argument("--episodes", type=int, default=30, help="closed-loop evaluation episodes per algorithm")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, split and training")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    size = tuple(args.image_size)
    data = args.out / f"mixed_{args.n_samples}_{args.poor_fraction}_{size[0]}x{size[1]}_s{args.seed}.hdf5"
    if not data.exists():
        create_sample(data, args.n_samples, args.poor_fraction, args.seed, size)
    results: dict[str, dict[str, float]] = {}
    for algo in ("lapo", "bc"):
        t0 = time.perf_counter()
        rc = train_main(["--hdf5_path", str(data), "--results_dir", str(args.out), "--ExpID", algo,
                         "--algo", algo, "--max_timesteps", str(args.steps), "--eval_freq", str(max(args.steps // 10, 1)),
                         "--save_freq", str(args.steps), "--device", args.device, "--image_size", *map(str, size),
                         "--seed", str(args.seed), "--log_level", "WARNING"])
        if rc != 0:
            raise SystemExit(f"training {algo} failed")
        policy = load_policy(args.out / f"Exp{algo}" / "multimodal_robot" / f"model_final_{algo}.pth", args.device)
        results[algo] = {"good_action_mse": good_action_error(policy, data, size, 0.8, args.seed),
                         **evaluate_policy(policy, args.episodes, size, args.seed),
                         "train_minutes": (time.perf_counter() - t0) / 60}
    (args.out / "results.json").write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results}, indent=2))
    plot(results, args.out / "lapo_vs_bc.png")
    log.info("%-6s %16s %14s %10s %9s %9s", "algo", "good-action MSE", "AverageReturn", "StdReturn", "success", "minutes")
    for algo, r in results.items():
        log.info("%-6s %16.4f %14.2f %10.2f %9.2f %9.1f", algo, r["good_action_mse"], r["AverageReturn"],
                 r["StdReturn"], r["success_rate"], r["train_minutes"])
    ratio = results["bc"]["good_action_mse"] / max(results["lapo"]["good_action_mse"], 1e-12)
    log.info("BC / LAPO good-action error ratio: %.2f (> 1: LAPO closer to the good behaviour)", ratio)


if __name__ == "__main__":
    main()
