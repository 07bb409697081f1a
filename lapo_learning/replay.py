"""Device-resident replay buffer over one split of an OfflineDataset.

Everything (uint8 images, normalised joints/actions, scaled rewards, next-index table) is moved to
the training device once; a batch is a handful of index_select calls, no HDF5 or Python loop.
"""
from __future__ import annotations

from dataclasses import dataclass
import fnmatch
from typing import Sequence

import numpy as np
import torch

from lapo_learning.dataset import OfflineDataset
from lapo_learning.outliers import robust_range
from lapo_learning.schema import CAMERAS, DatasetStatistics, Normalizer, relative_to_joints


@dataclass
class Batch:
    images: list[torch.Tensor]  # per camera uint8 [B,H,W,3]
    joint: torch.Tensor  # normalised [B,J]
    action: torch.Tensor  # normalised model targets [B,K*A] (DatasetStatistics.action_targets)
    reward: torch.Tensor  # scaled [B,1]
    not_done: torch.Tensor  # [B,1]
    next_images: list[torch.Tensor]
    next_joint: torch.Tensor
    # scaled discounted reward-to-go of the rest of the sample's recorded episode [B,1] (no bootstrap
    # past its end): LAPO's Monte-Carlo advantage (AgentConfig.advantage_estimate "mc")
    returns: torch.Tensor
    # advantage_estimate "mc_step"'s advantage [B,1]: `returns` minus their mean over the buffer's
    # episodes at the sample's step (its index in its episode), as a fraction of the largest |returns|
    # at that step (step_advantages)
    step_advantage: torch.Tensor

    def __len__(self) -> int:
        return self.action.shape[0]


def fit_statistics(ds: OfflineDataset, indices: np.ndarray, reward_scale: float | None = None,
                   relative_actions: bool = False, action_chunk: int = 1,
                   absolute_actions: Sequence[str] = ()) -> DatasetStatistics:
    """Normalisation from the training split only (validation stays unseen).

    Rewards are divided by the split's max |r| unless `reward_scale` is given, which keeps the
    value range, and so the critic's targets, of the same order whatever the task's reward units.
    `relative_actions`: the model's targets are action - joint position (see DatasetStatistics),
    except for the actions whose names match a pattern of `absolute_actions` (fnmatch, e.g. "*finger*").
    `action_chunk`: the model predicts chunks of this many actions, each step normalised on its own.
    `action_low`/`action_high` (the policy node's default limits) are the robust range of the raw
    actions, which one outlier cannot widen.
    """
    actions, joints = ds.actions[indices], ds.joint[indices]
    if reward_scale is None:
        reward_scale = float(np.abs(ds.rewards[indices]).max()) or 1.0
    names = list(ds.schema.action_names)
    matches = {p: fnmatch.filter(names, p) for p in absolute_actions}
    unmatched = [p for p, matched in matches.items() if not matched]
    if unmatched:
        raise ValueError(f"absolute actions {unmatched} match no action name of the data: {names}")
    absolute = set().union(*matches.values())
    index = None
    if relative_actions:
        index = tuple(None if name in absolute else j for name, j in zip(names, ds.schema.action_joint_index()))
    action_low, action_high = robust_range(actions)
    targets = relative_to_joints(ds.action_chunks(action_chunk, indices), joints, index)
    return DatasetStatistics(
        joint=Normalizer.fit(joints),
        action=Normalizer.fit(targets.reshape(len(targets), -1)),
        action_min=actions.min(axis=0),
        action_max=actions.max(axis=0),
        reward_scale=reward_scale,
        action_joint_index=index,
        action_low=action_low,
        action_high=action_high,
    )


def returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray, discount: float) -> np.ndarray:
    """Per sample, sum_k discount^k r_{t+k} over the rest of its episode (`episode_ends` exclusive)."""
    out = np.zeros(len(rewards), dtype=np.float64)
    start = 0
    for end in episode_ends:
        acc = 0.0
        for t in range(end - 1, start - 1, -1):
            acc = float(rewards[t]) + discount * acc
            out[t] = acc
        start = end
    return out.astype(np.float32)


def episode_steps(episode_ends: np.ndarray) -> np.ndarray:
    """Per sample, its step: its index within its episode (`episode_ends` exclusive)."""
    starts = np.concatenate([[0], episode_ends[:-1]])
    return np.arange(int(episode_ends[-1])) - np.repeat(starts, episode_ends - starts)


def step_mean_returns(returns: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
    """Per sample, the mean of `returns` at its step (index within its episode) over the episodes
    (`episode_ends` exclusive) that last that long."""
    step = episode_steps(episode_ends)
    return (np.bincount(step, weights=returns) / np.bincount(step))[step].astype(np.float32)


def step_advantages(returns: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
    """`returns` minus step_mean_returns, divided by the largest |returns| at the same step: a fraction
    of the best reward-to-go left at that point of the episode, so that a margin on it means the same
    under any reward scale (sim stage rewards: up to ~46 after scaling; the recorder's sparse outcome:
    at most 1) and at the first step as at the last. Against the largest reward-to-go overall, a
    discounted sparse reward made every early advantage small (0.99^180 = 0.16 at the first step of a
    180-step success), and a failing operator's first ticks got the high weight inside the margin
    (sim, mixed_grasp_offset with the outcome reward: its steps 0-4, where its approach starts)."""
    step = episode_steps(episode_ends)
    scale = np.zeros(step.max() + 1)
    np.maximum.at(scale, step, np.abs(returns))
    scale = np.where(scale > 0, scale, 1.0)[step]  # no reward left at a step: every advantage there is 0
    return ((returns - step_mean_returns(returns, episode_ends)) / scale).astype(np.float32)


class ReplayBuffer:
    def __init__(self, ds: OfflineDataset, episodes: np.ndarray, stats: DatasetStatistics,
                 device: torch.device | str, seed: int, action_chunk: int = 1, discount: float = 0.99) -> None:
        self.device = torch.device(device)
        idx = ds.episode_indices(episodes)
        # Whole episodes are selected, so every next index stays inside the subset: remap it.
        position = np.full(len(ds), -1, dtype=np.int64)
        position[idx] = np.arange(len(idx))
        nxt = position[ds.next_index()[idx]]
        assert (nxt >= 0).all()

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

        self.images = [put(ds.images[c][idx]) for c in CAMERAS]
        self.joint = put(stats.joint.normalize(ds.joint[idx]))
        self.action = put(stats.action_targets(ds.action_chunks(action_chunk, idx), ds.joint[idx]))
        reward = (ds.rewards[idx] / stats.reward_scale).astype(np.float32)
        self.reward = put(reward).unsqueeze(1)
        # Whole episodes, in order: the subset's episode ends are the cumulative episode lengths.
        ends = np.cumsum(ds.episode_ends[episodes] - ds.episode_starts[episodes])
        returns = returns_to_go(reward, ends, discount)
        self.returns = put(returns).unsqueeze(1)
        self.step_advantage = put(step_advantages(returns, ends)).unsqueeze(1)
        self.not_done = put((~ds.terminals[idx]).astype(np.float32)).unsqueeze(1)
        self.next = put(nxt)
        self.td_indices = put(np.nonzero(ds.usable_for_td()[idx])[0])
        if len(self.td_indices) == 0:
            raise ValueError("no usable transition: every episode has a single step")
        self.size = len(idx)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.sampling_weights: torch.Tensor | None = None  # None: uniform over td_indices

    def draw_in_proportion(self, weights: torch.Tensor) -> None:
        """From now on sample() draws sample i with probability proportional to weights[i] (one
        non-negative weight per sample of the buffer, not all 0)."""
        w = weights.reshape(-1).to(self.device, torch.float32)
        if len(w) != self.size or not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"sampling weights: expected {self.size} finite values >= 0, got {len(w)}")
        w = w.index_select(0, self.td_indices)
        if w.sum() <= 0:
            raise ValueError("sampling weights: every usable transition has weight 0")
        self.sampling_weights = w

    @property
    def reward_range(self) -> tuple[float, float]:
        r = self.reward
        return float(r.min()), float(r.max())

    def sample(self, batch_size: int) -> Batch:
        if self.sampling_weights is None:
            pick = torch.randint(len(self.td_indices), (batch_size,), device=self.device, generator=self.generator)
        else:
            pick = torch.multinomial(self.sampling_weights, batch_size, replacement=True, generator=self.generator)
        return self.gather(self.td_indices[pick])

    def gather(self, i: torch.Tensor) -> Batch:
        n = self.next[i]
        return Batch(
            images=[img.index_select(0, i) for img in self.images],
            joint=self.joint.index_select(0, i),
            action=self.action.index_select(0, i),
            reward=self.reward.index_select(0, i),
            not_done=self.not_done.index_select(0, i),
            next_images=[img.index_select(0, n) for img in self.images],
            next_joint=self.joint.index_select(0, n),
            returns=self.returns.index_select(0, i),
            step_advantage=self.step_advantage.index_select(0, i),
        )

    def iterate(self, batch_size: int):
        """Every sample once, in order (validation)."""
        for start in range(0, self.size, batch_size):
            yield self.gather(torch.arange(start, min(start + batch_size, self.size), device=self.device))
