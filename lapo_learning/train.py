"""Train multimodal LAPO (or the BC baseline) on an HDF5 dataset.

    python -m lapo_learning.train --hdf5_path sample_data.hdf5 --ExpID 0001 --max_timesteps 50000

Writes results/Exp{ExpID}/multimodal_robot/: progress.csv, params.json, model_best_{algo}.pth
(lowest validation selection metric, see validation_metrics), model_final_{algo}.pth,
model_{step}.pth every --save_freq steps (full state: `--load_model STEP` resumes exactly),
training_curves.png, and tensorboard/ (every progress.csv column as a scalar; `--no_tensorboard`
turns it off): `tensorboard --logdir results`.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lapo_learning.agent import ADVANTAGE_ESTIMATES, ADVANTAGE_WEIGHTINGS, ALGOS, MAX_EXP_WEIGHT, Agent, AgentConfig
from lapo_learning.allocator import retain_freed_memory
from lapo_learning.checkpoint import (VALUE_RANGE_KEY, CheckpointError, build_agent, load_checkpoint,
                                      restore_agent, save_checkpoint)
from lapo_learning.dataset import OfflineDataset, load_dataset, split_episodes
from lapo_learning.dataset_format import DatasetError
from lapo_learning.networks import IMAGE_ENCODERS, MLP_BACKBONES
from lapo_learning.outliers import ABSOLUTE_BOUND, ROBUST_PERCENTILE
from lapo_learning.plotting import plot_progress
from lapo_learning.replay import ReplayBuffer, fit_statistics
from lapo_learning.rng import load_generator_state
from lapo_learning.schema import DatasetStatistics, SchemaMismatch, parse_crop

LR_SCHEDULES = ("constant", "cosine")

log = logging.getLogger("lapo_learning.train")
RUN_SUBDIR = "multimodal_robot"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--hdf5_path", required=True, type=Path,
      help="dataset: one HDF5 file or a directory of per-episode files written by the recorder")
    a("--device", default="auto", help="torch device: cpu, cuda, cuda:1, or auto (cuda if available)")
    a("--ExpID", default="0001", help="experiment id: outputs go to <results_dir>/Exp<ExpID>/multimodal_robot")
    a("--results_dir", type=Path, default=Path("results"), help="root folder of experiment outputs")
    a("--algo", choices=ALGOS, default="lapo", help="lapo (offline RL) or bc (behaviour cloning baseline)")
    a("--image_encoder", choices=IMAGE_ENCODERS, default="cnn_3conv_1fc_0",
      help="per-camera image backbone (resnet18 needs a GPU to train at useful speed)")
    a("--pretrained", action="store_true",
      help="resnet18 only: start from ImageNet weights (must be in the torch cache; frozen BatchNorm)")
    a("--joint_backbone", choices=sorted(MLP_BACKBONES), default="fc_2layers_256units",
      help="MLP backbone for the joint vector")
    a("--image_size", type=int, nargs=2, default=(84, 84), metavar=("H", "W"),
      help="model image size; dataset images are resized once at load time")
    a("--crop", nargs=5, action="append", default=[], metavar=("CAMERA", "TOP", "LEFT", "HEIGHT", "WIDTH"),
      help="the part of a camera's stored image the model sees, as fractions of its height and width, "
           "e.g. --crop global_image 0.3 0.35 0.4 0.3; cropped before the resize to --image_size, at load "
           "time and in the policy alike (the checkpoint carries it); repeat per camera; default: whole image")
    a("--batch_size", type=int, default=64, help="transitions per gradient step")
    a("--max_timesteps", type=int, default=50000, help="total gradient steps")
    a("--eval_freq", type=int, default=1000, help="steps between validation, progress rows and best-model checks")
    a("--save_freq", type=int, default=5000, help="steps between resumable checkpoints model_<step>.pth")
    a("--discount", type=float, default=0.99, help="gamma")
    a("--tau", type=float, default=0.005, help="Polyak rate of all target networks")
    a("--expectile", type=float, default=0.9,
      help="VAE sample weight when the advantage is positive (1-expectile otherwise)")
    a("--advantage_weighting", choices=ADVANTAGE_WEIGHTINGS, default="expectile",
      help="LAPO's per-sample weight of the VAE loss from the advantage A: expectile (the reference: "
           "--expectile if A > 0, else 1 - expectile) or exponential (AWR's exp(A / --advantage_temperature), "
           f"capped at {MAX_EXP_WEIGHT:g} and normalised over the batch), which also separates a clearly "
           "better action from one the critic scores ~0 (default: %(default)s)")
    a("--advantage_margin", type=float, default=0.0,
      help="expectile weighting: the high weight needs A > this (in units of the scaled reward per step, with "
           "mc_step a fraction of the largest reward-to-go at the same step; the reference: 0); above the "
           "critic's noise around A = 0, so that a bad demonstration's actions do not get the high weight by "
           "chance; below 0, only a clearly worse action gets the low weight (default: %(default)s)")
    a("--advantage_estimate", choices=ADVANTAGE_ESTIMATES, default="td",
      help="the advantage LAPO's weights read: td (the reference: r + gamma V(s') - V(s)) or mc (the recorded "
           "episode's discounted reward-to-go - V(s), nothing bootstrapped past its end), which does not mistake "
           "critic noise on a bad demonstration that can no longer succeed for a good action; or mc_fit (the "
           "reward-to-go minus a baseline regressed on it: better than the demonstrations from like states, where "
           "the bootstrapped V lags far below the returns; where the operators agree it gives half the good samples "
           "the low weight, so it helped the sim's mixed_all and hurt its clean data); or mc_step (the reward-to-go "
           "minus its mean over the training episodes at the same step, as a fraction of the largest reward-to-go "
           "there: a baseline blind to the state, which keeps a wrong operator's actions below it after its arm "
           "has shown where it goes) (default: %(default)s)")
    a("--advantage_sampling", action=argparse.BooleanOptionalAction, default=False,
      help="LAPO with --advantage_estimate mc_step: draw each training batch in proportion to the samples' "
           "weights instead of weighting their VAE and aux losses (the same VAE objective in expectation, about "
           "twice the samples that count per batch on half-wrong data); the critic then learns from those batches. "
           "The sim recipe turns it on; --no-advantage_sampling turns it off (default: off)")
    a("--advantage_temperature", type=float, default=0.1,
      help="temperature of --advantage_weighting exponential; smaller = sharper preference (default: %(default)s)")
    a("--kl_beta", type=float, default=1.0, help="weight of the VAE's KL term")
    a("--max_latent_action", type=float, default=2.0, help="latent actor bound: max_latent_action*tanh(.)")
    a("--doubleq_min", type=float, default=0.8, help="V target = this*min(Q1,Q2) + (1-this)*max(Q1,Q2)")
    a("--no_noise", action="store_true", help="disable target-policy smoothing noise in latent space")
    a("--obs_feature_dim", type=int, default=256, help="width of the fused observation feature")
    a("--hidden_dim", type=int, default=256, help="hidden width of VAE, actor and critic MLPs")
    a("--actor_lr", type=float, default=1e-4, help="latent actor learning rate (also BC's)")
    a("--vae_lr", type=float, default=1e-4, help="VAE learning rate")
    a("--critic_lr", type=float, default=5e-4, help="critic + observation encoder learning rate")
    a("--lr_schedule", choices=LR_SCHEDULES, default="constant",
      help="learning rates over training: constant (the LAPO reference, ACT), or cosine (each rate decays "
           "to 0 at --max_timesteps, as Diffusion Policy trains: the last checkpoints stop moving, so "
           "training seeds and neighbouring checkpoints differ less) (default: %(default)s)")
    a("--ema_decay", type=float, default=0.0,
      help="keep an exponential moving average of the weights with this decay per step (e.g. 0.999: an "
           "average over the last ~1000 steps), used for validation, the saved policies and inference "
           "(resumable checkpoints keep the trained weights too); 0 = the last weights (default: %(default)s)")
    a("--augment_pad", type=int, default=4, help="random-shift augmentation in pixels (0 = off)")
    a("--augment_crop", type=float, default=1.0,
      help="random-crop augmentation: train on random windows keeping this fraction of each image side, "
           "run on the centre window (robomimic's CropRandomizer); 1 = off (default)")
    a("--action_space", choices=("absolute", "relative"), default="absolute",
      help="what the model predicts: the recorded action (absolute), or the action minus the measured "
           "position of the same-named joint (relative: for position-commanded arms, whose next target "
           "is near where they are; the motion is then the target, not a small part of it)")
    a("--absolute_actions", nargs="+", default=[], metavar="PATTERN",
      help="with --action_space relative: actions whose names match one of these patterns (fnmatch, e.g. "
           "'*finger*') stay absolute, e.g. grippers, whose command is open or closed while the measured "
           "position stops where the object is: relative, the grip force is the predicted difference")
    a("--action_chunk", type=int, default=1,
      help="actions predicted per observation (ACT's action chunking): the model outputs the next K "
           "recorded actions and the policy averages the overlapping predictions for each tick "
           "(temporal ensembling); 1 = one action per observation, as in the LAPO reference")
    a("--latent_dim", type=int, default=0,
      help="LAPO's VAE latent width; 0 = twice the predicted action width (16 actions x chunk x 2)")
    a("--features_only_policy", action="store_true",
      help="LAPO: the VAE and the actor see only the fused observation feature (the reference's single "
           "state input), not also the normalised joint vector beside it")
    a("--aux_action_weight", type=float, default=0.0,
      help="LAPO: weight of an auxiliary advantage-weighted action loss on a head of the encoder's feature, "
           "added to the critic loss so the encoder still learns in the critic step only; 0 (default) = the "
           "critic loss alone, the gradient-flow rule as designed, under which the sim's transfer-cube policy never "
           "reaches the cube; 1.0 with --vae_lr 1e-3 --max_latent_action 0.5 does it 8/20 (README, Benchmarks)")
    a("--reward_scale", type=float, default=None,
      help="divide rewards by this (default: the training split's max |reward|)")
    a("--train_test_split", type=float, default=0.8, help="fraction of EPISODES used for training")
    a("--seed", type=int, default=0, help="seeds the split, initialisation, sampling and noise")
    a("--load_model", type=int, default=None,
      help="resume from model_<STEP>.pth of --load_exp (default: this ExpID), restoring optimizers and RNG")
    a("--load_exp", default=None, help="ExpID whose checkpoint --load_model reads (default: --ExpID)")
    a("--include_incomplete", action="store_true",
      help="also train on episodes the recorder marked incomplete (interrupted recordings)")
    a("--skip_invalid", action="store_true",
      help="train on the valid files of a directory and leave out, with a warning naming each, the files "
           "that fail validation or cannot be read (truncated, corrupt); by default one such file stops "
           "training with an error naming it and its problems (see `create_dataset --validate`)")
    a("--allow_outliers", action="store_true",
      help="train even on files with implausible joint/action values (far outside their column's "
           f"{ROBUST_PERCENTILE:g}-{100 - ROBUST_PERCENTILE:g}th percentile range, or |value| > "
           f"{ABSOLUTE_BOUND:g}; `create_dataset --validate` lists them), which are refused by default: "
           "one such value skews the normalisation of its joint")
    a("--tensorboard", dest="tensorboard", action="store_true", default=True,
      help="also write every progress.csv column as TensorBoard scalars in <run folder>/tensorboard "
           "(the default; view with `tensorboard --logdir results`)")
    a("--no_tensorboard", dest="tensorboard", action="store_false", help="do not write TensorBoard scalars")
    a("--threads", type=int, default=None,
      help="CPU threads of torch's intra-op pool for this run (default: torch's own, i.e. OMP_NUM_THREADS or every "
           "core); 1 per job when several share the machine: oversubscribed threads slow every job down")
    a("--log_level", default="INFO", help="logging level")
    return p


def agent_config(args: argparse.Namespace) -> AgentConfig:
    return AgentConfig(
        algo=args.algo, image_encoder=args.image_encoder, pretrained=args.pretrained,
        joint_backbone=args.joint_backbone, obs_feature_dim=args.obs_feature_dim, hidden_dim=args.hidden_dim,
        discount=args.discount, tau=args.tau, expectile=args.expectile, kl_beta=args.kl_beta,
        max_latent_action=args.max_latent_action, doubleq_min=args.doubleq_min,
        policy_noise=0.0 if args.no_noise else 0.2, actor_lr=args.actor_lr, vae_lr=args.vae_lr,
        critic_lr=args.critic_lr, augment_pad=args.augment_pad, augment_crop=args.augment_crop,
        action_chunk=args.action_chunk, latent_dim=args.latent_dim, joints_to_policy=not args.features_only_policy,
        aux_action_weight=args.aux_action_weight, advantage_weighting=args.advantage_weighting,
        advantage_temperature=args.advantage_temperature, advantage_margin=args.advantage_margin,
        advantage_estimate=args.advantage_estimate, advantage_sampling=args.advantage_sampling,
        ema_decay=args.ema_decay,
    )


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The share of each optimizer's initial learning rate used at gradient step `step` of `total`."""
    if schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step - 1, total) / total))


def set_learning_rates(agent: Agent, factor: float) -> None:
    for optimizer in agent.optimizers().values():
        for group in optimizer.param_groups:
            # initial_lr travels in the optimizer's state, so a resumed run keeps its schedule.
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor


def rng_state(buffer: ReplayBuffer) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "buffer": buffer.generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], buffer: ReplayBuffer) -> None:
    torch.set_rng_state(state["torch"])
    load_generator_state(buffer.generator, state["buffer"], "replay sampling generator")
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def validation_metrics(agent: Agent, val: ReplayBuffer, mean_action: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Held-out episodes, normalised action units.

    val_action_mse: policy vs recorded action; val_mean_action_mse: a constant mean-action
    predictor, for scale. LAPO adds val_weighted_action_mse (the same error weighted by the
    critic's expectile weight of each recorded action, i.e. its own VAE objective: on mixed-quality
    data, moving away from poor actions lowers it while it raises the plain error) and
    val_td_error. `selection_metric` picks model_best: the weighted error for LAPO, the plain one
    for BC.
    """
    sums: dict[str, float] = {}
    weight_total = 0.0
    for batch in val.iterate(batch_size * 4):
        terms = agent.validation_terms(batch)
        err = ((terms["pred"] - batch.action) ** 2).mean(dim=1, keepdim=True)
        parts = {"val_action_mse": err.sum(),
                 "val_mean_action_mse": ((mean_action - batch.action) ** 2).mean(dim=1).sum()}
        if "weight" in terms:
            parts["val_weighted_action_mse"] = (terms["weight"] * err).sum()
            parts["val_td_error"] = terms["td"].sum()
            weight_total += terms["weight"].sum().item()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.item()
    out = {k: v / val.size for k, v in sums.items()}
    if "val_weighted_action_mse" in out:
        out["val_weighted_action_mse"] = sums["val_weighted_action_mse"] / max(weight_total, 1e-12)
    out["selection_metric"] = out.get("val_weighted_action_mse", out["val_action_mse"])
    return out


class ProgressLog:
    """progress.csv, appended row by row (flushed, so a crash keeps what was logged), and the same
    rows as TensorBoard scalars when `tensorboard_dir` is given."""

    def __init__(self, path: Path, resume_from: Path | None = None, resume_step: int = 0,
                 tensorboard_dir: Path | None = None) -> None:
        """`resume_from`: the progress.csv of the run being resumed; its rows up to `resume_step` are kept."""
        self.path = path
        self.fields: list[str] | None = None
        self.best = float("inf")  # lowest selection_metric so far, kept across a resume
        self.tensorboard: Any = None
        if tensorboard_dir is not None:
            try:  # imported only when used: it pulls in TensorBoard and protobuf
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ValueError(f"TensorBoard is not installed ({exc}): pip install tensorboard, "
                                 "or train with --no_tensorboard") from exc
            # purge_step: a resumed run drops the events the interrupted run logged after resume_step.
            self.tensorboard = SummaryWriter(str(tensorboard_dir), purge_step=resume_step + 1 if resume_step else None)
        rows = []
        if resume_from is not None and resume_from.exists():
            with resume_from.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        if rows:
            self.fields = list(rows[0].keys())
            self.best = min(float(r["selection_metric"]) for r in rows)
            self._write(rows, "w")
        elif path.exists():
            path.unlink()

    def _write(self, rows: list[dict[str, Any]], mode: str) -> None:
        with self.path.open(mode, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields)
            if mode == "w":
                writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        if self.fields is None:
            self.fields = list(row.keys())
            self._write([row], "w")
        else:
            self._write([row], "a")
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step":
                    self.tensorboard.add_scalar(key, value, row["step"])
            self.tensorboard.flush()  # once per row: the writer's own timer would lose rows on a crash

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def prepare(args: argparse.Namespace) -> tuple[OfflineDataset, np.ndarray, np.ndarray]:
    crops = dict(parse_crop(values) for values in args.crop)
    ds = load_dataset(args.hdf5_path, image_size=tuple(args.image_size), include_incomplete=args.include_incomplete,
                      allow_outliers=args.allow_outliers, crops=crops, skip_invalid=args.skip_invalid)
    train_eps, val_eps = split_episodes(ds.n_episodes, args.train_test_split, args.seed)
    log.info("dataset %s: %d samples, %d episodes (%d train / %d validation), joints %d, actions %d",
             args.hdf5_path, len(ds), ds.n_episodes, len(train_eps), len(val_eps),
             ds.schema.joint_dim, ds.schema.action_dim)
    return ds, train_eps, val_eps


def training_statistics(ds: OfflineDataset, train_idx: np.ndarray, args: argparse.Namespace) -> DatasetStatistics:
    """The normalisation of a new run, fitted on its training samples, with the scaled reward range
    LAPO's V is clamped to (VALUE_RANGE_KEY)."""
    stats = fit_statistics(ds, train_idx, args.reward_scale, relative_actions=args.action_space == "relative",
                           absolute_actions=args.absolute_actions, action_chunk=args.action_chunk)
    scaled = ds.rewards[train_idx] / stats.reward_scale
    stats.extra[VALUE_RANGE_KEY] = [float(scaled.min()), float(scaled.max())]
    return stats


def training_buffer(agent: Agent, ds: OfflineDataset, episodes: np.ndarray, stats: DatasetStatistics,
                    device: torch.device | str, seed: int, discount: float) -> ReplayBuffer:
    """The replay buffer training samples from: in proportion to the agent's weights where it draws
    its batches by weight (advantage_sampling), else uniformly."""
    buf = ReplayBuffer(ds, episodes, stats, device, seed=seed, action_chunk=agent.config.action_chunk,
                       discount=discount)
    if agent.config.advantage_sampling:
        buf.draw_in_proportion(agent.weights_of(buf.step_advantage))
    return buf


def train(args: argparse.Namespace) -> Path:
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    run_dir = args.results_dir / f"Exp{args.ExpID}" / RUN_SUBDIR
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    ds, train_eps, val_eps = prepare(args)
    train_idx = ds.episode_indices(train_eps)

    resume = src = None
    if args.load_model is not None:
        src = args.results_dir / f"Exp{args.load_exp or args.ExpID}" / RUN_SUBDIR / f"model_{args.load_model}.pth"
        resume = load_checkpoint(src)
        if "rng" not in resume or "optimizers" not in resume["state"]:
            raise CheckpointError(f"{src}: not a resumable checkpoint (saved without optimizer/RNG state)")
        agent, stats = restore_agent(resume, device, src)
        agent.schema.require_compatible(ds.schema, f"{args.hdf5_path} does not match checkpoint {src}")
        log.info("resuming from %s (step %d)", src, resume["step"])
    else:
        stats = training_statistics(ds, train_idx, args)
        agent = build_agent(ds.schema, agent_config(args), stats, device)
        agent.seed(args.seed)
    chunk = agent.config.action_chunk  # a resumed run keeps its checkpoint's chunk size
    train_buf = training_buffer(agent, ds, train_eps, stats, device, args.seed, args.discount)
    # Validation keeps uniform samples and weighted errors.
    val_buf = ReplayBuffer(ds, val_eps, stats, device, seed=args.seed + 1, action_chunk=chunk, discount=args.discount)
    del ds  # the buffers hold what training needs
    start = 0
    if resume is not None:
        set_rng_state(resume["rng"], train_buf)
        start = int(resume["step"])
    mean_action = train_buf.action.mean(dim=0, keepdim=True)

    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    params.update(device=str(device), schema=agent.schema.to_dict(), n_train_samples=train_buf.size,
                  n_val_samples=val_buf.size)
    (run_dir / "params.json").write_text(json.dumps(params, indent=2))
    progress = ProgressLog(run_dir / "progress.csv", src.parent / "progress.csv" if src else None, start,
                           run_dir / "tensorboard" if args.tensorboard else None)

    sums: dict[str, float] = {}
    n_steps = 0
    t_sample = t_step = 0.0
    t_start = time.perf_counter()
    for step in tqdm(range(start + 1, args.max_timesteps + 1), initial=start, total=args.max_timesteps,
                     desc=f"training {args.algo}", unit="step", mininterval=2.0):
        t0 = time.perf_counter()
        if args.lr_schedule != "constant":
            set_learning_rates(agent, lr_factor(args.lr_schedule, step, args.max_timesteps))
        batch = train_buf.sample(args.batch_size)
        t1 = time.perf_counter()
        metrics = agent.train_step(batch)  # .item() inside syncs the device, so timings are real
        agent.update_average()
        t_step += time.perf_counter() - t1
        t_sample += t1 - t0
        n_steps += 1
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        if step % args.eval_freq == 0 or step == args.max_timesteps:
            row: dict[str, Any] = {"step": step}
            row.update({k: v / n_steps for k, v in sums.items()})
            with agent.averaged_weights():  # the weights the saved policy acts with
                row.update(validation_metrics(agent, val_buf, mean_action, args.batch_size))
            row["samples_per_s"] = n_steps * args.batch_size / max(t_sample + t_step, 1e-9)
            row["sample_time_frac"] = t_sample / max(t_sample + t_step, 1e-9)
            row["wall_time_s"] = time.perf_counter() - t_start
            progress.append(row)
            log.info("step %d: " + ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"), step)
            if row["selection_metric"] < progress.best:
                progress.best = row["selection_metric"]
                save_checkpoint(run_dir / f"model_best_{args.algo}.pth", agent, stats, params, step,
                                with_optimizers=False)
            sums, n_steps, t_sample, t_step = {}, 0, 0.0, 0.0
        if step % args.save_freq == 0:
            save_checkpoint(run_dir / f"model_{step}.pth", agent, stats, params, step,
                            with_optimizers=True, rng=rng_state(train_buf))
    save_checkpoint(run_dir / f"model_final_{args.algo}.pth", agent, stats, params, args.max_timesteps,
                    with_optimizers=False)
    progress.close()
    plot_progress(run_dir / "progress.csv", run_dir / "training_curves.png")
    log.info("done: %s", run_dir)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for flag in ("batch_size", "max_timesteps", "eval_freq", "save_freq", "action_chunk"):
        if getattr(args, flag) <= 0:
            log.error("--%s must be > 0, got %s", flag, getattr(args, flag))
            return 2
    if args.absolute_actions and args.action_space != "relative":
        log.error("--absolute_actions needs --action_space relative (with absolute actions every action is absolute)")
        return 2
    if args.threads is not None and args.threads <= 0:
        log.error("--threads must be > 0, got %s", args.threads)
        return 2
    retain_freed_memory()  # CPU steps stop page-faulting their activations in anew (lapo_learning/allocator.py)
    threads = torch.get_num_threads()  # restored after: a caller in the same process keeps its own
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        train(args)
    except (DatasetError, CheckpointError, SchemaMismatch, FileNotFoundError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
