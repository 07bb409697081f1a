"""Learning-only demo: sample data -> train -> closed-loop evaluation on the synthetic task.

    python -m lapo_learning.demo [--out demo_output/learning] [--steps 1500]

Needs no ROS: makes a mixed-quality sample dataset, trains LAPO on it (small CNN, CPU), and
prints AverageReturn / StdReturn / success rate of the trained policy over fresh episodes.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lapo_learning import load_policy
from lapo_learning.create_dataset import create_sample
from lapo_learning.synthetic_task import evaluate_policy
from lapo_learning.train import RUN_SUBDIR
from lapo_learning.train import main as train_main

log = logging.getLogger("lapo_learning.demo")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_output/learning"), help="output folder")
    p.add_argument("--n_samples", type=int, default=4000, help="transitions in the sample dataset")
    p.add_argument("--poor_fraction", type=float, default=0.5, help="share of poor demonstrations")
    p.add_argument("--steps", type=int, default=1500, help="training steps")
    p.add_argument("--image_size", type=int, nargs=2, default=(48, 48), metavar=("H", "W"), help="image size")
    p.add_argument("--episodes", type=int, default=20, help="evaluation episodes")
    p.add_argument("--device", default="auto", help="torch device")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    size = tuple(args.image_size)
    data = args.out / "sample_data.hdf5"
    if not data.exists():
        create_sample(data, args.n_samples, args.poor_fraction, 0, size)
    rc = train_main(["--hdf5_path", str(data), "--results_dir", str(args.out / "results"), "--ExpID", "demo",
                     "--max_timesteps", str(args.steps), "--eval_freq", str(max(args.steps // 10, 1)),
                     "--save_freq", str(args.steps), "--device", args.device, "--image_size", *map(str, size)])
    if rc != 0:
        return rc
    run_dir = args.out / "results" / "Expdemo" / RUN_SUBDIR
    policy = load_policy(run_dir / "model_final_lapo.pth")
    r = evaluate_policy(policy, args.episodes, size)
    log.info("AverageReturn %.2f  StdReturn %.2f  success rate %.2f over %d episodes",
             r["AverageReturn"], r["StdReturn"], r["success_rate"], args.episodes)
    log.info("dataset %s, results %s (progress.csv, training_curves.png)", data, run_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
