"""The whole loop on the simulated robot: record demonstrations -> train -> choose -> evaluate.

    python -m lapo_ros.sim.loop [--out demo_output/sim] [--episodes N] [--steps S] [--eval_episodes M]

Each phase is a module of lapo_ros.sim:
1. recording: the sim robot (scripted demonstrator on) and the recorder node record demonstrations
   (sim seeds seed+1..seed+N) into OUT/dataset/, one HDF5 file each, with the recorder's sparse
   outcome reward as on a real robot (--rewards stage: the sim's ACT stage rewards instead).
2. training: `lapo_learning.train` on that folder; OUT/results/Expsim/multimodal_robot/ holds
   progress.csv, training_curves.png and --checkpoints saved checkpoints.
3. selection: each saved checkpoint runs --select_episodes validation episodes (sim seeds
   select_seed+1.., in-process evaluator); the latest one whose success is inside the 95% interval
   of the most successful one is kept (rollouts.json; the success panel of training_curves.png).
4. node_evaluation: the sim (demonstrator off) and the policy node with that checkpoint, over DDS,
   for --eval_episodes episodes on sim seeds eval_seed+1..; report: OUT/eval/eval_summary.json
   (success rate with its 95% interval, AverageReturn/StdReturn: return = the episode's highest
   ACT stage reward, 0..4) and OUT/eval/eval_episodes.png.

The nodes follow the sim's /clock (use_sim_time), so a slow CPU slows the sim down but never
changes what the nodes see. Child processes log to OUT/logs/<phase>_<node>.log and are always
stopped (SIGINT, then SIGKILL 40 s later) when the loop ends, fails or is interrupted; a node that
dies or a service that does not answer in time ends the loop with an error naming it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from lapo_ros.sim.demonstrator import ALL_FAILURE_MODES, FAILURE_MODES
from lapo_ros.sim.episode_stats import summarize_returns
from lapo_ros.sim.node_evaluation import EvalConfig, evaluate_policy
from lapo_ros.sim.processes import INTERRUPTS, LoopError, RunSettings
from lapo_ros.sim.recording import REWARDS, RecordConfig, check_dataset, record_demonstrations
from lapo_ros.sim.evaluate import SimEvalConfig
from lapo_ros.sim.report import write_eval_summary
from lapo_ros.sim.selection import add_selection_flags, select_checkpoint
from lapo_ros.sim.training import RUN_SUBDIR, TrainConfig, add_recipe_flags, crops_from_args, train_policy

log = logging.getLogger("lapo_ros.sim.loop")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lapo_ros.sim.loop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--out", type=Path, default=Path("demo_output/sim"),
      help="output folder: dataset/, results/, eval/, logs/ (default: %(default)s)")
    a("--episodes", type=int, default=50, help="demonstrations to record (default: %(default)s)")
    a("--noise_std", type=float, default=0.0, help="demonstrator command noise, rad (default: %(default)s)")
    a("--failure_prob", type=float, default=0.0,
      help="share of demonstrations botched on purpose (default: %(default)s)")
    a("--failure_mode", choices=(*FAILURE_MODES, ALL_FAILURE_MODES), default=ALL_FAILURE_MODES,
      help="how the botched demonstrations fail (see lapo_ros/sim/demonstrator.py); all: one mode drawn per "
           "demonstration (default: %(default)s)")
    a("--max_episode_steps", type=int, default=0,
      help="recorder samples per demonstration, 0 = until the demonstrator is done (default: %(default)s)")
    a("--rewards", choices=REWARDS, default="outcome",
      help="rewards the recorder stores: outcome, its sparse outcome reward (1 on the last step of a successful "
           "demonstration), what it records on a real robot without a reward topic; stage, the sim's ACT stage "
           "rewards 0..4 from /reward. LAPO learns from them, BC ignores them (default: %(default)s)")
    a("--record_rate", type=float, default=30.0, help="recorder samples per second of sim time (default: %(default)s)")
    a("--seed", type=int, default=0,
      help="sim seed of the demonstrations (episode e uses seed+e) and training seed (default: %(default)s)")
    a("--image_size", type=int, nargs=2, default=(144, 192), metavar=("H", "W"),
      help="image size the recorder stores; the model sees --crop of it at --model_image_size (default: 144 192)")
    a("--render_size", type=int, nargs=2, default=None, metavar=("H", "W"),
      help="sim camera size (default: --image_size)")
    a("--steps", type=int, default=8000, help="training steps (default: %(default)s)")
    a("--batch_size", type=int, default=64, help="training batch size (default: %(default)s)")
    a("--algo", choices=("lapo", "bc"), default="bc",
      help="lapo, or bc (the default: the recipe that does the task within the demo's minutes of CPU, see "
           "README 'Benchmarks')")
    a("--action_space", choices=("absolute", "relative"), default="relative",
      help="what the model predicts, see lapo_learning.train --help (default: %(default)s: the arms are "
           "position-commanded and move little per tick)")
    add_recipe_flags(a)
    a("--device", default="cpu", help="torch device for training (default: %(default)s)")
    a("--train_threads", type=int, default=len(os.sched_getaffinity(0)),
      help="CPU threads of the training phase: nothing else of the loop runs meanwhile (default: the cores this "
           "process may use, %(default)s here; 1 when other jobs share the machine)")
    a("--eval_episodes", type=int, default=6, help="evaluation episodes (default: %(default)s)")
    a("--eval_seed", type=int, default=1000,
      help="sim seed of the evaluation: episode e uses eval_seed+e, disjoint from the demos (default: %(default)s)")
    a("--eval_time", type=float, default=10.0,
      help="sim seconds per evaluation episode unless the hand-over succeeds first (default: %(default)s)")
    add_selection_flags(a, checkpoints=2, episodes=6)
    a("--checkpoint", choices=("final", "best"), default="final",
      help="with --select_episodes 0 (no choice): evaluate model_final_<algo>.pth or model_best_<algo>.pth "
           "(default: %(default)s)")
    a("--skip_recording", action="store_true", help="train on the episodes already in OUT/dataset")
    a("--skip_training", action="store_true", help="evaluate the checkpoint already in OUT/results")
    a("--domain_id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "0")),
      help="ROS_DOMAIN_ID of all nodes (default: $ROS_DOMAIN_ID or 0)")
    a("--startup_timeout", type=float, default=120.0,
      help="wall seconds for the nodes to come up (default: %(default)s)")
    a("--service_timeout", type=float, default=15.0, help="wall seconds for a service answer (default: %(default)s)")
    a("--log_level", default="INFO", help="logging level (default: %(default)s)")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("episodes", "steps", "batch_size", "train_threads", "eval_episodes", "action_chunk", "checkpoints",
                 "workers"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be > 0, got {getattr(args, name)}")
    try:
        args.crop = crops_from_args(args.crop)
    except ValueError as exc:
        p.error(str(exc))
    if args.select_episodes < 0:
        p.error(f"--select_episodes must be >= 0, got {args.select_episodes}")
    if args.eval_time <= 0 or args.record_rate <= 0:
        p.error("--eval_time and --record_rate must be > 0")
    if not 0 <= args.domain_id <= 101:
        p.error(f"--domain_id must be in 0..101, got {args.domain_id}")


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    _check_args(p, args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    INTERRUPTS.install()
    settings = RunSettings(out=args.out, domain_id=args.domain_id, image_size=tuple(args.image_size),
                           render_size=tuple(args.render_size or args.image_size),
                           startup_timeout=args.startup_timeout, service_timeout=args.service_timeout)
    dataset_dir = args.out / "dataset"
    exp_id = "sim"
    t0 = time.perf_counter()
    try:
        if not args.skip_recording:
            if any(dataset_dir.glob("episode_*.hdf5")):
                raise LoopError(f"{dataset_dir} already holds episodes: pass --skip_recording to reuse them "
                                "or choose another --out")
            demos = record_demonstrations(settings, RecordConfig(
                episodes=args.episodes, seed=args.seed, noise_std=args.noise_std, failure_prob=args.failure_prob,
                failure_mode=args.failure_mode, max_episode_steps=args.max_episode_steps,
                record_rate=args.record_rate, rewards=args.rewards), dataset_dir)
            (args.out / "recording_summary.json").write_text(json.dumps(
                {**summarize_returns(demos), "rewards": args.rewards, "per_episode": [d.to_dict() for d in demos]},
                indent=2))
            log.info("recorded %d demonstrations, %d successful", len(demos), sum(d.success for d in demos))
        files = check_dataset(dataset_dir)
        log.info("dataset %s: %d valid episode files", dataset_dir, len(files))
        t_record = time.perf_counter()

        train_cfg = TrainConfig(steps=args.steps, algo=args.algo, image_encoder=args.image_encoder,
                                batch_size=args.batch_size, device=args.device, seed=args.seed,
                                action_space=args.action_space, action_chunk=args.action_chunk,
                                latent_dim=args.latent_dim, aux_action_weight=args.aux_action_weight,
                                ema_decay=args.ema_decay, image_size=tuple(args.model_image_size), crops=args.crop,
                                checkpoints=args.checkpoints, threads=args.train_threads)
        run_dir = (settings.out / "results" / f"Exp{exp_id}" / RUN_SUBDIR if args.skip_training
                   else train_policy(settings, train_cfg, dataset_dir, exp_id))
        t_train = time.perf_counter()
        if args.select_episodes:
            seeds = list(range(args.select_seed + 1, args.select_seed + 1 + args.select_episodes))
            eval_cfg = SimEvalConfig.from_config_files(render_size=settings.render_size, image_size=settings.image_size,
                                                       time_limit=args.eval_time)
            checkpoint = select_checkpoint(run_dir, args.algo, seeds, eval_cfg, args.workers)
        else:
            checkpoint = run_dir / f"model_{args.checkpoint}_{args.algo}.pth"
        if not checkpoint.is_file():
            raise LoopError(f"checkpoint {checkpoint} not found")
        t_select = time.perf_counter()

        results = evaluate_policy(settings, EvalConfig(episodes=args.eval_episodes, seed=args.eval_seed,
                                                       time_limit=args.eval_time), checkpoint, args.algo)
        t_eval = time.perf_counter()
        summary = write_eval_summary(args.out / "eval" / "eval_summary.json", results, {
            "checkpoint": str(checkpoint), "algo": args.algo, "eval_seed": args.eval_seed,
            "eval_time_limit_s": args.eval_time, "dataset": str(dataset_dir), "dataset_episodes": len(files),
            "train_steps": args.steps if not args.skip_training else None,
            "wall_time_s": {"record": t_record - t0, "train": t_train - t_record, "select": t_select - t_train,
                            "eval": t_eval - t_select}})
    except LoopError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted: child nodes stopped")
        return 130
    log.info("by ACT's criterion (stage 4 at any instant, a dropped cube included): %.2f", summary["act_success_rate"])
    log.info("success rate %.2f (%d episodes), AverageReturn %.2f, StdReturn %.2f (return = %s)",
             summary["success_rate"], summary["episodes"], summary["AverageReturn"], summary["StdReturn"],
             summary["return_definition"])
    log.info("dataset %s, results %s (training_curves.png), evaluation %s; %.1f min in all",
             dataset_dir, run_dir, args.out / "eval", (time.perf_counter() - t0) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
