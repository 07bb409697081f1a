"""The gradient-flow rule: the observation encoder learns from the critic loss only."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lapo_learning.agent import AgentConfig
from lapo_learning.bc_agent import BCAgent
from lapo_learning.dataset import load_dataset
from lapo_learning.lapo_agent import LAPOAgent
from lapo_learning.replay import ReplayBuffer, fit_statistics


@pytest.fixture(params=[(True, "cnn_3conv_1fc_0", 0.0, "expectile", "td"),
                        (False, "cnn_3conv_1fc_0", 0.0, "expectile", "td"),
                        (True, "keypoints_3conv_16kp", 0.0, "expectile", "td"),
                        (True, "cnn_3conv_1fc_0", 1.0, "expectile", "td"),
                        (True, "cnn_3conv_1fc_0", 1.0, "exponential", "td"),
                        (True, "cnn_3conv_1fc_0", 1.0, "expectile", "mc"),
                        (True, "cnn_3conv_1fc_0", 1.0, "expectile", "mc_fit"),
                        (True, "cnn_3conv_1fc_0", 1.0, "expectile", "mc_step")],
                ids=["joints_to_policy", "features_only", "keypoint_encoder", "aux_action_loss",
                     "aux_exponential_weights", "aux_mc_advantage", "aux_mc_fit_advantage", "aux_mc_step_advantage"])
def lapo(sample_file, request):
    torch.manual_seed(0)
    ds = load_dataset(sample_file)
    episodes = np.arange(ds.n_episodes)
    stats = fit_statistics(ds, ds.episode_indices(episodes))
    joints_to_policy, encoder, aux, weighting, estimate = request.param
    config = AgentConfig(joints_to_policy=joints_to_policy, image_encoder=encoder, aux_action_weight=aux,
                         advantage_weighting=weighting, advantage_estimate=estimate)
    agent = LAPOAgent(ds.schema, config, "cpu", value_range=(0.0, 1.0))
    buf = ReplayBuffer(ds, episodes, stats, "cpu", seed=0)
    return agent, buf


def params_of(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def optimizer_param_ids(opt: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in opt.param_groups for p in group["params"]}


def test_optimizer_parameter_sets(lapo):
    agent, _ = lapo
    ids = lambda m: {id(p) for p in m.parameters()}  # noqa: E731
    # The auxiliary action head exists only when asked for, and then belongs to the critic step.
    assert (agent.aux_head is None) == (agent.config.aux_action_weight == 0)
    # So does the reward-to-go's baseline (advantage_estimate "mc_fit").
    assert (agent.return_head is None) == (agent.config.advantage_estimate != "mc_fit")
    heads = set().union(*(ids(m) for m in (agent.aux_head, agent.return_head) if m is not None))
    assert optimizer_param_ids(agent.critic_optimizer) == ids(agent.critic) | ids(agent.encoder) | heads
    assert optimizer_param_ids(agent.vae_optimizer) == ids(agent.vae)
    assert optimizer_param_ids(agent.actor_optimizer) == ids(agent.actor)
    assert not optimizer_param_ids(agent.vae_optimizer) & ids(agent.encoder)
    assert not optimizer_param_ids(agent.actor_optimizer) & ids(agent.encoder)
    # targets are never optimised
    for target in (agent.critic_target, agent.actor_target, agent.vae_target):
        assert not any(p.requires_grad for p in target.parameters())


def test_encoder_moves_on_critic_step_only(lapo):
    agent, buf = lapo
    batch = buf.sample(16)
    before = params_of(agent.encoder)
    feat, next_feat, _ = agent.critic_step(batch)
    after_critic = params_of(agent.encoder)
    changed = [not torch.equal(a, b) for a, b in zip(before, after_critic)]
    assert all(changed), "every encoder tensor (all 3 cameras, joint MLP, fusion) must get a critic update"
    # a gradient reached the image encoders of every camera
    for enc in agent.encoder.image_encoders:
        assert enc.convs[0].weight.grad is not None and enc.convs[0].weight.grad.abs().sum() > 0

    vae_before = params_of(agent.vae)
    agent.vae_step(feat.detach(), next_feat.detach(), batch)
    assert identical(after_critic, params_of(agent.encoder)), "VAE step changed the encoder"
    assert not identical(vae_before, params_of(agent.vae))

    actor_before = params_of(agent.actor)
    agent.actor_step(feat.detach(), batch.joint)
    assert identical(after_critic, params_of(agent.encoder)), "actor step changed the encoder"
    assert not identical(actor_before, params_of(agent.actor))


def test_full_train_step_detaches_features(lapo):
    """Even with stale encoder grads present, the VAE/actor optimizers cannot touch the encoder."""
    agent, buf = lapo
    for p in agent.encoder.parameters():
        p.grad = torch.ones_like(p)  # would move the encoder if any later optimizer held it
    before = params_of(agent.encoder)
    agent.vae_step(*(f.detach() for f in agent.encode_pair(buf.sample(8))), buf.sample(8))
    assert identical(before, params_of(agent.encoder))
    metrics = agent.train_step(buf.sample(16))
    assert np.isfinite(list(metrics.values())).all()
    assert not identical(before, params_of(agent.encoder))


def test_bc_trains_its_encoder(sample_file):
    ds = load_dataset(sample_file)
    episodes = np.arange(ds.n_episodes)
    stats = fit_statistics(ds, ds.episode_indices(episodes))
    agent = BCAgent(ds.schema, AgentConfig(algo="bc"), "cpu")
    buf = ReplayBuffer(ds, episodes, stats, "cpu", seed=0)
    before = params_of(agent.encoder)
    agent.train_step(buf.sample(8))
    assert not identical(before, params_of(agent.encoder))


def test_policy_heads_see_the_joints_beside_the_feature(lapo):
    agent, buf = lapo
    batch = buf.sample(4)
    feat = agent.encoder(batch.images, batch.joint).detach()
    cond = agent.policy_input(feat, batch.joint)
    extra = batch.joint.shape[1] if agent.config.joints_to_policy else 0
    assert cond.shape == (4, agent.config.obs_feature_dim + extra)
    assert agent.actor.net[0].in_features == cond.shape[1]


def test_checkpoint_configs_from_before_joints_to_policy_load_as_features_only():
    assert AgentConfig().joints_to_policy
    old = {k: v for k, v in AgentConfig().to_dict().items() if k != "joints_to_policy"}
    assert not AgentConfig.from_dict(old).joints_to_policy
    assert AgentConfig.from_dict(AgentConfig().to_dict()).joints_to_policy
