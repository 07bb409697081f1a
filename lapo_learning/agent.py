"""What every agent shares: its config, the observation encoder, augmentation and state handling."""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn

from lapo_learning.networks import ObservationEncoder, center_crop, crop_size, random_crop, random_shift
from lapo_learning.replay import Batch
from lapo_learning.rng import load_generator_state
from lapo_learning.schema import ObservationSchema

ALGOS = ("lapo", "bc")
ADVANTAGE_WEIGHTINGS = ("expectile", "exponential")
ADVANTAGE_ESTIMATES = ("td", "mc", "mc_fit", "mc_step")
RETURN_ESTIMATES = ("mc", "mc_fit", "mc_step")  # advantages from the recorded reward-to-go: s' is not read
MAX_EXP_WEIGHT = 100.0  # AWR/IQL's cap on exp(A / temperature): one sample cannot own a batch


@dataclass
class AgentConfig:
    algo: str = "lapo"
    image_encoder: str = "cnn_3conv_1fc_0"
    pretrained: bool = False
    joint_backbone: str = "fc_2layers_256units"
    obs_feature_dim: int = 256
    hidden_dim: int = 256
    discount: float = 0.99
    tau: float = 0.005
    expectile: float = 0.9
    kl_beta: float = 1.0
    max_latent_action: float = 2.0
    doubleq_min: float = 0.8
    policy_noise: float = 0.2  # target-policy smoothing in latent space
    noise_clip: float = 0.5
    actor_lr: float = 1e-4
    vae_lr: float = 1e-4
    critic_lr: float = 5e-4
    augment_pad: int = 4  # random-shift pixels in training; 0 disables
    # Random crop keeping this fraction of each image side in training, the centre crop at inference
    # (robomimic's CropRandomizer); 1 disables.
    augment_crop: float = 1.0
    # Actions predicted per observation (ACT's action chunking; 1 = one action, the reference).
    action_chunk: int = 1
    latent_dim: int = 0  # LAPO's VAE latent width; 0 = twice the predicted action width (the reference)
    joints_to_policy: bool = True  # LAPO: VAE and actor also see the normalised joints (LAPOAgent.policy_input)
    # LAPO: weight of an auxiliary advantage-weighted action loss inside the critic step (the encoder
    # still learns in the critic step only); 0 = the critic loss alone, the gradient-flow rule as designed.
    aux_action_weight: float = 0.0
    # LAPO: how the advantage A weights each sample of the VAE (and aux) loss. "expectile" (the
    # reference): expectile if A > 0 else 1 - expectile. "exponential" (AWR's): exp(A / advantage_temperature),
    # capped at MAX_EXP_WEIGHT and divided by the batch mean so the loss keeps its scale. Sign weights
    # cannot tell a clearly better action from critic noise around A = 0: on mixed sim data the failing
    # demonstrations' advantages are ~0 +- 0.02 and 36% of them got the high weight.
    advantage_weighting: str = "expectile"
    advantage_temperature: float = 0.1
    # "expectile": the high weight needs A > advantage_margin (the reference: 0), so that a critic's noise
    # around A = 0 on a bad demonstration (rewards all 0, V ~ 0) is not taken for an improvement. Below 0,
    # only a clearly worse sample gets the low weight: with "mc_step" the good operators' own spread
    # around the step's mean return is not taken for a mistake (sim: clean A > -3.4, a wrong operator's
    # A < -4.2, on 95% of samples).
    advantage_margin: float = 0.0
    # LAPO: the advantage the weights read. "td" (the reference): r + gamma V(s') - V(s). "mc": the
    # recorded episode's discounted reward-to-go minus V(s) (AWR's estimate with lambda = 1). Where
    # a bad demonstration has left every good outcome behind (rewards 0 from then on, V ~ 0), its
    # one-step advantages are critic noise around 0 whatever it does, so a third of them look good;
    # its reward-to-go is 0, so all of them look bad (mixed sim data: A > 0 on 36% vs 0%).
    # "mc_fit": the reward-to-go minus a baseline regressed on it (a head on the encoder's detached
    # feature, trained in the critic step): A > 0 where this episode did better than the demonstrations
    # from like states. The critic's V, bootstrapped over 8,000 steps, stays far below the
    # reward-to-go (sim, mixed_all: 3-15 against 20-43), so with "mc" a bad operator's actions
    # look good wherever any reward still lies ahead of them. Where the operators agree, "mc_fit"
    # puts half the good samples below their baseline (sim, clean: 0.54 against mc's 0.72).
    # "mc_step": the reward-to-go minus its mean over the training episodes at the same step of the
    # episode, a baseline that sees no state: once a wrong operator's arm is on its way, V(s) and the
    # fitted baseline see where it goes and expect its low return, so its later actions get A ~ 0 and
    # a third of them the high weight (sim, mixed_left_miss); against the step's mean they stay below.
    # It is a fraction of the largest reward-to-go at the same step, so advantage_margin means the same
    # under any reward scale (stage rewards or the recorder's sparse outcome) and at every step.
    advantage_estimate: str = "td"
    # LAPO with "mc_step", whose advantages are known before training: draw training samples in
    # proportion to their weight instead of weighting their VAE and aux losses (the same VAE objective
    # in expectation; the return-weighted resampling of Hong et al., ICLR 2023). With 0.99 / 0.01 a
    # weighted batch of 64 on half-wrong data holds ~32 samples that count; a drawn one ~64. The
    # critic then learns from the drawn batches: the values of the better demonstrations' behaviour.
    advantage_sampling: bool = False
    # Decay of an exponential moving average of the weights, which validation, the saved policies and
    # inference use (Diffusion Policy's and robomimic's EMA); 0 = the last weights, as trained.
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must be in [0, 1), got {self.discount}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau}")
        if self.action_chunk < 1:
            raise ValueError(f"action_chunk must be >= 1, got {self.action_chunk}")
        if self.latent_dim < 0:
            raise ValueError(f"latent_dim must be >= 0, got {self.latent_dim}")
        if self.aux_action_weight < 0:
            raise ValueError(f"aux_action_weight must be >= 0, got {self.aux_action_weight}")
        if self.advantage_weighting not in ADVANTAGE_WEIGHTINGS:
            raise ValueError(f"advantage_weighting must be one of {ADVANTAGE_WEIGHTINGS}, "
                             f"got {self.advantage_weighting!r}")
        if self.advantage_estimate not in ADVANTAGE_ESTIMATES:
            raise ValueError(f"advantage_estimate must be one of {ADVANTAGE_ESTIMATES}, "
                             f"got {self.advantage_estimate!r}")
        if self.advantage_sampling and (self.algo != "lapo" or self.advantage_estimate != "mc_step"):
            raise ValueError("advantage_sampling needs algo lapo and advantage_estimate mc_step (advantages known "
                             f"before training), got algo {self.algo!r}, advantage_estimate {self.advantage_estimate!r} "
                             "(the sim recipe turns it on: --no-advantage_sampling turns it off)")
        if not math.isfinite(self.advantage_margin):
            raise ValueError(f"advantage_margin must be finite, got {self.advantage_margin}")
        if self.advantage_temperature <= 0:
            raise ValueError(f"advantage_temperature must be > 0, got {self.advantage_temperature}")
        if not 0.0 < self.augment_crop <= 1.0:
            raise ValueError(f"augment_crop must be in (0, 1], got {self.augment_crop}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AgentConfig":
        names = {f.name for f in fields(cls)}
        d = {"joints_to_policy": False, **d}  # checkpoints from before the option had feature-only heads
        return cls(**{k: v for k, v in d.items() if k in names})


def soft_update(net: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- target + tau (net - target), every parameter in one multi-tensor call (a lerp_ per
    parameter was ~160 small calls a LAPO step)."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(net.parameters()), tau)


def adam(params: Iterable[Any], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel, the same update rule: on the CPU (one thread, under the profiler)
    the default per-parameter loop took 8.6 ms of the sim recipe's LAPO step (three optimizers), the
    fused one 2.9. A run resumed from a checkpoint saved without it goes on unfused
    (load_state_dict restores the saved setting)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


class Agent:
    """Base: owns the observation encoder; subclasses add heads, optimizers and `train_step`."""

    def __init__(self, schema: ObservationSchema, config: AgentConfig, device: torch.device | str) -> None:
        self.schema = schema
        self.config = config
        self.device = torch.device(device)
        # The encoders see the random crop's size (the whole image when augment_crop is 1).
        self.view_size = crop_size(schema.image_size, config.augment_crop)
        self.encoder = ObservationEncoder(
            n_cameras=len(schema.cameras), joint_dim=schema.joint_dim, image_size=self.view_size,
            feature_dim=config.obs_feature_dim, image_encoder=config.image_encoder,
            joint_backbone=config.joint_backbone, pretrained=config.pretrained,
        ).to(self.device)
        self.aug_generator = torch.Generator(device=self.device)
        # Width of what the heads predict: a chunk of action_chunk actions, flattened.
        self.action_width = schema.action_dim * config.action_chunk
        # The weight average (config.ema_decay > 0): copies of modules(), made at the first update.
        self.ema: dict[str, nn.Module] | None = None
        self.ema_updates = 0

    def seed(self, seed: int) -> None:
        self.aug_generator.manual_seed(seed)

    def augment(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Training views: random shift, then (augment_crop < 1) a random crop."""
        shifted = [random_shift(img, self.config.augment_pad, self.aug_generator) for img in images]
        if self.config.augment_crop == 1.0:
            return shifted
        return [random_crop(img, self.view_size, self.aug_generator) for img in shifted]

    def view(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Inference views: the centre crop when training used random crops, else the images."""
        if self.config.augment_crop == 1.0:
            return images
        return [center_crop(img, self.view_size) for img in images]

    def encode_pair(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of s (with autograd) and s' (without: only ever used detached, in targets).

        Skipping autograd for s' removes half of the encoder's backward work.
        """
        feat = self.encoder(self.augment(batch.images), batch.joint)
        with torch.no_grad():
            next_feat = self.encoder(self.augment(batch.next_images), batch.next_joint)
        return feat, next_feat

    # Subclass interface -------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def train_step(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    @torch.no_grad()
    def act(self, images: list[torch.Tensor], joint: torch.Tensor) -> torch.Tensor:
        """Normalised actions for uint8 images and normalised joints (no augmentation)."""
        raise NotImplementedError

    @torch.no_grad()
    def validation_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-sample validation quantities; at least the policy's action `pred`."""
        return {"pred": self.act(batch.images, batch.joint)}

    # Weight average ------------------------------------------------------------------------------
    def update_average(self) -> None:
        """Fold the current weights into the moving average; the trainer calls it after each step."""
        if self.config.ema_decay == 0.0:
            return
        modules = self.modules()
        if self.ema is None:
            self.ema = self._average_copies()
        self.ema_updates += 1
        # Warm-up (Diffusion Policy's schedule): the random initial weights are not averaged in for long.
        decay = min(self.config.ema_decay, (1 + self.ema_updates) / (10 + self.ema_updates))
        for k, m in modules.items():
            soft_update(m, self.ema[k], 1.0 - decay)
            with torch.no_grad():
                for avg, buf in zip(self.ema[k].buffers(), m.buffers()):  # e.g. BatchNorm statistics
                    avg.copy_(buf)

    def _average_copies(self) -> dict[str, nn.Module]:
        """Frozen copies of modules(), to hold the weight average."""
        return {k: copy.deepcopy(m).requires_grad_(False) for k, m in self.modules().items()}

    @contextlib.contextmanager
    def averaged_weights(self) -> Iterator[None]:
        """Within the block the modules hold the weight average (if any); the trained weights after."""
        if self.ema is None:
            yield
            return
        trained = {k: copy.deepcopy(m.state_dict()) for k, m in self.modules().items()}
        for k, m in self.modules().items():
            m.load_state_dict(self.ema[k].state_dict())
        try:
            yield
        finally:
            for k, m in self.modules().items():
                m.load_state_dict(trained[k])

    # State ---------------------------------------------------------------------------------------
    def state_dict(self, with_optimizers: bool = True) -> dict[str, Any]:
        state: dict[str, Any] = {"modules": {k: m.state_dict() for k, m in self.modules().items()}}
        if self.ema is not None:  # inference reads it, so it is saved with or without the optimizers
            state["ema"] = {"updates": self.ema_updates, "modules": {k: m.state_dict() for k, m in self.ema.items()}}
        if with_optimizers:
            state["optimizers"] = {k: o.state_dict() for k, o in self.optimizers().items()}
            state["aug_generator"] = self.aug_generator.get_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        modules = self.modules()
        missing = set(modules) - set(state["modules"])
        if missing:
            raise KeyError(f"checkpoint lacks modules {sorted(missing)}")
        for k, m in modules.items():
            m.load_state_dict(state["modules"][k])
        if "ema" in state:
            self.ema = self._average_copies()
            for k, m in self.ema.items():
                m.load_state_dict(state["ema"]["modules"][k])
            self.ema_updates = int(state["ema"]["updates"])
        if "optimizers" in state:
            for k, o in self.optimizers().items():
                o.load_state_dict(state["optimizers"][k])
            load_generator_state(self.aug_generator, state["aug_generator"], "augmentation generator")
