"""LAPO vs BC on the simulated robot: closed-loop success rate of policies trained on recorded demos.

    python bench/sim_success.py [--demos 50] [--steps 8000] [--seeds 0 1 2] [--eval_episodes 100]

The phases of `python -m lapo_ros.sim.loop`, per dataset, algorithm and training seed:
1. the MuJoCo sim's scripted demonstrator is recorded by the recorder node (sim seeds 1..demos);
2. LAPO and BC train with the same recipe on the same dataset, saving --checkpoints checkpoints;
3. each saved checkpoint runs --select_episodes validation episodes in the in-process evaluator
   (sim seeds select_seed+1..) and the one that succeeds most often is kept;
4. that checkpoint runs --eval_episodes evaluation episodes (sim seeds eval_seed+1..), the same
   for every policy, in the policy node over DDS (--evaluator nodes, the reported figures) or in
   the in-process evaluator (--evaluator inprocess, for sweeps).
Every row is written to OUT/results.json as soon as it is finished and a rerun skips it; a
training cut short resumes from its last saved checkpoint, so a benchmark longer than a session
goes on where it stopped.

Datasets (cube poses: sim seeds 1..demos in both):
  clean  the scripted demonstrations as they are;
  mixed  the first half clean, the second half degraded (--degraded_noise_std command noise and
         --degraded_failure_prob botched episodes), recorded on the same cube poses.

Prints a table (success rate, AverageReturn = mean highest stage reward 0..4, StdReturn, wall
times) with the settings, and writes results.json. Recorded datasets in OUT/data (or --data) are
reused by a later run with the same --demos and image size (delete them to re-record).

Training on another machine (a GPU box without ROS or MuJoCo): copy OUT/data there, run
`python -m lapo_learning.train --hdf5_path DATA/<condition> --results_dir RUNS --ExpID <condition>_<algo>
--algo <algo> ...` for each pair, bring RUNS back and evaluate here with `--trained_in RUNS`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lapo_learning.train import RUN_SUBDIR  # noqa: E402
from lapo_ros.sim.episode_stats import summarize_returns  # noqa: E402
from lapo_ros.sim.evaluate import SimEvalConfig, evaluate  # noqa: E402
from lapo_ros.sim.node_evaluation import EvalConfig, evaluate_policy  # noqa: E402
from lapo_ros.sim.processes import INTERRUPTS, LoopError, RunSettings  # noqa: E402
from lapo_ros.sim.recording import RecordConfig, check_dataset, record_demonstrations  # noqa: E402
from lapo_ros.sim.selection import add_selection_flags, select_checkpoint  # noqa: E402
from lapo_ros.sim.training import TrainConfig, add_recipe_flags, crops_from_args, train_policy  # noqa: E402

log = logging.getLogger("bench.sim_success")
CONDITIONS = ("clean", "mixed")
ALGOS = ("lapo", "bc")


def recorded(settings: RunSettings, cfg: RecordConfig, folder: Path) -> list[Path]:
    """The episode files of `folder`, recording them first unless exactly `cfg.episodes` are there."""
    files = sorted(folder.glob("episode_*.hdf5"))
    if len(files) == cfg.episodes:
        log.info("reusing %d recorded episodes in %s", len(files), folder)
    elif files:
        raise LoopError(f"{folder} holds {len(files)} episodes, expected {cfg.episodes}: delete it to re-record")
    else:
        record_demonstrations(settings, cfg, folder)
    return check_dataset(folder)


def build_datasets(settings: RunSettings, args: argparse.Namespace) -> dict[str, Path]:
    data = (args.data or settings.out / "data") / f"{args.demos}demos_{args.image_size[0]}x{args.image_size[1]}"
    clean = recorded(settings, RecordConfig(episodes=args.demos, seed=0), data / "clean")
    if "mixed" not in args.conditions:
        return {"clean": data / "clean"}
    half = args.demos // 2
    degraded = recorded(settings, RecordConfig(episodes=args.demos - half, seed=half,
                                               noise_std=args.degraded_noise_std,
                                               failure_prob=args.degraded_failure_prob), data / "degraded")
    mixed = data / "mixed"
    if not mixed.exists():
        tmp = data / "mixed.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, src in enumerate(clean[:half] + degraded, start=1):  # cube poses 1..demos, like clean
            shutil.copy2(src, tmp / f"episode_{i:04d}.hdf5")
        tmp.rename(mixed)
    check_dataset(mixed)
    return {"clean": data / "clean", "mixed": mixed}


def trained_run(root: Path, exp_id: str, algo: str) -> Path:
    """The run folder of a policy trained elsewhere; LoopError naming the missing checkpoint."""
    run_dir = root / f"Exp{exp_id}" / RUN_SUBDIR
    if not (run_dir / f"model_final_{algo}.pth").is_file():
        raise LoopError(f"--trained_in: {run_dir / f'model_final_{algo}.pth'} not found")
    return run_dir


def dataset_success(folder: Path) -> str:
    """'k/n': demonstrations the recorder stored as successful."""
    import h5py

    files = sorted(folder.glob("episode_*.hdf5"))
    ok = 0
    for f in files:
        with h5py.File(f, "r") as h:
            ok += h.attrs.get("outcome") == "success"
    return f"{ok}/{len(files)}"


def load_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["results"] if path.is_file() else []


def write_results(args: argparse.Namespace, rows: list[dict]) -> dict:
    """Write OUT/results.json (settings and the rows so far); returns the settings as written."""
    settings_text = {k: (list(v) if isinstance(v, (tuple, list)) else str(v) if isinstance(v, Path) else v)
                     for k, v in vars(args).items()}
    (args.out / "results.json").write_text(json.dumps({"settings": settings_text, "results": rows}, indent=2))
    return settings_text


def run_policy(settings: RunSettings, args: argparse.Namespace, dataset: Path, cond: str, algo: str,
               seed: int) -> dict:
    """Train (or reuse), choose the checkpoint on validation seeds, evaluate it: one result row."""
    exp_id = f"{cond}_{algo}_seed{seed}"
    t0 = time.perf_counter()
    train_cfg = TrainConfig(steps=args.steps, algo=algo, image_encoder=args.image_encoder,
                            batch_size=args.batch_size, device=args.device, seed=seed,
                            action_space=args.action_space, action_chunk=args.action_chunk,
                            latent_dim=args.latent_dim, image_size=tuple(args.model_image_size), crops=args.crop,
                            checkpoints=args.checkpoints, extra_args=tuple(shlex.split(args.train_args)))
    run_dir = (trained_run(args.trained_in, exp_id, algo) if args.trained_in
               else train_policy(settings, train_cfg, dataset, exp_id, resume=True))
    progress = (run_dir / "progress.csv").read_text().splitlines()
    train_min = float(progress[-1].split(",")[progress[0].split(",").index("wall_time_s")]) / 60
    t1 = time.perf_counter()
    sim_cfg = SimEvalConfig.from_config_files(render_size=settings.render_size, image_size=settings.image_size,
                                              time_limit=args.eval_time)
    val_seeds = list(range(args.select_seed + 1, args.select_seed + 1 + args.select_episodes))
    checkpoint = select_checkpoint(run_dir, algo, val_seeds, sim_cfg, args.workers)
    t2 = time.perf_counter()
    eval_seeds = list(range(args.eval_seed + 1, args.eval_seed + 1 + args.eval_episodes))
    if args.evaluator == "nodes":
        results = evaluate_policy(settings, EvalConfig(args.eval_episodes, args.eval_seed, args.eval_time),
                                  checkpoint, exp_id)
    else:
        results = evaluate(checkpoint, eval_seeds, sim_cfg, args.workers)
    return {"condition": cond, "algo": algo, "seed": seed, "demos_successful": dataset_success(dataset),
            **summarize_returns(results), "evaluator": args.evaluator, "checkpoint": str(checkpoint),
            "train_min": train_min, "train_session_min": (t1 - t0) / 60, "select_min": (t2 - t1) / 60,
            "eval_min": (time.perf_counter() - t2) / 60, "per_episode": [r.to_dict() for r in results]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--out", type=Path, default=Path("bench_results/sim_success"), help="output folder (default: %(default)s)")
    a("--data", type=Path, default=None,
      help="folder of the recorded datasets (default: OUT/data); lets runs with different --out share them")
    a("--demos", type=int, default=50, help="demonstrations per dataset (default: %(default)s)")
    a("--degraded_noise_std", type=float, default=0.03,
      help="mixed: command noise (rad) of the degraded half (default: %(default)s)")
    a("--degraded_failure_prob", type=float, default=0.5,
      help="mixed: share of botched episodes in the degraded half (default: %(default)s)")
    a("--steps", type=int, default=8000, help="training steps per policy (default: %(default)s)")
    a("--batch_size", type=int, default=64, help="training batch size (default: %(default)s)")
    a("--action_space", choices=("absolute", "relative"), default="relative",
      help="what the models predict, see lapo_learning.train --help (default: %(default)s)")
    add_recipe_flags(a)
    a("--train_args", default="",
      help="further lapo_learning.train flags for every policy, one string, e.g. "
           "\"--max_latent_action 0.5\" (flags BC does not use change nothing for it)")
    a("--image_size", type=int, nargs=2, default=(144, 192), metavar=("H", "W"),
      help="size the recorder stores, = the sim's render size unless --render_size (default: 144 192)")
    a("--render_size", type=int, nargs=2, default=None, metavar=("H", "W"),
      help="sim camera size (default: --image_size)")
    a("--device", default="cpu", help="training device (default: %(default)s)")
    add_selection_flags(a, checkpoints=4, episodes=20)
    a("--evaluator", choices=("nodes", "inprocess"), default="nodes",
      help="evaluation through the sim robot and policy nodes over DDS (reported figures) or in-process "
           "(sweeps) (default: %(default)s)")
    a("--eval_episodes", type=int, default=100, help="evaluation episodes per policy (default: %(default)s)")
    a("--eval_seed", type=int, default=2000,
      help="evaluation episode e uses sim seed eval_seed+e, the same for every policy (default: %(default)s)")
    a("--eval_time", type=float, default=10.0, help="sim seconds per evaluation episode (default: %(default)s)")
    a("--conditions", nargs="+", choices=CONDITIONS, default=["clean"], help="datasets to compare")
    a("--algos", nargs="+", choices=ALGOS, default=list(ALGOS), help="algorithms to compare")
    a("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    a("--trained_in", type=Path, default=None,
      help="do not train: use TRAINED_IN/Exp<condition>_<algo>_seed<seed>/multimodal_robot/, trained elsewhere "
           "on OUT/data (see above)")
    a("--domain_id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "0")),
      help="ROS_DOMAIN_ID of all nodes (default: $ROS_DOMAIN_ID or 0)")
    args = p.parse_args(argv)
    try:
        args.crop = crops_from_args(args.crop)
    except ValueError as exc:
        p.error(str(exc))
    if (args.demos < 2 or min(args.steps, args.eval_episodes, args.action_chunk, args.checkpoints, args.workers,
                              args.select_episodes) <= 0):
        p.error("--demos must be >= 2; --steps, --eval_episodes, --action_chunk, --checkpoints, --workers and "
                "--select_episodes > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    INTERRUPTS.install()  # Ctrl-C/SIGTERM unwind through the finally-blocks that stop the nodes
    settings = RunSettings(out=args.out, domain_id=args.domain_id, image_size=tuple(args.image_size),
                           render_size=tuple(args.render_size or args.image_size))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(args.out / "results.json")
    try:
        datasets = build_datasets(settings, args)
        for cond in args.conditions:
            for algo in args.algos:
                for seed in args.seeds:
                    if any((r["condition"], r["algo"], r["seed"]) == (cond, algo, seed) for r in rows):
                        log.info("%s %s seed %d: done in an earlier run, kept", cond, algo, seed)
                        continue
                    rows.append(run_policy(settings, args, datasets[cond], cond, algo, seed))
                    write_results(args, rows)  # a run cut short keeps its finished rows
    except LoopError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted: the nodes are stopped; finished rows are in %s", args.out / "results.json")
        return 130
    settings_text = write_results(args, rows)
    log.info("settings: %s", json.dumps(settings_text))
    log.info("| dataset | algo | seed | demos ok | success (95% CI) | AverageReturn ± StdReturn | train min | "
             "eval min |")
    for r in rows:
        lo, hi = r["success_ci95"]
        log.info("| %s | %s | %d | %s | %.2f (%.2f-%.2f) | %.2f ± %.2f | %.1f | %.1f |", r["condition"], r["algo"],
                 r["seed"], r["demos_successful"], r["success_rate"], lo, hi, r["AverageReturn"], r["StdReturn"],
                 r["train_min"], r["eval_min"])
    log.info("%d evaluation episodes per policy (sim seeds %d..%d, %s)", args.eval_episodes, args.eval_seed + 1,
             args.eval_seed + args.eval_episodes, args.evaluator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
