"""Train-step throughput: samples/s and the share of step time spent sampling batches.

    python bench/train_throughput.py [--device cuda] [--steps 20] [--threads 1]

Two tables, each measured side by side in one run, on in-memory synthetic datasets held in the
device-resident replay buffer:
- per image encoder, a LAPO agent with the library's defaults (84x84 images, batch 64 by
  default). Target: sampling under 10% of step time;
- the sim recipe (lapo_ros/sim/training.py TrainConfig, the main job's and bench/sim_success.py's),
  LAPO and BC as they train there (keypoint encoder, model input 48x64, 1 s action chunks, LAPO's
  batches drawn by weight), with the ratio of their step times and the training time of
  TrainConfig.steps steps at that rate (the issue's budget: 20 min per policy, one thread each).
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

from lapo_learning.agent import Agent, AgentConfig  # noqa: E402
from lapo_learning.allocator import retain_freed_memory  # noqa: E402
from lapo_learning.checkpoint import build_agent  # noqa: E402
from lapo_learning.dataset import OfflineDataset  # noqa: E402
from lapo_learning.lapo_agent import LAPOAgent  # noqa: E402
from lapo_learning.replay import ReplayBuffer, fit_statistics  # noqa: E402
from lapo_learning.schema import CAMERAS, ObservationSchema  # noqa: E402
from lapo_learning.synthetic_task import TaskConfig, generate_episodes  # noqa: E402
from lapo_learning.train import agent_config, build_parser, training_buffer, training_statistics  # noqa: E402
from lapo_ros.sim.training import TrainConfig, recipe_args  # noqa: E402

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


def measure(agent: Agent, buf: ReplayBuffer, device: str, batch: int, steps: int, warmup: int) -> dict[str, float]:
    t_sample = t_step = 0.0
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        b = buf.sample(batch)
        sync(device)
        t1 = time.perf_counter()
        agent.train_step(b)
        agent.update_average()  # as lapo_learning.train does after each step (BC's weight average)
        sync(device)
        t2 = time.perf_counter()
        if i >= warmup:
            t_sample += t1 - t0
            t_step += t2 - t1
    total = t_sample + t_step
    return {"samples_per_s": steps * batch / total, "step_ms": 1000 * total / steps,
            "sample_frac": t_sample / total}


def encoder_row(encoder: str, ds: OfflineDataset, device: str, batch: int, steps: int) -> dict[str, float]:
    """A LAPO agent with the library's defaults and `encoder`."""
    episodes = np.arange(ds.n_episodes)
    stats = fit_statistics(ds, ds.episode_indices(episodes))
    agent = LAPOAgent(ds.schema, AgentConfig(image_encoder=encoder), device, value_range=(0.0, 1.0))
    return measure(agent, ReplayBuffer(ds, episodes, stats, device, seed=0), device, batch, steps, warmup=2)


def recipe_row(algo: str, ds: OfflineDataset, device: str, steps: int) -> dict[str, float]:
    """`algo` as the sim recipe trains it: its flags parsed by lapo_learning.train's own parser."""
    args = build_parser().parse_args(["--hdf5_path", "(synthetic)", *recipe_args(TrainConfig(algo=algo))])
    episodes = np.arange(ds.n_episodes)
    stats = training_statistics(ds, ds.episode_indices(episodes), args)
    agent = build_agent(ds.schema, agent_config(args), stats, device)
    buf = training_buffer(agent, ds, episodes, stats, device, seed=0, discount=args.discount)
    return measure(agent, buf, device, args.batch_size, steps, warmup=3)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--batch_size", type=int, default=64, help="batch size of the encoder table (the recipe's is its own)")
    p.add_argument("--image_size", type=int, nargs=2, default=(84, 84), metavar=("H", "W"),
                   help="image size of the encoder table (the recipe's is its own)")
    p.add_argument("--steps", type=int, default=20,
                   help="timed steps per row (resnet18 on the CPU: a fifth of this); the recipe rows time 3x as many")
    p.add_argument("--n_samples", type=int, default=2000, help="transitions in each replay buffer")
    p.add_argument("--encoders", nargs="*", default=["cnn_3conv_1fc_0", "resnet18"],
                   help="encoders of the first table; none skips it")
    p.add_argument("--no_recipe", action="store_true", help="skip the sim recipe table")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's own; the sim benchmark trains with 1 per job)")
    p.add_argument("--system_malloc", action="store_true",
                   help="leave glibc's malloc as it is, to measure what lapo_learning.train's settings save "
                        "(lapo_learning/allocator.py; by default they are applied, as training does)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    malloc = "glibc's defaults" if args.system_malloc else (
        "retaining freed memory" if retain_freed_memory() else "the C library's own (no glibc mallopt)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    log.info("device %s, torch %s, %d threads, malloc %s", args.device, torch.__version__, torch.get_num_threads(),
             malloc)
    if args.encoders:
        ds = synthetic_dataset(args.n_samples, tuple(args.image_size))
        log.info("LAPO, library defaults: batch %d, images %s, buffer %d samples",
                 args.batch_size, tuple(args.image_size), len(ds))
        log.info("%-16s %12s %10s %14s", "encoder", "samples/s", "step ms", "sampling share")
        for enc in args.encoders:
            steps = max(3, args.steps // 5) if enc == "resnet18" and args.device == "cpu" else args.steps
            r = encoder_row(enc, ds, args.device, args.batch_size, steps)
            log.info("%-16s %12.1f %10.1f %13.2f%%", enc, r["samples_per_s"], r["step_ms"], 100 * r["sample_frac"])
    if not args.no_recipe:
        recipe = TrainConfig()
        ds = synthetic_dataset(args.n_samples, recipe.image_size)
        log.info("the sim recipe (%s, model input %s, chunk %d, batch %d), buffer %d samples",
                 recipe.image_encoder, recipe.image_size, recipe.action_chunk, recipe.batch_size, len(ds))
        log.info("%-6s %12s %10s %14s %18s", "algo", "samples/s", "step ms", "sampling share",
                 f"{recipe.steps} steps, min")
        rows = {algo: recipe_row(algo, ds, args.device, 3 * args.steps) for algo in ("lapo", "bc")}
        for algo, r in rows.items():
            log.info("%-6s %12.1f %10.1f %13.2f%% %18.1f", algo, r["samples_per_s"], r["step_ms"],
                     100 * r["sample_frac"], recipe.steps * r["step_ms"] / 60e3)
        log.info("LAPO / BC step time: %.2f", rows["lapo"]["step_ms"] / rows["bc"]["step_ms"])


if __name__ == "__main__":
    main()
