"""LAPO vs BC on the simulated robot: closed-loop success rate of policies trained on recorded demos.

    python bench/sim_success.py [--demos 50] [--steps 8000] [--seeds 0 1 2] [--eval_episodes 100]

The phases of `python -m lapo_ros.sim.loop`, per dataset, algorithm and training seed:
1. the MuJoCo sim's scripted demonstrator is recorded by the recorder node (sim seeds 1..demos);
2. LAPO and BC train with the same recipe on the same dataset, saving --checkpoints checkpoints;
3. each saved checkpoint runs --select_episodes validation episodes in the in-process evaluator
   (sim seeds select_seed+1..); the latest one whose success is inside the 95% interval of the
   most successful one is kept (lapo_ros/sim/selection.py);
4. that checkpoint runs --eval_episodes evaluation episodes (sim seeds eval_seed+1..), the same
   for every policy, in the policy node over DDS (--evaluator nodes, the reported figures) or in
   the in-process evaluator (--evaluator inprocess, for sweeps).
Every row is written to OUT/results.json as soon as it is finished and a rerun skips it; a
training cut short resumes from its last saved checkpoint, so a benchmark longer than a session
goes on where it stopped.

Datasets (--conditions; H = demos/2):
  clean         the scripted demonstrations on cube poses 1..demos (sim seeds);
  clean_half    the first H of them: what a perfect filter of a mixed dataset keeps;
  mixed_<mode>  half clean, half failing, on the same cube poses: the H clean demonstrations of
                poses 1..H, then H demonstrations of the same poses 1..H failing in <mode>
                (failure_prob 1), so that only the behaviour tells good data from bad. Modes
                (lapo_ros/sim/demonstrator.py) look competent and fail: grasp_offset, early_release,
                left_miss, wrong_height; mixed_all draws one of them per failing demonstration.
Rewards (--rewards): outcome (the default, as in the sim loop) = the recorder's sparse outcome
reward (1 on the last step of a success, what it records with no reward topic): a team often only
has that; stage = the sim's stage rewards 0..4, as the recorder records them from /reward. The
demonstrations are recorded once, with the stage rewards; a dataset with the outcome reward,
named <condition>_outcome, holds the same episode files with their rewards replaced. BC never
reads rewards: with both kinds it is trained on the stage-reward datasets only, and its rows
stand for both.

Prints the settings and two tables, one row per policy and one per dataset and algorithm (all
seeds' episodes pooled): success rate with its 95% Wilson interval, AverageReturn = mean highest
stage reward 0..4 ± StdReturn, and beside them the clean dataset's figures of the same algorithm,
reward kind (and seed); results.json has every episode. Recorded datasets in OUT/data (or --data)
are reused by a later run with the same --demos and image size (delete them to re-record).

Training on another machine (a GPU box without ROS or MuJoCo): copy OUT/data there, run
`python -m lapo_learning.train --hdf5_path DATA/<dataset> --results_dir RUNS --ExpID <dataset>_<algo>_seed<seed>
--algo <algo> --seed <seed> ...` for each, bring RUNS back and evaluate here with `--trained_in RUNS`.
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from lapo_learning.train import RUN_SUBDIR  # noqa: E402
from lapo_ros.sim.demonstrator import ALL_FAILURE_MODES, FAILURE_MODES  # noqa: E402
from lapo_ros.sim.episode_stats import EpisodeResult, summarize_returns  # noqa: E402
from lapo_ros.sim.evaluate import SimEvalConfig, evaluate  # noqa: E402
from lapo_ros.sim.node_evaluation import EvalConfig, evaluate_policy  # noqa: E402
from lapo_ros.sim.processes import INTERRUPTS, LoopError, RunSettings  # noqa: E402
from lapo_ros.sim.recording import (REWARDS, RecordConfig, assemble_dataset, check_dataset,  # noqa: E402
                                    record_demonstrations)
from lapo_ros.sim.selection import add_selection_flags, select_checkpoint  # noqa: E402
from lapo_ros.sim.training import TrainConfig, add_recipe_flags, crops_from_args, train_policy  # noqa: E402

log = logging.getLogger("bench.sim_success")
MIXED = {f"mixed_{mode}": mode for mode in (*FAILURE_MODES, ALL_FAILURE_MODES)}  # condition -> failure mode
CONDITIONS = ("clean", "clean_half", *MIXED)
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


def dataset_name(cond: str, rewards: str) -> str:
    return cond if rewards == "stage" else f"{cond}_{rewards}"


def build_datasets(settings: RunSettings, args: argparse.Namespace) -> dict[str, Path]:
    """Record what is missing and assemble every dataset of --conditions x --rewards: name -> folder."""
    data = (args.data or settings.out / "data") / f"{args.demos}demos_{args.image_size[0]}x{args.image_size[1]}"
    # Recorded with the stage rewards: the outcome datasets are derived from the same files.
    clean = recorded(settings, RecordConfig(episodes=args.demos, seed=0, rewards="stage"), data / "clean")
    half = args.demos // 2
    datasets = {}
    for cond in args.conditions:
        if cond == "clean_half":
            assemble_dataset(clean[:half], data / cond)
        elif cond in MIXED:  # the failing half on the clean half's cube poses (sim seeds 1..half)
            failing = recorded(settings, RecordConfig(episodes=half, seed=0, failure_prob=1.0, failure_mode=MIXED[cond],
                                                      rewards="stage"), data / f"failing_{MIXED[cond]}")
            assemble_dataset(clean[:half] + failing, data / cond)
        for rewards in args.rewards:
            name = dataset_name(cond, rewards)
            if rewards == "outcome":
                assemble_dataset(check_dataset(data / cond), data / name, outcome_reward=True)
            datasets[name] = data / name
    return datasets


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


def run_policy(settings: RunSettings, args: argparse.Namespace, dataset: Path, cond: str, rewards: str, algo: str,
               seed: int) -> dict:
    """Train (or reuse), choose the checkpoint on validation seeds, evaluate it: one result row."""
    exp_id = f"{dataset_name(cond, rewards)}_{algo}_seed{seed}"
    t0 = time.perf_counter()
    train_cfg = TrainConfig(steps=args.steps, algo=algo, image_encoder=args.image_encoder,
                            batch_size=args.batch_size, device=args.device, seed=seed,
                            action_space=args.action_space, action_chunk=args.action_chunk,
                            latent_dim=args.latent_dim, aux_action_weight=args.aux_action_weight,
                            ema_decay=args.ema_decay, image_size=tuple(args.model_image_size), crops=args.crop,
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
    return {"condition": cond, "rewards": rewards, "algo": algo, "seed": seed,
            "demos_successful": dataset_success(dataset),
            **summarize_returns(results), "evaluator": args.evaluator, "checkpoint": str(checkpoint),
            "train_min": train_min, "train_session_min": (t1 - t0) / 60, "select_min": (t2 - t1) / 60,
            "eval_min": (time.perf_counter() - t2) / 60, "per_episode": [r.to_dict() for r in results]}


def find_row(rows: list[dict], cond: str, rewards: str, algo: str, seed: int | None = None) -> list[dict]:
    """The rows of a dataset and algorithm (and seed); rows written before --rewards existed are "stage"."""
    return [r for r in rows if (r["condition"], r.get("rewards", "stage"), r["algo"]) == (cond, rewards, algo)
            and seed in (None, r["seed"])]


def figures(summary: dict | None) -> str:
    """'success (95% CI) | ACT's criterion | AverageReturn ± StdReturn' table cells of a summarize_returns()
    result (rows written before ACT's criterion was recorded show – for it)."""
    if summary is None:
        return "– | – | –"
    lo, hi = summary["success_ci95"]
    act = f"{summary['act_success_rate']:.2f}" if "act_success_rate" in summary else "–"
    return (f"{summary['success_rate']:.2f} ({lo:.2f}-{hi:.2f}) | {act} | "
            f"{summary['AverageReturn']:.2f} ± {summary['StdReturn']:.2f}")


def pooled(rows: list[dict]) -> dict | None:
    """summarize_returns() over every evaluation episode of `rows` (e.g. the three seeds of a policy)."""
    episodes = [EpisodeResult(**e) for r in rows for e in r["per_episode"]]
    return summarize_returns(episodes) if episodes else None


def log_tables(rows: list[dict]) -> None:
    """One row per policy, then one per dataset and algorithm (its seeds pooled), each with the clean
    dataset's figures of the same algorithm and rewards (and seed) beside it."""
    log.info("| dataset | rewards | algo | seed | demos ok | success (95% CI) | ACT's criterion | AverageReturn ± "
             "StdReturn | clean: success | clean: ACT's criterion | clean: AverageReturn | train min | eval min |")
    for r in rows:
        rewards = r.get("rewards", "stage")
        clean = find_row(rows, "clean", rewards, r["algo"], r["seed"])
        log.info("| %s | %s | %s | %d | %s | %s | %s | %.1f | %.1f |", r["condition"], rewards, r["algo"], r["seed"],
                 r["demos_successful"], figures(r), figures(clean[0] if clean else None), r["train_min"],
                 r["eval_min"])
    log.info("| dataset | rewards | algo | seeds | success (95% CI), episodes pooled | ACT's criterion | AverageReturn "
             "± StdReturn | clean: success | clean: ACT's criterion | clean: AverageReturn |")
    for cond, rewards, algo in dict.fromkeys((r["condition"], r.get("rewards", "stage"), r["algo"]) for r in rows):
        policy_rows = find_row(rows, cond, rewards, algo)
        log.info("| %s | %s | %s | %s | %s | %s |", cond, rewards, algo,
                 " ".join(str(r["seed"]) for r in policy_rows), figures(pooled(policy_rows)),
                 figures(pooled(find_row(rows, "clean", rewards, algo))))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--out", type=Path, default=Path("bench_results/sim_success"), help="output folder (default: %(default)s)")
    a("--data", type=Path, default=None,
      help="folder of the recorded datasets (default: OUT/data); lets runs with different --out share them")
    a("--demos", type=int, default=50, help="demonstrations per dataset (default: %(default)s)")
    a("--steps", type=int, default=8000, help="training steps per policy (default: %(default)s)")
    a("--batch_size", type=int, default=64, help="training batch size (default: %(default)s)")
    a("--action_space", choices=("absolute", "relative"), default="relative",
      help="what the models predict, see lapo_learning.train --help (default: %(default)s)")
    add_recipe_flags(a)
    a("--train_args", default="",
      help="further lapo_learning.train flags for every policy, one string, e.g. "
           "\"--max_latent_action 0.5\"; they come after the recipe's and override them, e.g. "
           "--train_args=--no-advantage_sampling for LAPO's weighted losses (a single flag needs the = form: "
           "argparse reads a lone --flag as an option of its own); flags BC does not use change nothing for it, "
           "but LAPO-only settings it checks (--advantage_sampling) stop its training: run those with --algos lapo")
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
    a("--conditions", nargs="+", choices=CONDITIONS, default=["clean"],
      help="datasets to compare, see above; clean is recorded for every one (default: clean)")
    a("--rewards", choices=(*REWARDS, "both"), default="outcome",
      help="rewards of the datasets: the recorder's sparse outcome reward, the sim's stage rewards, or both "
           "(default: %(default)s)")
    a("--algos", nargs="+", choices=ALGOS, default=list(ALGOS), help="algorithms to compare")
    a("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    a("--trained_in", type=Path, default=None,
      help="do not train: use TRAINED_IN/Exp<dataset>_<algo>_seed<seed>/multimodal_robot/, trained elsewhere "
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
    seeds = {"demonstrations": range(1, args.demos + 1),
             "validation": range(args.select_seed + 1, args.select_seed + 1 + args.select_episodes),
             "evaluation": range(args.eval_seed + 1, args.eval_seed + 1 + args.eval_episodes)}
    for (name_a, a_seeds), (name_b, b_seeds) in itertools.combinations(seeds.items(), 2):
        if a_seeds.start < b_seeds.stop and b_seeds.start < a_seeds.stop:
            p.error(f"the sim seeds of the {name_a} ({a_seeds.start}..{a_seeds.stop - 1}) and of the {name_b} "
                    f"({b_seeds.start}..{b_seeds.stop - 1}) overlap")
    args.rewards = list(REWARDS) if args.rewards == "both" else [args.rewards]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    INTERRUPTS.install()  # Ctrl-C/SIGTERM unwind through the finally-blocks that stop the nodes
    settings = RunSettings(out=args.out, domain_id=args.domain_id, image_size=tuple(args.image_size),
                           render_size=tuple(args.render_size or args.image_size))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = load_rows(args.out / "results.json")
    try:
        datasets = build_datasets(settings, args)
        for cond, rewards, algo, seed in itertools.product(args.conditions, args.rewards, args.algos, args.seeds):
            if algo == "bc" and rewards == "outcome" and "stage" in args.rewards:
                continue  # BC never reads rewards: its stage-reward rows stand for both
            if find_row(rows, cond, rewards, algo, seed):
                log.info("%s %s seed %d: done in an earlier run, kept", dataset_name(cond, rewards), algo, seed)
                continue
            rows.append(run_policy(settings, args, datasets[dataset_name(cond, rewards)], cond, rewards, algo, seed))
            write_results(args, rows)  # a run cut short keeps its finished rows
    except LoopError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted: the nodes are stopped; finished rows are in %s", args.out / "results.json")
        return 130
    settings_text = write_results(args, rows)
    log.info("settings: %s", json.dumps(settings_text))
    log_tables(rows)
    log.info("%d evaluation episodes per policy (sim seeds %d..%d, %s)", args.eval_episodes, args.eval_seed + 1,
             args.eval_seed + args.eval_episodes, args.evaluator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
