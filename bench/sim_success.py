"""LAPO vs BC on the simulated robot: closed-loop success rate of policies trained on recorded demos.

    python bench/sim_success.py [--demos 50] [--steps 5000] [--eval_episodes 50] [--out bench_results/sim_success]

Everything goes through the ROS nodes, as in `python -m lapo_ros.sim_loop` (whose phases it
reuses): the MuJoCo sim's scripted demonstrator is recorded by the recorder node, LAPO and BC are
trained with the same encoder, steps and seed on the same datasets, and each checkpoint runs in
the policy node on the same fixed evaluation seeds (sim seed --eval_seed + 1 .. + eval_episodes).

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
from lapo_ros.episode_stats import summarize_returns  # noqa: E402
from lapo_ros.sim_loop import (INTERRUPTS, EvalConfig, LoopError, RecordConfig, RunSettings,  # noqa: E402
                               TrainConfig, add_chunk_flags, check_dataset, evaluate_policy,
                               record_demonstrations, train_policy)

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
    half = args.demos // 2
    clean = recorded(settings, RecordConfig(episodes=args.demos, seed=0), data / "clean")
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


def trained_run(root: Path, cond: str, algo: str) -> Path:
    """The run folder of a policy trained elsewhere; LoopError naming the missing checkpoint."""
    run_dir = root / f"Exp{cond}_{algo}" / RUN_SUBDIR
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


def write_results(args: argparse.Namespace, rows: list[dict], record_min: float,
                  t_start: float) -> tuple[dict, float]:
    """Write OUT/results.json (settings, wall times, the rows so far); (settings, total minutes)."""
    settings_text = {k: (list(v) if isinstance(v, (tuple, list)) else str(v) if isinstance(v, Path) else v)
                     for k, v in vars(args).items()}
    total_min = (time.perf_counter() - t_start) / 60
    (args.out / "results.json").write_text(json.dumps(
        {"settings": settings_text, "record_min": record_min, "total_min": total_min, "results": rows}, indent=2))
    return settings_text, total_min


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
    a("--steps", type=int, default=5000, help="training steps per policy (default: %(default)s)")
    a("--batch_size", type=int, default=64, help="training batch size (default: %(default)s)")
    a("--image_encoder", default="cnn_3conv_1fc_0", help="image backbone (default: %(default)s)")
    a("--action_space", choices=("absolute", "relative"), default="relative",
      help="what the models predict, see lapo_learning.train --help (default: %(default)s)")
    add_chunk_flags(a)
    a("--train_args", default="",
      help="further lapo_learning.train flags for every policy, one string, e.g. "
           "\"--max_latent_action 0.5\" (flags BC does not use change nothing for it)")
    a("--image_size", type=int, nargs=2, default=(48, 48), metavar=("H", "W"),
      help="stored and model image size (default: 48 48)")
    a("--render_size", type=int, nargs=2, default=None, metavar=("H", "W"),
      help="sim camera size (default: config/sim.yaml)")
    a("--device", default="cpu", help="training device (default: %(default)s)")
    a("--eval_episodes", type=int, default=50, help="evaluation episodes per policy (default: %(default)s)")
    a("--eval_seed", type=int, default=2000,
      help="evaluation episode e uses sim seed eval_seed+e, the same for every policy (default: %(default)s)")
    a("--eval_time", type=float, default=10.0, help="sim seconds per evaluation episode (default: %(default)s)")
    a("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS), help="datasets to compare")
    a("--algos", nargs="+", choices=ALGOS, default=list(ALGOS), help="algorithms to compare")
    a("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    a("--trained_in", type=Path, default=None,
      help="do not train: evaluate TRAINED_IN/Exp<condition>_<algo>/multimodal_robot/model_final_<algo>.pth, "
           "trained elsewhere on OUT/data (see above); --steps etc. are then only recorded, not used")
    a("--domain_id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "0")),
      help="ROS_DOMAIN_ID of all nodes (default: $ROS_DOMAIN_ID or 0)")
    args = p.parse_args(argv)
    if args.demos < 2 or args.steps <= 0 or args.eval_episodes <= 0 or args.action_chunk <= 0:
        p.error("--demos must be >= 2, --steps, --eval_episodes and --action_chunk > 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    INTERRUPTS.install()  # Ctrl-C/SIGTERM unwind through the finally-blocks that stop the nodes
    settings = RunSettings(out=args.out, domain_id=args.domain_id, image_size=tuple(args.image_size),
                           render_size=tuple(args.render_size) if args.render_size else None)
    t_start = time.perf_counter()
    rows = []
    try:
        t0 = time.perf_counter()
        datasets = build_datasets(settings, args)
        record_min = (time.perf_counter() - t0) / 60
        for cond in args.conditions:
            for algo in args.algos:
                t0 = time.perf_counter()
                train_cfg = TrainConfig(steps=args.steps, algo=algo, image_encoder=args.image_encoder,
                                        batch_size=args.batch_size, device=args.device, seed=args.seed,
                                        action_space=args.action_space, action_chunk=args.action_chunk,
                                        latent_dim=args.latent_dim, extra_args=tuple(shlex.split(args.train_args)))
                run_dir = (trained_run(args.trained_in, cond, algo) if args.trained_in
                           else train_policy(settings, train_cfg, datasets[cond], f"{cond}_{algo}"))
                t1 = time.perf_counter()
                results = evaluate_policy(settings, EvalConfig(args.eval_episodes, args.eval_seed, args.eval_time),
                                          run_dir / f"model_final_{algo}.pth", f"{cond}_{algo}")
                rows.append({"condition": cond, "algo": algo, "demos_successful": dataset_success(datasets[cond]),
                             **summarize_returns(results), "train_min": (t1 - t0) / 60,
                             "eval_min": (time.perf_counter() - t1) / 60,
                             "per_episode": [r.to_dict() for r in results],
                             "run_dir": str(run_dir)})
                write_results(args, rows, record_min, t_start)  # a run cut short keeps its finished rows
    except LoopError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted: the nodes are stopped; finished rows are in %s", args.out / "results.json")
        return 130
    settings_text, total_min = write_results(args, rows, record_min, t_start)
    log.info("settings: %s", json.dumps(settings_text))
    log.info("%-9s %-5s %8s %9s %14s %10s %10s %9s", "dataset", "algo", "demos ok", "success", "AverageReturn",
             "StdReturn", "train min", "eval min")
    for r in rows:
        log.info("%-9s %-5s %8s %9.2f %14.2f %10.2f %10.1f %9.1f", r["condition"], r["algo"], r["demos_successful"],
                 r["success_rate"], r["AverageReturn"], r["StdReturn"], r["train_min"], r["eval_min"])
    log.info("%d evaluation episodes per policy (sim seeds %d..%d); recording %.1f min, total %.1f min",
             args.eval_episodes, args.eval_seed + 1, args.eval_seed + args.eval_episodes, record_min, total_min)
    return 0


if __name__ == "__main__":
    sys.exit(main())
