"""LAPO's per-sample weights of the VAE loss from the advantage A = r + gamma V(s') - V(s)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lapo_learning.agent import MAX_EXP_WEIGHT, AgentConfig
from lapo_learning.dataset import load_dataset
from lapo_learning.lapo_agent import LAPOAgent
from lapo_learning.replay import ReplayBuffer, fit_statistics, returns_to_go, step_advantages, step_mean_returns

REWARDS = torch.tensor([[-0.5], [-0.01], [0.0], [0.01], [0.2], [3.0]])


def weights_for(sample_file, **config) -> torch.Tensor:
    """Weights of six samples whose advantage is exactly REWARDS (V is made 0 everywhere; with the
    "mc" estimate the reward-to-go is REWARDS and the one-step rewards are its opposite)."""
    ds = load_dataset(sample_file)
    episodes = np.arange(ds.n_episodes)
    agent = LAPOAgent(ds.schema, AgentConfig(**config), "cpu", value_range=(-1.0, 3.0))
    # The baseline the advantage subtracts: V, or with "mc_fit" the regressed reward-to-go.
    last = (agent.return_head if config.get("advantage_estimate") == "mc_fit" else agent.critic.v_net)[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    batch = ReplayBuffer(ds, episodes, fit_statistics(ds, ds.episode_indices(episodes)), "cpu", seed=0).sample(6)
    batch = dataclasses.replace(batch, reward=REWARDS.clone(), returns=REWARDS.clone())
    if config.get("advantage_estimate") in ("mc", "mc_fit"):
        batch = dataclasses.replace(batch, reward=-REWARDS)
    with torch.no_grad():
        feat = agent.encoder(batch.images, batch.joint)
        next_feat = agent.encoder(batch.next_images, batch.next_joint)
    adv, weights = agent.advantage_weights(feat, next_feat, batch)
    assert torch.allclose(adv, REWARDS)
    return weights.squeeze(1)


def test_expectile_weights_follow_the_sign_only(sample_file):
    w = weights_for(sample_file, expectile=0.8)
    assert torch.allclose(w, torch.tensor([0.2, 0.2, 0.2, 0.8, 0.8, 0.8]))


def test_expectile_margin_sets_where_the_high_weight_starts(sample_file):
    w = weights_for(sample_file, expectile=0.8, advantage_margin=0.05)
    assert torch.allclose(w, torch.tensor([0.2, 0.2, 0.2, 0.2, 0.8, 0.8]))
    # Below 0, only the clearly worse sample keeps the low weight.
    w = weights_for(sample_file, expectile=0.8, advantage_margin=-0.05)
    assert torch.allclose(w, torch.tensor([0.2, 0.8, 0.8, 0.8, 0.8, 0.8]))


def test_exponential_weights_grow_with_the_advantage(sample_file):
    w = weights_for(sample_file, advantage_weighting="exponential", advantage_temperature=0.1)
    assert torch.isclose(w.mean(), torch.tensor(1.0))  # normalised: the loss keeps its scale
    assert (w[1:] > w[:-1]).all()  # monotone in A
    # Near A = 0 the weights barely differ (critic noise is not a preference) ...
    assert w[3] / w[1] == pytest.approx(np.exp(0.02 / 0.1), rel=1e-4)
    # ... a clearly better action is preferred strongly, and the cap bounds any one sample.
    assert w[4] / w[2] == pytest.approx(np.exp(2.0), rel=1e-4)
    assert w[5] / w[2] == pytest.approx(MAX_EXP_WEIGHT, rel=1e-4)


def test_mc_estimate_reads_the_reward_to_go(sample_file):
    w = weights_for(sample_file, expectile=0.8, advantage_estimate="mc")
    assert torch.allclose(w, torch.tensor([0.2, 0.2, 0.2, 0.8, 0.8, 0.8]))


def test_mc_fit_estimate_reads_the_reward_to_go_against_its_baseline(sample_file):
    w = weights_for(sample_file, expectile=0.8, advantage_estimate="mc_fit")
    assert torch.allclose(w, torch.tensor([0.2, 0.2, 0.2, 0.8, 0.8, 0.8]))


def test_mc_fit_baseline_learns_the_returns_and_splits_the_operators(sample_file):
    """Two operators from the same states, one whose episodes return 3 and one whose return 1: the
    critic step's baseline settles between them, so the first operator's samples get A > 0 and the
    second's A < 0, whatever V makes of them."""
    torch.manual_seed(0)
    ds = load_dataset(sample_file)
    episodes = np.arange(ds.n_episodes)
    stats = fit_statistics(ds, ds.episode_indices(episodes))
    agent = LAPOAgent(ds.schema, AgentConfig(advantage_estimate="mc_fit", critic_lr=1e-3), "cpu",
                      value_range=(0.0, 1.0))
    batch = ReplayBuffer(ds, episodes, stats, "cpu", seed=0).sample(32)
    good = torch.arange(32).unsqueeze(1) % 2 == 0
    twin = dataclasses.replace(batch, images=[torch.cat([i[:16], i[:16]]) for i in batch.images],
                               joint=torch.cat([batch.joint[:16], batch.joint[:16]]))
    twin = dataclasses.replace(twin, returns=torch.where(torch.cat([good[:16], ~good[:16]]), 3.0, 1.0))
    for _ in range(300):
        agent.critic_step(twin)
    with torch.no_grad():
        feat = agent.encoder(twin.images, twin.joint)
        adv, weights = agent.advantage_weights(feat, None, twin)
    assert agent.return_head(feat).mean().item() == pytest.approx(2.0, abs=0.2)
    better = twin.returns > 2.0
    assert (adv[better] > 0.5).all() and (adv[~better] < -0.5).all()
    assert torch.allclose(weights[better], torch.tensor(agent.config.expectile))


def test_returns_to_go_stay_inside_each_episode(sample_file):
    r = np.array([1.0, 0.0, 2.0, 5.0, 1.0], dtype=np.float32)
    assert np.allclose(returns_to_go(r, np.array([3, 5]), 0.5), [1.5, 1.0, 2.0, 5.5, 1.0])
    # A buffer over some episodes, in any order, sums each one's own rewards only.
    ds = load_dataset(sample_file)
    episodes = np.array([2, 0])
    stats = fit_statistics(ds, ds.episode_indices(episodes))
    buf = ReplayBuffer(ds, episodes, stats, "cpu", seed=0, discount=0.9)
    expected = np.concatenate([returns_to_go(ds.rewards[ds.episode_indices([e])] / stats.reward_scale,
                                             np.array([ds.episode_ends[e] - ds.episode_starts[e]]), 0.9)
                               for e in episodes])
    assert np.allclose(buf.returns.squeeze(1).numpy(), expected, atol=1e-5)


def test_bad_weighting_settings_are_refused():
    with pytest.raises(ValueError, match="advantage_weighting"):
        AgentConfig(advantage_weighting="softmax")
    with pytest.raises(ValueError, match="advantage_margin"):
        AgentConfig(advantage_margin=float("nan"))
    with pytest.raises(ValueError, match="advantage_estimate"):
        AgentConfig(advantage_estimate="gae")
    with pytest.raises(ValueError, match="advantage_temperature"):
        AgentConfig(advantage_weighting="exponential", advantage_temperature=0.0)


def test_step_mean_returns_average_each_step_over_the_episodes_that_reach_it():
    returns = np.array([4.0, 2.0, 1.0, 0.0, 0.0, 2.0, 1.0, 5.0], dtype=np.float32)  # episodes of 3, 2, 3
    np.testing.assert_allclose(step_mean_returns(returns, np.array([3, 5, 8])),
                               [2.0, 1.0, 3.0, 2.0, 1.0, 2.0, 1.0, 3.0])


def test_step_advantages_are_a_fraction_of_the_best_return_at_their_step_whatever_the_reward_scale():
    returns = np.array([4.0, 2.0, 1.0, 0.0, 0.0, 2.0, 1.0, 5.0], dtype=np.float32)  # as above
    ends = np.array([3, 5, 8])
    # Steps 0 / 1 / 2: returns (4, 0, 2) / (2, 0, 1) / (1, 5), largest 4 / 2 / 5.
    expected = (returns - step_mean_returns(returns, ends)) / np.array([4, 2, 5, 4, 2, 4, 2, 5])
    np.testing.assert_allclose(step_advantages(returns, ends), expected, rtol=1e-6)
    # Stage rewards (sim: returns up to ~46) and a sparse outcome (at most 1) meet one margin alike.
    np.testing.assert_allclose(step_advantages(40.0 * returns, ends), expected, rtol=1e-6)
    assert not step_advantages(np.zeros(3, dtype=np.float32), np.array([3])).any()  # no reward at all: no NaN


def test_a_failed_episode_is_as_far_below_at_its_first_step_as_at_its_last_under_a_discounted_outcome():
    """The recorder's sparse outcome (1 on a success's last step), discounted over 180 steps: a failed
    episode's first steps sit half the best reward-to-go below the step's mean, not 0.99^179 / 2 = 0.08
    (inside the sim recipe's margin of -0.085, which gave them the high weight)."""
    success, failure = np.zeros(180, dtype=np.float32), np.zeros(180, dtype=np.float32)
    success[-1] = 1.0
    ends = np.array([180, 360])
    adv = step_advantages(returns_to_go(np.concatenate([success, failure]), ends, 0.99), ends)
    np.testing.assert_allclose(adv, np.repeat([0.5, -0.5], 180), rtol=1e-5)
    assert (adv[180:] < -0.085).all() and (adv[:180] > -0.085).all()


def test_mc_step_estimate_keeps_the_worse_operator_below_whatever_v_says(sample_file):
    """Two operators over the same steps, episodes returning 3 and 1: against the step's mean return
    (2) every sample of the first is above and every one of the second below (by a third of the best
    return), whatever V(s) says (here 3 everywhere, which would put both at or below A = 0 with "mc")."""
    torch.manual_seed(0)
    ds = load_dataset(sample_file)
    episodes = np.arange(ds.n_episodes)
    agent = LAPOAgent(ds.schema, AgentConfig(advantage_estimate="mc_step", expectile=0.9), "cpu",
                      value_range=(0.0, 3.0))
    batch = ReplayBuffer(ds, episodes, fit_statistics(ds, ds.episode_indices(episodes)), "cpu", seed=0).sample(8)
    good = torch.arange(8).unsqueeze(1) % 2 == 0
    step_adv = torch.from_numpy(step_advantages(np.array([3.0, 1.0], dtype=np.float32), np.array([1, 2])))
    batch = dataclasses.replace(batch, step_advantage=torch.where(good, step_adv[0], step_adv[1]))
    last = agent.critic.v_net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, 3.0)
    with torch.no_grad():
        feat = agent.encoder(batch.images, batch.joint)
        adv, weights = agent.advantage_weights(feat, None, batch)
    torch.testing.assert_close(adv, torch.where(good, 1.0 / 3.0, -1.0 / 3.0))
    torch.testing.assert_close(weights, torch.where(good, 0.9, 0.1))


def test_advantage_sampling_draws_by_weight_and_leaves_the_losses_unweighted(sample_file):
    """With advantage_sampling the buffer draws each sample as often as its expectile weight says, and
    the VAE and aux losses then weigh the drawn samples alike (weighting twice would square it)."""
    ds = load_dataset(sample_file)
    episodes = np.arange(ds.n_episodes)
    buf = ReplayBuffer(ds, episodes, fit_statistics(ds, ds.episode_indices(episodes)), "cpu", seed=0)
    config = AgentConfig(advantage_estimate="mc_step", expectile=0.9)
    agent = LAPOAgent(ds.schema, dataclasses.replace(config, advantage_sampling=True), "cpu", value_range=(0.0, 1.0))
    weights = agent.weights_of(buf.step_advantage)
    usable = weights.squeeze(1)[buf.td_indices]
    expected_low = float(usable[usable < 0.5].sum() / usable.sum())  # ~0.1 * 46% / (0.9 * 54% + 0.1 * 46%)
    assert 0.05 < expected_low < 0.15
    uniform = buf.sample(20000)
    assert float((uniform.step_advantage <= 0).float().mean()) > 0.4
    buf.draw_in_proportion(weights)
    drawn = buf.sample(20000)
    assert float((drawn.step_advantage <= 0).float().mean()) == pytest.approx(expected_low, abs=0.01)
    batch = buf.sample(64)
    with torch.no_grad():
        feat = agent.encoder(batch.images, batch.joint)
    _, loss_weights = agent.loss_weights(feat, None, batch)
    assert torch.equal(loss_weights, torch.ones_like(loss_weights))
    _, loss_weights = LAPOAgent(ds.schema, config, "cpu", value_range=(0.0, 1.0)).loss_weights(feat, None, batch)
    torch.testing.assert_close(loss_weights, torch.where(batch.step_advantage > 0, 0.9, 0.1))
    with pytest.raises(ValueError, match=f"expected {buf.size} finite values >= 0, got 3"):
        buf.draw_in_proportion(torch.ones(3))
    with pytest.raises(ValueError, match="weight 0"):
        buf.draw_in_proportion(torch.zeros(buf.size))
    with pytest.raises(ValueError, match="advantage_sampling needs algo lapo and advantage_estimate mc_step"):
        AgentConfig(advantage_sampling=True)
