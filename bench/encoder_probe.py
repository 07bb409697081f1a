"""How well a trained policy's observation feature locates the cube, in centimetres.

    python bench/encoder_probe.py CHECKPOINT [CHECKPOINT ...] [--poses 400] [--image_size 144 192]

The cube is only in the images, and the first reach depends on where it is, so a policy whose
feature places it only to a few centimetres cannot grasp a 4 cm cube. For each checkpoint: the
sim places the cube at --poses random poses (sim seeds --first_seed.., never demonstration seeds),
the arms at home; the three cameras are rendered and resized as the recorder stores them, then go
through the policy's own preprocessing (crop, resize) and its observation encoder. A ridge
regression from the fused feature to the cube's x, y is fitted on 3/4 of the poses and tested on
the rest. The mean absolute error (cm) and R² of x and y judge a recipe in seconds, before a long
closed-loop run. An untrained encoder of the same architecture is the reference row.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
os.environ.setdefault("MUJOCO_GL", "osmesa")

from lapo_learning import load_policy  # noqa: E402
from lapo_learning.checkpoint import build_agent  # noqa: E402
from lapo_learning.policy import Policy  # noqa: E402
from lapo_learning.schema import resize_image  # noqa: E402
from lapo_ros.sim.evaluate import SIM_CAMERAS  # noqa: E402
from lapo_ros.sim.world import SimWorld, SimWorldConfig  # noqa: E402

log = logging.getLogger("bench.encoder_probe")


def render_poses(n: int, first_seed: int, render_size: tuple[int, int], image_size: tuple[int, int]
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Frames per camera at the recorder's stored size, home joint positions and cube x,y (m)."""
    world = SimWorld(SimWorldConfig(image_height=render_size[0], image_width=render_size[1]))
    frames: dict[str, list[np.ndarray]] = {cam: [] for cam in SIM_CAMERAS}
    joints, cubes = [], []
    for seed in range(first_seed, first_seed + n):
        world.reset(seed)
        for cam, sim_cam in SIM_CAMERAS.items():
            frames[cam].append(resize_image(world.render(sim_cam), image_size))
        joints.append(world.joint_positions())
        cubes.append(world.cube_pose()[:2])
    world.close()
    return {c: np.stack(f) for c, f in frames.items()}, np.stack(joints).astype(np.float32), np.stack(cubes)


@torch.no_grad()
def features(policy: Policy, frames: dict[str, np.ndarray], joints: np.ndarray) -> np.ndarray:
    schema = policy.schema
    images = [torch.from_numpy(np.stack([schema.preprocess(cam, f) for f in frames[cam]])) for cam in schema.cameras]
    joint = torch.from_numpy(policy.stats.joint.normalize(joints))
    return policy.agent.encoder(images, joint).numpy()


def ridge_probe(x: np.ndarray, y: np.ndarray, n_fit: int, alpha: float = 1.0) -> dict[str, float]:
    """Fit on the first n_fit rows, test on the rest: mean |error| (cm) and R² per coordinate."""
    mean, std = x[:n_fit].mean(0), x[:n_fit].std(0) + 1e-6
    z = (x - mean) / std
    a = np.c_[z, np.ones(len(z))]
    w = np.linalg.solve(a[:n_fit].T @ a[:n_fit] + alpha * np.eye(a.shape[1]), a[:n_fit].T @ y[:n_fit])
    pred, truth = a[n_fit:] @ w, y[n_fit:]
    err = np.abs(pred - truth).mean(0) * 100
    r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    return {"x_cm": float(err[0]), "y_cm": float(err[1]), "x_r2": float(r2[0]), "y_r2": float(r2[1])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", type=Path, nargs="+", help="checkpoints trained on the sim's data")
    p.add_argument("--poses", type=int, default=400, help="cube poses, 3/4 to fit and 1/4 to test (default: 400)")
    p.add_argument("--first_seed", type=int, default=5001, help="sim seed of the first pose (default: 5001)")
    p.add_argument("--image_size", type=int, nargs=2, default=(144, 192), metavar=("H", "W"),
                   help="the size the recorder stored (default: 144 192)")
    p.add_argument("--render_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="sim camera size (default: --image_size)")
    p.add_argument("--out", type=Path, default=Path("bench_results/encoder_probe.json"), help="results file")
    args = p.parse_args(argv)
    if args.poses < 8:
        p.error("--poses must be >= 8")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    frames, joints, cubes = render_poses(args.poses, args.first_seed, tuple(args.render_size or args.image_size),
                                         tuple(args.image_size))
    n_fit = args.poses * 3 // 4
    rows = []
    for path in args.checkpoints:
        policy = load_policy(path)
        fresh = build_agent(policy.schema, policy.agent.config, policy.stats, "cpu")  # same architecture, untrained
        for label, agent in ((str(path), policy.agent), (f"{path} (untrained)", fresh)):
            policy.agent = agent
            rows.append({"checkpoint": label, **ridge_probe(features(policy, frames, joints), cubes, n_fit)})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"poses": args.poses, "first_seed": args.first_seed, "rows": rows}, indent=2))
    log.info("| checkpoint | x error cm | y error cm | R² x | R² y |")
    log.info("|---|---|---|---|---|")
    for r in rows:
        log.info("| %s | %.2f | %.2f | %.3f | %.3f |", r["checkpoint"], r["x_cm"], r["y_cm"], r["x_r2"], r["y_r2"])
    log.info("cube range: x 20 cm, y 20 cm; %d poses fitted, %d tested", n_fit, args.poses - n_fit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
