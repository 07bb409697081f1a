"""Phase 2 of the sim loop: train a policy on the recorded episodes with lapo_learning.train."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lapo_learning.schema import parse_crop
from lapo_learning.train import RUN_SUBDIR
from lapo_learning.train import main as train_main
from lapo_ros.sim.processes import LoopError, RunSettings

log = logging.getLogger("lapo_ros.sim.training")

Crop = tuple[str, float, float, float, float]  # camera, top, left, height, width (lapo_learning.train --crop)
# The sim recipe (README "Benchmarks"): the top camera cropped to the table around the cube and the
# arms' working area, so that the 4 cm cube covers a few pixels of the 48x64 model input.
DEFAULT_CROPS: tuple[Crop, ...] = (("global_image", 0.3, 0.2, 0.5, 0.6),)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 8000
    algo: str = "bc"
    image_encoder: str = "keypoints_3conv_16kp"
    batch_size: int = 64
    device: str = "cpu"
    seed: int = 0
    action_space: str = "relative"  # lapo_learning.train --action_space
    # ACT-style action chunks of 1 s at the 30 Hz recording rate (the README's sim benchmark table
    # compares them with single actions); latent 32 = the reference's 2 x 16 for one action.
    action_chunk: int = 30  # lapo_learning.train --action_chunk
    latent_dim: int = 32  # lapo_learning.train --latent_dim
    # LAPO only (README "Sim success"). Under the gradient-flow rule alone (aux_action_weight 0) the
    # critic-trained encoder does not drive the reach: 0/20, even decoding the prior mean. The
    # auxiliary action loss in the critic step is the smallest change that does (8/20). A bound of 2 on
    # the latent doubled the held-out error of the decoded chunk (the actor always sits at its bound);
    # at 0.5 it decodes as the prior mean does. The VAE at 1e-4 lagged the moving critic features
    # (held-out error 0.039 vs 0.022 at 1e-3).
    aux_action_weight: float = 1.0  # lapo_learning.train --aux_action_weight
    max_latent_action: float = 0.5  # lapo_learning.train --max_latent_action
    lapo_lr: float = 1e-3  # lapo_learning.train --vae_lr and --actor_lr
    # LAPO only: every learning rate decays to 0 along a cosine (README "Sim success": validation
    # 28/40 against 7/40 at a constant rate, two training seeds). At a constant rate the critic keeps
    # moving the encoder and the VAE, on its detached features, chases it: its training error rose
    # from 0.37 to 0.59 over the last 3,000 steps; decayed, it falls to 0.22 and the held-out action
    # error to 0.020 (BC's 0.023).
    lapo_lr_schedule: str = "cosine"  # lapo_learning.train --lr_schedule
    # LAPO only: how the weights read the demonstrations (README "Sim success", "One LAPO recipe").
    # The advantage is the recorded episode's discounted reward-to-go minus its mean over the
    # training episodes at the same step, as a fraction of the largest reward-to-go at that step
    # ("mc_step"): the reference's one-step r + gamma V(s') - V(s) gave 36% of mixed_grasp_offset's
    # failing operator's samples the high weight, and "mc" (reward-to-go - V(s)) a third of
    # mixed_left_miss's, because V sees where the wrong operator's arm is going; mc_step gives them
    # none. Where the operators agree it splits samples about evenly by episode speed: the margin
    # leaves the low weight to the clearly worse (clean sim demonstrations: none under the outcome
    # reward, 6% under stage rewards; the mixed sets' wrong operator: all but the steps after every
    # clean episode has ended). As a fraction of the largest reward-to-go overall, the discounted
    # outcome reward left the wrong operator's first ticks inside the margin, and LAPO averaged the
    # two operators' approach there as BC does. At 0.1 the low weight still averaged a tenth of the
    # wrong operator's reach into the policy's, about the grasp's 1 cm tolerance; at 0.01 a hundredth.
    lapo_advantage_estimate: str = "mc_step"  # lapo_learning.train --advantage_estimate
    lapo_advantage_margin: float = -0.085  # lapo_learning.train --advantage_margin
    lapo_expectile: float = 0.99  # lapo_learning.train --expectile
    # LAPO only: batches drawn in proportion to those weights, their losses unweighted (README "Batches
    # drawn by weight"). Weighted losses on half-wrong data leave ~32 samples that count in a batch of
    # 64: the clean operator's late, fine motions (the hand-over and release) got half the updates, and
    # mixed_grasp_offset's policies dropped the cube after the hand-over 3x as often as the clean
    # half's own. On clean data under the outcome reward every weight is high: uniform draws as before.
    lapo_advantage_sampling: bool = True  # lapo_learning.train --advantage_sampling
    # BC only: the policy acts with an average of the weights over the last ~1000 steps (README "Sim
    # success": the same three training runs do 43/60 validation episodes with it, 30/60 with their
    # last weights). LAPO's averaged weights do not act (0/20, against 6/20 for the same run's last
    # weights at a constant learning rate): its VAE's average is what breaks (averaging only the VAE:
    # 0/20; only the encoder 4/20, only the actor 6/20).
    ema_decay: float = 0.999  # lapo_learning.train --ema_decay
    image_size: tuple[int, int] | None = (48, 64)  # model input (H, W); None: the recorded size
    crops: tuple[Crop, ...] = DEFAULT_CROPS
    checkpoints: int = 1  # resumable checkpoints saved along the run (model_<step>.pth), to choose from
    threads: int | None = None  # lapo_learning.train --threads; None: the process's torch setting
    extra_args: tuple[str, ...] = ()  # further lapo_learning.train flags, as given


def add_recipe_flags(add_argument: Callable[..., Any]) -> None:
    """The model flags of the main job and bench/sim_success.py, defaulting to TrainConfig's."""
    add_argument("--image_encoder", default=TrainConfig.image_encoder,
                 help="image backbone, see lapo_learning.train --help (default: %(default)s)")
    add_argument("--model_image_size", type=int, nargs=2, default=TrainConfig.image_size, metavar=("H", "W"),
                 help="model input size after the crop (default: 48 64)")
    add_argument("--crop", nargs="+", action="append", default=None, metavar="CAMERA TOP LEFT HEIGHT WIDTH",
                 help="the part of a camera's recorded image the model sees, fractions of its size (see "
                      "lapo_learning.train --help); repeat per camera; 'none' = whole images (default: "
                      + " ".join(map(str, DEFAULT_CROPS[0])) + ")")
    add_argument("--action_chunk", type=int, default=TrainConfig.action_chunk,
                 help="actions predicted per observation, see lapo_learning.train --help (default: %(default)s)")
    add_argument("--latent_dim", type=int, default=TrainConfig.latent_dim,
                 help="LAPO's VAE latent width, see lapo_learning.train --help (default: %(default)s)")
    add_argument("--ema_decay", type=float, default=TrainConfig.ema_decay,
                 help="BC: decay of the weight average the policy acts with, see lapo_learning.train --help; 0 = "
                      "the last weights (LAPO acts with its last weights: README 'Sim success') (default: %(default)s)")
    add_argument("--aux_action_weight", type=float, default=TrainConfig.aux_action_weight,
                 help="LAPO: weight of the auxiliary action loss in the critic step; 0 = the gradient-flow rule "
                      "alone, which does not do this task (README 'Sim success') (default: %(default)s)")


def crops_from_args(crop: list[list[str]] | None) -> tuple[Crop, ...]:
    """--crop values -> crops (DEFAULT_CROPS when not given, none for 'none'); ValueError naming a
    malformed one."""
    if crop is None:
        return DEFAULT_CROPS
    if crop == [["none"]]:
        return ()
    return tuple((cam, *box) for cam, box in map(parse_crop, crop))


def recipe_args(cfg: TrainConfig) -> list[str]:
    """lapo_learning.train's flags of the model and its training (algorithm, encoder, chunk, batch,
    learning rates, LAPO's weighting), then cfg.extra_args; no data, output, step-count or device flags."""
    argv = ["--algo", cfg.algo, "--image_encoder", cfg.image_encoder, "--batch_size", str(cfg.batch_size),
            "--action_space", cfg.action_space, "--action_chunk", str(cfg.action_chunk),
            "--latent_dim", str(cfg.latent_dim)]
    if cfg.algo == "lapo":
        argv += ["--aux_action_weight", str(cfg.aux_action_weight), "--max_latent_action", str(cfg.max_latent_action),
                 "--vae_lr", str(cfg.lapo_lr), "--actor_lr", str(cfg.lapo_lr), "--lr_schedule", cfg.lapo_lr_schedule,
                 "--advantage_estimate", cfg.lapo_advantage_estimate,
                 "--advantage_margin", str(cfg.lapo_advantage_margin), "--expectile", str(cfg.lapo_expectile),
                 "--advantage_sampling" if cfg.lapo_advantage_sampling else "--no-advantage_sampling"]
    else:
        argv += ["--ema_decay", str(cfg.ema_decay)]
    return argv + list(cfg.extra_args)  # last: they override the recipe


def train_policy(settings: RunSettings, cfg: TrainConfig, dataset_dir: Path, exp_id: str,
                 resume: bool = False) -> Path:
    """Train with lapo_learning.train; returns the run folder (model_final_<algo>.pth inside).

    `resume` (the benchmark: a session may end in the middle of it): a run that already finished
    is reused, one that was cut short goes on exactly from its last saved model_<step>.pth."""
    run_dir = settings.out / "results" / f"Exp{exp_id}" / RUN_SUBDIR
    if resume and (run_dir / f"model_final_{cfg.algo}.pth").is_file():
        log.info("reusing the finished run %s", run_dir)
        return run_dir
    saved = [int(m.group(1)) for p in run_dir.glob("model_*.pth") if (m := re.fullmatch(r"model_(\d+)", p.stem))]
    load = ["--load_model", str(max(saved))] if resume and saved else []
    h, w = cfg.image_size or settings.image_size
    crops = [str(v) for crop in cfg.crops for v in ("--crop", *crop)]
    argv = ["--hdf5_path", str(dataset_dir), "--results_dir", str(settings.out / "results"), "--ExpID", exp_id,
            "--image_size", str(h), str(w), *crops,
            "--max_timesteps", str(cfg.steps), "--eval_freq", str(max(cfg.steps // 10, 1)),
            "--save_freq", str(max(cfg.steps // cfg.checkpoints, 1)), "--device", cfg.device,
            "--seed", str(cfg.seed), *load]
    if cfg.threads is not None:
        argv += ["--threads", str(cfg.threads)]
    argv += recipe_args(cfg)  # last: cfg.extra_args override the recipe
    log.info("training: python -m lapo_learning.train %s", " ".join(argv))
    rc = train_main(argv)
    if rc != 0 or not (run_dir / f"model_final_{cfg.algo}.pth").is_file():
        raise LoopError(f"training failed (exit code {rc}); see the log above and {run_dir}")
    return run_dir
