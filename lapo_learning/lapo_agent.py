"""Multimodal LAPO (Chen et al., NeurIPS 2022), following the reference implementation's final version.

Per train step, on one batch:
1. Critic (twin Q + V) on encoder features *with* gradient: Q target r + gamma(1-d) V'(s');
   V target = doubleq_min-blend of min/max target-Q at the target actor's decoded action (latent
   smoothed with clipped noise), both clamped to the value range. The observation encoder sits in
   the critic optimizer: it learns only from this loss (the seeds' gradient-flow rule).
2. Weighted CVAE on *detached* features: loss = mean(w * (recon + kl_beta * KL)) with
   w = expectile if A > 0 else 1 - expectile (or, with advantage_weighting "exponential",
   exp(A / temperature) normalised over the batch), A = r + gamma(1-d) V(s') - V(s) from the updated
   critic (V(s') is the critic's estimate of Q'(s', a'(s')), as in the reference); with
   advantage_estimate "mc", A = the episode's discounted reward-to-go - V(s); with "mc_fit", the
   reward-to-go minus a baseline head regressed on it (on detached features) in the critic step;
   with "mc_step", the reward-to-go minus its mean over the training episodes at the same step, as a
   fraction of the largest reward-to-go at that step. With advantage_sampling (mc_step only) the
   replay buffer has drawn the batch in proportion to w instead, and w = 1 here (and in the aux loss).
3. Latent actor on detached features: maximise Q1(s, decode_target(s, max_latent*tanh(.))).
4. Polyak averaging (tau) of critic, actor and VAE targets.

With `action_chunk` K > 1 an "action" is a chunk of the next K actions, flattened: the VAE, the
actor's decoded action and the critic's Q input are all K*A wide (the reference is K = 1); the
VAE's reconstruction error is averaged over the chunk's steps.

Deviation from the reference: target networks reuse the online encoder's (detached) features of s
and s' rather than a separate target encoder, which would cost a third image-encoder pass per step;
the critic heads themselves still have Polyak targets.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from lapo_learning.agent import MAX_EXP_WEIGHT, RETURN_ESTIMATES, Agent, AgentConfig, adam, soft_update
from lapo_learning.networks import mlp
from lapo_learning.replay import Batch
from lapo_learning.schema import ObservationSchema


class LatentActor(nn.Module):
    def __init__(self, feature_dim: int, latent_dim: int, hidden: int, max_latent_action: float) -> None:
        super().__init__()
        self.net = mlp(feature_dim, (hidden, hidden, hidden), latent_dim)
        self.max_latent_action = max_latent_action

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.max_latent_action * torch.tanh(self.net(feature))


class ActionVAE(nn.Module):
    """Conditional VAE over normalised actions: (feature, action) -> z -> (feature, z) -> action."""

    def __init__(self, feature_dim: int, action_dim: int, latent_dim: int, hidden: int,
                 max_latent_action: float) -> None:
        super().__init__()
        self.encoder = mlp(feature_dim + action_dim, (hidden, hidden, hidden))
        self.mean = nn.Linear(hidden, latent_dim)
        self.log_var = nn.Linear(hidden, latent_dim)
        self.decoder = mlp(feature_dim + latent_dim, (hidden, hidden, hidden), action_dim)
        self.latent_dim = latent_dim
        self.max_latent_action = max_latent_action

    def forward(self, feature: torch.Tensor, action: torch.Tensor):
        h = self.encoder(torch.cat([feature, action], dim=1))
        mean, log_var = self.mean(h), self.log_var(h)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        return self.decode(feature, z), mean, log_var

    def decode(self, feature: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([feature, z], dim=1))


class Critic(nn.Module):
    """Twin Q(s, a) and V(s) heads on the observation feature."""

    def __init__(self, feature_dim: int, action_dim: int, hidden: int) -> None:
        super().__init__()
        sizes = (hidden, hidden, hidden)
        self.q1_net = mlp(feature_dim + action_dim, sizes, 1)
        self.q2_net = mlp(feature_dim + action_dim, sizes, 1)
        self.v_net = mlp(feature_dim, sizes, 1)

    def forward(self, feature: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([feature, action], dim=1)
        return self.q1_net(x), self.q2_net(x)

    def q1(self, feature: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.q1_net(torch.cat([feature, action], dim=1))

    def v(self, feature: torch.Tensor) -> torch.Tensor:
        return self.v_net(feature)


def kl_divergence(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp(), dim=1, keepdim=True)


class LAPOAgent(Agent):
    def __init__(self, schema: ObservationSchema, config: AgentConfig, device: torch.device | str,
                 value_range: tuple[float, float]) -> None:
        super().__init__(schema, config, device)
        c, f, a = config, config.obs_feature_dim, self.action_width
        latent = c.latent_dim or 2 * a
        head_in = f + schema.joint_dim if c.joints_to_policy else f
        self.vae = ActionVAE(head_in, a, latent, c.hidden_dim, c.max_latent_action).to(self.device)
        self.vae_target = copy.deepcopy(self.vae)
        self.actor = LatentActor(head_in, latent, c.hidden_dim, c.max_latent_action).to(self.device)
        self.actor_target = copy.deepcopy(self.actor)
        self.critic = Critic(f, a, c.hidden_dim).to(self.device)
        self.critic_target = copy.deepcopy(self.critic)
        for target in (self.vae_target, self.actor_target, self.critic_target):
            target.requires_grad_(False)
        # aux_action_weight > 0: an action head on the encoder's feature, trained in the critic step
        # (see critic_step); it only shapes the encoder and is not the policy.
        self.aux_head = mlp(head_in, (c.hidden_dim, c.hidden_dim), a).to(self.device) if c.aux_action_weight else None
        # advantage_estimate "mc_fit": the reward-to-go's baseline, trained in the critic step.
        self.return_head = (mlp(f, (c.hidden_dim, c.hidden_dim), 1).to(self.device)
                            if c.advantage_estimate == "mc_fit" else None)
        # The gradient-flow rule: the encoder is trained by the critic step only.
        critic_side = [self.critic] + [m for m in (self.aux_head, self.return_head) if m is not None]
        self.critic_optimizer = adam(
            [{"params": [p for m in critic_side for p in m.parameters()]}, {"params": self.encoder.parameters()}],
            lr=c.critic_lr)
        self.vae_optimizer = adam(self.vae.parameters(), lr=c.vae_lr)
        self.actor_optimizer = adam(self.actor.parameters(), lr=c.actor_lr)
        # V ranges over [min r, max r] / (1 - gamma): the discounted sum of any reward sequence.
        self.min_v = value_range[0] / (1.0 - c.discount)
        self.max_v = value_range[1] / (1.0 - c.discount)

    def modules(self) -> dict[str, nn.Module]:
        modules = {"encoder": self.encoder, "vae": self.vae, "vae_target": self.vae_target,
                   "actor": self.actor, "actor_target": self.actor_target,
                   "critic": self.critic, "critic_target": self.critic_target}
        if self.aux_head is not None:
            modules["aux_head"] = self.aux_head
        if self.return_head is not None:
            modules["return_head"] = self.return_head
        return modules

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_optimizer, "vae": self.vae_optimizer, "actor": self.actor_optimizer}

    def policy_input(self, feat: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        """What the VAE and the actor condition on: the (detached) fused feature, and with
        `joints_to_policy` the normalised joint vector beside it. The critic-trained feature keeps
        what predicts value, not the arm's exact configuration that a joint target is relative to
        (on the sim's demos a head on the feature alone fits chunks to 0.45 of the mean predictor's
        error, with the joints beside it to 0.04); the joints are an input, not encoder weights, so
        the gradient-flow rule holds."""
        return torch.cat([feat, joint], dim=1) if self.config.joints_to_policy else feat

    def train_step(self, batch: Batch) -> dict[str, float]:
        feat, next_feat, metrics = self.critic_step(batch)
        feat, next_feat = feat.detach(), next_feat.detach()
        metrics.update(self.vae_step(feat, next_feat, batch))
        metrics.update(self.actor_step(feat, batch.joint))
        self.update_targets()
        return metrics

    def critic_step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        c = self.config
        feat, next_feat = self.encode_pair(batch)
        with torch.no_grad():
            f_d, nf_d = feat.detach(), next_feat.detach()
            target_q = batch.reward + batch.not_done * c.discount * self.critic_target.v(nf_d)
            cond = self.policy_input(f_d, batch.joint)
            latent = self.actor_target(cond)
            noise = (torch.randn_like(latent) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
            pi_action = self.vae_target.decode(cond, latent + noise)
            tq1, tq2 = self.critic_target(f_d, pi_action)
            target_v = c.doubleq_min * torch.min(tq1, tq2) + (1 - c.doubleq_min) * torch.max(tq1, tq2)
            target_q = target_q.clamp(self.min_v, self.max_v)
            target_v = target_v.clamp(self.min_v, self.max_v)
        q1, q2 = self.critic(feat, batch.action)
        v = self.critic.v(feat)
        q_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        v_loss = F.mse_loss(v, target_v)
        loss = q_loss + v_loss
        metrics = {}
        if self.return_head is not None:
            # On the detached feature: a readout of what the critic's encoder sees. Regressed through
            # the encoder, its loss (returns of 20-40 squared) outweighed the critic's and cost the grasp
            # (mixed_all, seed 0: validation 1/20, 7 failures touching the cube without lifting it).
            return_loss = F.mse_loss(self.return_head(f_d), batch.returns)
            loss = loss + return_loss
            metrics["return_fit_loss"] = return_loss.item()
        if self.aux_head is not None:
            # LAPO's own objective, the advantage-weighted action error, shapes the encoder for the
            # actions as well as the value; its gradient reaches the encoder in this step only.
            _, weights = self.loss_weights(f_d, nf_d, batch)
            aux = F.mse_loss(self.aux_head(self.policy_input(feat, batch.joint)), batch.action, reduction="none")
            aux_loss = (weights * aux.mean(dim=1, keepdim=True)).mean()
            loss = loss + c.aux_action_weight * aux_loss
            metrics["aux_action_loss"] = aux_loss.item()
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_optimizer.step()
        return feat, next_feat, {"critic_loss": loss.item(), "q_loss": q_loss.item(), "v_loss": v_loss.item(),
                                 "q_mean": q1.mean().item(), "q_max": q1.max().item(),
                                 "v_mean": v.mean().item(), "target_q_mean": target_q.mean().item(), **metrics}

    def advantage_weights(self, feat: torch.Tensor, next_feat: torch.Tensor | None, batch: Batch,
                          normalise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages and sample weights; `normalise` False leaves exponential weights undivided by
        the batch mean (to normalise them over a whole dataset instead). `next_feat` may be None with
        advantage_estimate in RETURN_ESTIMATES, which do not read s'."""
        c = self.config
        with torch.no_grad():
            if c.advantage_estimate == "mc_step":  # a baseline from the data alone: no V(s) to compute
                adv = batch.step_advantage
            else:
                baseline = (self.return_head(feat) if self.return_head is not None
                            else self.critic.v(feat).clamp(self.min_v, self.max_v))
                if c.advantage_estimate in RETURN_ESTIMATES:
                    adv = batch.returns - baseline
                elif next_feat is None:
                    raise ValueError('advantage_estimate "td" needs the features of s\' (next_feat is None)')
                else:
                    next_v = self.critic.v(next_feat).clamp(self.min_v, self.max_v)
                    adv = batch.reward + batch.not_done * c.discount * next_v - baseline
            weights = self.weights_of(adv)
            if c.advantage_weighting == "exponential" and normalise:
                weights = weights / weights.mean()
        return adv, weights

    def weights_of(self, adv: torch.Tensor) -> torch.Tensor:
        """The sample weights of advantages `adv` (exponential ones undivided by their mean)."""
        c = self.config
        if c.advantage_weighting == "expectile":
            return torch.where(adv > c.advantage_margin, c.expectile, 1.0 - c.expectile)
        return torch.exp(adv / c.advantage_temperature).clamp(max=MAX_EXP_WEIGHT)

    def loss_weights(self, feat: torch.Tensor, next_feat: torch.Tensor | None,
                     batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages and the weights of the VAE and aux losses: ones where the replay buffer drew the
        samples in proportion to their weights already (advantage_sampling)."""
        adv, weights = self.advantage_weights(feat, next_feat, batch)
        return adv, (torch.ones_like(weights) if self.config.advantage_sampling else weights)

    def vae_step(self, feat: torch.Tensor, next_feat: torch.Tensor, batch: Batch) -> dict[str, float]:
        adv, weights = self.loss_weights(feat, next_feat, batch)
        recon, mean, log_var = self.vae(self.policy_input(feat, batch.joint), batch.action)
        # Summed over one action's dimensions, as in the reference, and averaged over a chunk's steps:
        # summed over K*A values it would drown the KL term, and z, not the observation, would carry
        # the action (decoding the actor's latent then leaves the data).
        recon_loss = F.mse_loss(recon, batch.action, reduction="none").sum(dim=1, keepdim=True)
        recon_loss = recon_loss / self.config.action_chunk
        kl = kl_divergence(mean, log_var)
        loss = (weights * (recon_loss + self.config.kl_beta * kl)).mean()
        self.vae_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.vae_optimizer.step()
        return {"vae_loss": loss.item(), "recon_loss": recon_loss.mean().item(), "kl_loss": kl.mean().item(),
                "adv_mean": adv.mean().item(), "adv_pos_frac": (adv > 0).float().mean().item()}

    def actor_step(self, feat: torch.Tensor, joint: torch.Tensor) -> dict[str, float]:
        cond = self.policy_input(feat, joint)
        action = self.vae_target.decode(cond, self.actor(cond))
        loss = -self.critic.q1(feat, action).mean()
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        # The actor loss also filled critic .grad fields; drop them so nothing stale lingers.
        self.critic.zero_grad(set_to_none=True)
        return {"actor_loss": loss.item()}

    def update_targets(self) -> None:
        tau = self.config.tau
        soft_update(self.critic, self.critic_target, tau)
        soft_update(self.actor, self.actor_target, tau)
        soft_update(self.vae, self.vae_target, tau)

    @torch.no_grad()
    def act(self, images: list[torch.Tensor], joint: torch.Tensor) -> torch.Tensor:
        cond = self.policy_input(self.encoder(self.view(images), joint), joint)
        return self.vae_target.decode(cond, self.actor(cond))

    @torch.no_grad()
    def validation_terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per-sample policy action, expectile weight of the recorded action, and squared TD error."""
        feat = self.encoder(self.view(batch.images), batch.joint)
        next_feat = self.encoder(self.view(batch.next_images), batch.next_joint)
        _, weights = self.advantage_weights(feat, next_feat, batch)
        target = batch.reward + batch.not_done * self.config.discount * self.critic_target.v(next_feat)
        td = (self.critic.q1(feat, batch.action) - target.clamp(self.min_v, self.max_v)) ** 2
        cond = self.policy_input(feat, batch.joint)
        return {"pred": self.vae_target.decode(cond, self.actor(cond)), "weight": weights, "td": td}
