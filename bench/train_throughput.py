"""Train-step throughput: samples/s and the share of step time spent sampling batches.

    python bench/train_throughput.py [--device cuda] [--steps 20]

For each image encoder, a LAPO agent trains on an in-memory synthetic dataset (84x84 images,
batch 64 by default) held in the device-resident replay buffer; both figures are measured side
by side in one run. Target: sampling under 10% of step time.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lapo_learning.agent import AgentConfig  # noqa: E402
from lapo_learning.dataset import OfflineDataset  # noqa: E402
from lapo_learning.lapo_agent import LAPOAgent  # noqa: E402
from lapo_learning.replay import ReplayBuffer, fit_statistics  # noqa: E402
from lapo_learning.schema import CAMERAS, ObservationSchema  # noqa: E402
from lapo_learning.synthetic_task import TaskConfig, generate_episodes  # noqa: E402

log = logging.getLogger("bench.train_throughput")


def synthetic_dataset(n: int, image_size: tuple[int, int]) -> OfflineDataset:
    eps = list(generate_episodes(n, 0.0, seed=0, config=TaskConfig(image_size=image_size)))
    cat = {k: np.concatenate([e[k] for e in eps]) for k in eps[0] if k != "good"}
    schema = ObservationSchema(image_size=image_size, joint_names=ObservationSchema.default_names("joint", 16),
                               action_names=ObservationSchema.default_names("action", 16))
    return OfflineDataset(images={c: cat[c] for c in CAMERAS}, joint=cat["joint"], actions=cat["actions"],
                          rewards=cat["rewards"].astype(np.float32), terminals=cat["terminals"],
                          timeouts=cat["timeouts"], episode_ends=np.cumsum([len(e["actions"]) for e in eps]),
                          schema=schema, sources=["synthetic"])


def measure(encoder: str, ds: OfflineDataset, device: str, batch: int, steps: int, warmup: int) -> dict[str, float]:
    episodes = np.arange(ds.n_episodes)
    stats = fit_statistics(ds, ds.episode_indices(episodes))
    agent = LAPOAgent(ds.schema, AgentConfig(image_encoder=encoder), device, value_range=(0.0, 1.0))
    buf = ReplayBuffer(ds, episodes, stats, device, seed=0)
    t_sample = t_step = 0.0
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        b = buf.sample(batch)
        sync(device)
        t1 = time.perf_counter()
        agent.train_step(b)
        sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            t_sample += t1 - t0
            t_step += t2 - t1
    total = t_sample + t_step
    return {"samples_per_s": steps * batch / total, "step_ms": 1000 * total / steps,
            "sample_frac": t_sample / total}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--batch_size", type=int, default=64, help="batch size")
    p.add_argument("--image_size", type=int, nargs=2, default=(84, 84), metavar=("H", "W"), help="image size")
    p.add_argument("--steps", type=int, default=20, help="timed steps per encoder (resnet18: a fifth of this on CPU)")
    p.add_argument("--n_samples", type=int, default=2000, help="transitions in the replay buffer")
    p.add_argument("--encoders", nargs="+", default=["cnn_3conv_1fc_0", "resnet18"], help="encoders to measure")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    ds = synthetic_dataset(args.n_samples, tuple(args.image_size))
    log.info("device %s, torch %s, %d threads, batch %d, images %s, buffer %d samples",
             args.device, torch.__version__, torch.get_num_threads(), args.batch_size, tuple(args.image_size), len(ds))
    log.info("%-16s %12s %10s %14s", "encoder", "samples/s", "step ms", "sampling share")
    for enc in args.encoders:
        steps = max(3, args.steps // 5) if enc == "resnet18" and args.device == "cpu" else args.steps
        r = measure(enc, ds, args.device, args.batch_size, steps, warmup=2)
        log.info("%-16s %12.1f %10.1f %13.2f%%", enc, r["samples_per_s"], r["step_ms"], 100 * r["sample_frac"])


if __name__ == "__main__":
    main()
