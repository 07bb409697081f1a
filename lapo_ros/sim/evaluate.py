"""Fast closed-loop evaluation of a checkpoint on the simulated robot, in-process (no DDS).

    python -m lapo_ros.sim.evaluate --checkpoint PATH --episodes 50 --first_seed 3001 --workers 2 --out DIR

Each episode places the cube with sim seed S (S = first_seed .. first_seed + episodes - 1, the sim
robot node's seed of the same episode) and runs the policy until the hand-over succeeds (it has
stayed complete for the sim's success_hold, config/sim.yaml, as the sim node's ~/status counts it)
or --eval_time seconds of sim time pass. What the policy sees and what reaches the arms follow the
ROS loop (sim robot node -> policy node) step by step, with the parameters of the same files:

- physics ticks at the sim's control_rate, cameras are rendered every 1/camera_rate of sim time
  (config/sim.yaml), at its image size;
- the policy ticks at the checkpoint's recording rate (the policy node's default) on the newest
  frames and joint state; frames are resized to the size the policy node's inputs are resized to
  (its image_height/image_width, i.e. what the recorder stored) with the same function, then
  `Policy.select_action` does the model's own preprocessing and temporal ensembling;
- the command passes the policy node's SafetyFilter (limits and max_delta_per_tick from
  config/policy.yaml), drives the arms from --command_delay after the tick on (to the 2 ms
  physics step) and is held until the next command;
- the policy starts --start_delay after the reset, the arms resting in the reset pose meanwhile
  (the node path enables the policy after the reset and a drain), and --eval_time counts from there.

The defaults of both delays were measured on the node path (README "Sim success"): there the sim
robot node sends a tick's joint states and frames before /clock reaches the tick, so the policy
node's sim-time timer acts on the observation of its own time, as here; its command is out 5-9 ms
later (what --command_delay models), which the sim, slower than real time while it renders,
rounds to 0, 1 or 2 steps. It cannot be bit-identical: there that rounding, the policy timer's
phase against the sim ticks and message delivery depend on scheduling; here they are fixed, so a
seed gives the same episode every time, whatever the number of workers. Episodes run in
`--workers` processes with one torch thread each.

Writes OUT/eval_summary.json (success_rate with its 95% Wilson interval, AverageReturn,
StdReturn, per-episode rows) and OUT/eval_episodes.png, and prints `success rate X (N episodes)`
last.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lapo_learning.schema import resize_image
from lapo_ros.sim.episode_stats import EpisodeResult, EpisodeTracker
from lapo_ros.safety import SafetyConfig, SafetyFilter, resolve_limits
from lapo_ros.sim.config import ros_params
from lapo_ros.sim.report import write_eval_summary

log = logging.getLogger("lapo_ros.sim.evaluate")
# The policy node's camera inputs by schema camera name -> the sim's MuJoCo camera.
SIM_CAMERAS = {"left_image": "left_wrist", "right_image": "right_wrist", "global_image": "top"}
# The node path's timing (lapo_ros.sim.node_evaluation), measured over 30 episodes (README "Sim
# success"): the policy is enabled 0.26-0.34 s after the reset (the orchestrator's 0.3 s drain),
# the arms resting meanwhile. The policy node's command is out 5-9 ms (p50) after its tick
# (inference and delivery), what a robot, whose time does not wait, gets; the sim, slower than
# real time while it renders, rounds that to 0, 20 or 40 ms (21/61/18% of ticks). With 10 ms the
# evaluator's successes match the node path's best (13 vs 14 of 30; 0 ms: 17, 20 ms: 9).
START_DELAY_S = 0.3
COMMAND_DELAY_S = 0.01


@dataclass(frozen=True)
class SimEvalConfig:
    """The loop's timing, image sizes and safety settings; defaults come from config/*.yaml."""

    render_size: tuple[int, int]  # sim camera size (H, W)
    control_rate: float  # physics ticks per second of sim time
    camera_rate: float  # rendered frames per second of sim time
    success_hold: float  # s the hand-over must stay complete (the sim node's ~/status criterion)
    max_delta_per_tick: float  # policy node safety
    limit_margin: float
    tracking_max_error: float
    tracking_timeout: float
    ensemble_decay: float
    default_policy_rate: float  # Hz when the checkpoint has no recording rate (the node's default_control_rate)
    joint_lower_limits: tuple[float, ...] = ()  # configured limits; empty: from the training data
    joint_upper_limits: tuple[float, ...] = ()
    image_size: tuple[int, int] | None = None  # policy node input size (H, W); None: the model's
    policy_rate: float = 0.0  # Hz; 0: the checkpoint's recording rate, as the policy node
    time_limit: float = 10.0  # s of sim time per episode, from the policy's start
    start_delay: float = START_DELAY_S  # s of sim time from the reset to the policy's first tick
    command_delay: float = COMMAND_DELAY_S  # s of sim time from a policy tick to its command taking effect

    @classmethod
    def from_config_files(cls, **overrides: Any) -> "SimEvalConfig":
        sim = ros_params("sim.yaml", "sim_robot")
        policy = ros_params("policy.yaml", "/**")
        values = dict(render_size=(int(sim["image_height"]), int(sim["image_width"])),
                      control_rate=float(sim["control_rate"]), camera_rate=float(sim["camera_rate"]),
                      success_hold=float(sim["success_hold"]),
                      max_delta_per_tick=float(policy["max_delta_per_tick"]),
                      limit_margin=float(policy["limit_margin"]),
                      tracking_max_error=float(policy["tracking_max_error"]),
                      tracking_timeout=float(policy["tracking_timeout"]),
                      ensemble_decay=float(policy["ensemble_decay"]),
                      default_policy_rate=float(policy["default_control_rate"]),
                      joint_lower_limits=tuple(policy.get("joint_lower_limits", ())),
                      joint_upper_limits=tuple(policy.get("joint_upper_limits", ())))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def advance(world: Any, command: np.ndarray, pending: deque[tuple[int, np.ndarray]], sim_ns: int) -> np.ndarray:
    """Advance `world` (a SimWorld) one control period from `sim_ns` (ns). Each pending (time in
    ns, command) due before the period ends is taken off `pending` and drives the arms from its
    time on, to the physics timestep, as a robot's controller applies a command when it arrives.
    Returns the command in force at the end of the period."""
    physics_ns = round(world.model.opt.timestep * 1e9)
    end_ns = sim_ns + world.substeps * physics_ns
    done = 0  # physics steps of this period already taken
    while pending and pending[0][0] < end_ns:
        at, upcoming = pending.popleft()
        switch = max(done, round((at - sim_ns) / physics_ns))
        if switch > done:
            world.step(command, switch - done)
            done = switch
        command = upcoming
    if done < world.substeps:
        world.step(command, world.substeps - done)
    return command


class EpisodeRunner:
    """One policy + one sim world; `run(seed)` plays one episode. Lives in one worker process."""

    def __init__(self, checkpoint: Path, cfg: SimEvalConfig) -> None:
        # Imported here: MuJoCo must see MUJOCO_GL (set by `evaluate`) before its first import.
        from lapo_learning.policy import load_policy
        from lapo_ros.sim.world import SimWorld, SimWorldConfig

        self.cfg = cfg
        self.policy = load_policy(checkpoint, device="cpu", ensemble_decay=cfg.ensemble_decay)
        schema = self.policy.schema
        self.world = SimWorld(SimWorldConfig(image_height=cfg.render_size[0], image_width=cfg.render_size[1],
                                             control_dt=1.0 / cfg.control_rate))
        sim_names = self.world.joint_names()
        missing = [n for n in (*schema.joint_names, *schema.action_names) if n not in sim_names]
        if missing:
            raise ValueError(f"{checkpoint}: joints {missing} are not joints of the simulated robot {sim_names}")
        unknown = [c for c in schema.cameras if c not in SIM_CAMERAS]
        if unknown:
            raise ValueError(f"{checkpoint}: cameras {unknown} have no simulated camera (known: {list(SIM_CAMERAS)})")
        # Index by name, as the policy node does with /joint_states.
        self.joint_index = np.array([sim_names.index(n) for n in schema.joint_names])
        self.action_index = np.array([sim_names.index(n) for n in schema.action_names])
        self.input_size = cfg.image_size or schema.image_size
        self.policy_rate = cfg.policy_rate or schema.rate_hz or cfg.default_policy_rate
        limits = resolve_limits(schema.action_names, cfg.joint_lower_limits, cfg.joint_upper_limits,
                                self.policy.stats, cfg.limit_margin)
        self.safety = SafetyFilter(SafetyConfig(limits.lower, limits.upper, cfg.max_delta_per_tick,
                                                cfg.tracking_max_error, cfg.tracking_timeout))
        self.policy.warm_up()

    def run(self, seed: int) -> EpisodeResult:
        cfg, world, schema = self.cfg, self.world, self.policy.schema
        world.reset(seed)
        self.policy.reset()
        self.safety.rearm()  # a new episode re-enables the policy, as on the node path: no fault carries over
        tracker = EpisodeTracker()
        command = world.joint_positions()
        # Integer nanoseconds, as the sim robot node counts sim time: no drift between the clocks.
        control_ns, camera_ns = round(1e9 / cfg.control_rate), round(1e9 / cfg.camera_rate)
        policy_ns = round(1e9 / self.policy_rate)
        start_ns = round(cfg.start_delay * 1e9)
        if start_ns == 0:
            tracker.add_joints(command)  # the start pose, as the ROS loop's first joint state
        sim_ns, next_camera_ns, next_policy_ns = 0, 0, start_ns
        delay_ns = round(cfg.command_delay * 1e9)
        pending: deque[tuple[int, np.ndarray]] = deque()  # (sim ns it takes effect, command)
        frames: dict[str, np.ndarray] | None = None
        success, enabled = False, True
        limit_ns = start_ns + round(cfg.time_limit * 1e9)
        while sim_ns < limit_ns:
            command = advance(world, command, pending, sim_ns)
            sim_ns += control_ns
            joints = world.joint_positions()
            if sim_ns >= next_camera_ns:
                next_camera_ns += camera_ns
                frames = {cam: resize_image(world.render(SIM_CAMERAS[cam]), self.input_size) for cam in schema.cameras}
            if sim_ns < start_ns:
                continue  # the arms rest in the reset pose until the policy is enabled
            tracker.add_reward(world.reward())
            tracker.add_joints(joints)
            if world.success_held() >= cfg.success_hold:
                success = True
                break
            while enabled and frames is not None and next_policy_ns <= sim_ns:
                next_policy_ns += policy_ns
                action = self.policy.select_action(*(frames[c] for c in schema.cameras), joints[self.joint_index])
                result = self.safety.apply(action, joints[self.action_index], sim_ns * 1e-9)
                if result.tracking_fault is not None:  # the node stops publishing until re-enabled
                    enabled = False
                    log.warning("seed %d: %s", seed, result.tracking_fault.describe(schema.action_names,
                                                                                   cfg.tracking_max_error))
                elif result.command is not None:
                    latest = (pending[-1][1] if pending else command).copy()
                    latest[self.action_index] = result.command
                    pending.append((sim_ns + delay_ns, latest))
                    tracker.add_command()
        return EpisodeResult(seed=seed, success=success, episode_return=tracker.reward_max,
                             reward_sum=tracker.reward_sum, reward_ticks=tracker.reward_count,
                             sim_duration=(sim_ns - start_ns) * 1e-9, commands=tracker.commands,
                             max_joint_change=tracker.max_joint_change)


_RUNNER: EpisodeRunner | None = None


def _init_worker(checkpoint: Path, cfg: SimEvalConfig) -> None:
    global _RUNNER
    import torch

    torch.set_num_threads(1)
    _RUNNER = EpisodeRunner(checkpoint, cfg)


def _run_seed(seed: int) -> EpisodeResult:
    assert _RUNNER is not None
    return _RUNNER.run(seed)


def evaluate(checkpoint: Path, seeds: list[int], cfg: SimEvalConfig, workers: int = 1,
             progress: bool = True) -> list[EpisodeResult]:
    """Run one episode per seed; results in the order of `seeds` (deterministic for a seed).

    The checkpoint is loaded here first, so that a bad file or a schema the sim cannot serve raises
    its own error (CheckpointError, SchemaMismatch, ValueError) in the caller; with one worker the
    episodes then run in this process."""
    import torch

    os.environ.setdefault("MUJOCO_GL", "osmesa")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a worker: the same arithmetic, so the same episodes
    try:
        runner = EpisodeRunner(Path(checkpoint), cfg)
        workers = max(1, min(workers, len(seeds)))
        bar = partial(tqdm, total=len(seeds), desc=f"evaluating {Path(checkpoint).name}", unit="episode",
                      disable=not progress)
        if workers == 1:
            return list(bar(map(runner.run, seeds)))
        runner.world.close()
        # spawn: a fresh interpreter per worker (forking a process that holds torch/OpenGL state is
        # unsafe); one torch thread each, so W workers use W cores.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(Path(checkpoint), cfg)) as pool:
            return list(bar(pool.map(_run_seed, seeds)))
    finally:
        torch.set_num_threads(threads)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lapo_ros.sim.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--checkpoint", type=Path, required=True, help="a lapo checkpoint (.pth) trained on the sim's data")
    a("--episodes", type=int, default=50, help="episodes, one per sim seed (default: %(default)s)")
    a("--first_seed", type=int, default=3001,
      help="sim seed of the first episode; never a demonstration seed, and validation seeds (to choose "
           "checkpoints) apart from evaluation seeds (the reported figure) (default: %(default)s)")
    a("--workers", type=int, default=1, help="worker processes, one torch thread each (default: %(default)s)")
    a("--out", type=Path, required=True, help="folder for eval_summary.json and eval_episodes.png")
    a("--eval_time", type=float, default=10.0,
      help="sim seconds per episode unless the hand-over succeeds first (default: %(default)s)")
    a("--image_size", type=int, nargs=2, default=None, metavar=("H", "W"),
      help="size the policy node's inputs resize frames to (its image_height/image_width, the recorder's "
           "stored size) (default: the checkpoint's model image size)")
    a("--render_size", type=int, nargs=2, default=None, metavar=("H", "W"),
      help="sim camera size (default: config/sim.yaml)")
    a("--ensemble_decay", type=float, default=None,
      help="temporal-ensemble decay of chunked checkpoints (default: config/policy.yaml's, as the node)")
    a("--policy_rate", type=float, default=None,
      help="policy ticks per second of sim time (default: the checkpoint's recording rate, as the node)")
    a("--start_delay", type=float, default=None,
      help="s of sim time from the reset to the policy's first tick, the arms resting in the reset pose "
           f"meanwhile; the node path enables the policy that long after the reset (default: {START_DELAY_S})")
    a("--command_delay", type=float, default=None,
      help="s of sim time from a policy tick to its command driving the arms (the policy node's "
           f"inference and delivery, measured), to the physics timestep (default: {COMMAND_DELAY_S})")
    a("--log_level", default="INFO", help="logging level (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.episodes <= 0 or args.workers <= 0 or args.eval_time <= 0:
        p.error("--episodes, --workers and --eval_time must be > 0")
    for flag in ("start_delay", "command_delay"):
        if getattr(args, flag) is not None and getattr(args, flag) < 0:
            p.error(f"--{flag} must be >= 0")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.checkpoint.is_file():
        p.error(f"--checkpoint {args.checkpoint}: no such file")
    cfg = SimEvalConfig.from_config_files(
        time_limit=args.eval_time, policy_rate=args.policy_rate, ensemble_decay=args.ensemble_decay,
        start_delay=args.start_delay, command_delay=args.command_delay,
        image_size=tuple(args.image_size) if args.image_size else None,
        render_size=tuple(args.render_size) if args.render_size else None)
    seeds = list(range(args.first_seed, args.first_seed + args.episodes))
    t0 = time.perf_counter()
    results = evaluate(args.checkpoint, seeds, cfg, args.workers)
    summary = write_eval_summary(args.out / "eval_summary.json", results, {
        "checkpoint": str(args.checkpoint), "first_seed": args.first_seed, "eval_time_limit_s": args.eval_time,
        "evaluator": "in-process (lapo_ros.sim.evaluate)", "wall_time_s": time.perf_counter() - t0})
    lo, hi = summary["success_ci95"]
    log.info("AverageReturn %.2f, StdReturn %.2f; success 95%% interval [%.3f, %.3f]; ACT's criterion (stage 4 "
             "at any instant) %.2f; %s", summary["AverageReturn"], summary["StdReturn"], lo, hi,
             summary["act_success_rate"], args.out / "eval_summary.json")
    print(f"success rate {summary['success_rate']:.2f} ({summary['episodes']} episodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
