"""A small image-conditioned reaching task for sample data, tests and the BC-vs-LAPO benchmark.

The global camera shows a green marker at a 2-D position p; the 16 joints should reach
t = W p (W fixed). The marker jumps to a new position during an episode, so only the image tells
where to go next: a policy that ignores the cameras cannot reach the best return. The wrist cameras
show a marker driven by each arm's first two joints (red left, blue right), as a wrist view
would move with its arm. Joints follow position commands with a first-order lag.

Demonstrators: "good" commands t plus small noise; "poor" commands the decoy W(-p) (a
consistent wrong mode, so averaging good and poor demos gives a useless middle) plus more noise.
Reward: exp(-(rms joint error / 0.3)^2) in (0, 1] per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lapo_learning.schema import CAMERAS

N_JOINTS = 16
LAG = 0.3  # fraction of the remaining command error closed per step
SUCCESS_RMS = 0.08


@dataclass
class TaskConfig:
    image_size: tuple[int, int] = (84, 84)
    episode_len: int = 50
    switch_every: int = 20  # steps between marker jumps
    good_noise: float = 0.05
    poor_noise: float = 0.15
    success_hold: int = 3  # steps within SUCCESS_RMS of the final target that end the episode


def _mixing_matrix() -> np.ndarray:
    w = np.random.default_rng(1234).normal(size=(N_JOINTS, 2))
    return (w / np.abs(w).max(axis=1, keepdims=True) * 0.8).astype(np.float32)


W = _mixing_matrix()


def _marker(img: np.ndarray, xy: np.ndarray, color: tuple[int, int, int], half: int) -> None:
    h, w, _ = img.shape
    cx = int(round((np.clip(xy[0], -1.2, 1.2) + 1.2) / 2.4 * (w - 1)))
    cy = int(round((np.clip(xy[1], -1.2, 1.2) + 1.2) / 2.4 * (h - 1)))
    img[max(cy - half, 0):cy + half + 1, max(cx - half, 0):cx + half + 1] = color


class ReachTask:
    """The environment: `reset(rng)`, `observe()`, `step(action)` -> (reward, done, success)."""

    def __init__(self, config: TaskConfig | None = None) -> None:
        self.config = config or TaskConfig()
        self.rng = np.random.default_rng(0)
        self.p = np.zeros(2, np.float32)
        self.q = np.zeros(N_JOINTS, np.float32)
        self.t = 0
        self.hold = 0
        self._background = np.zeros((*self.config.image_size, 3), np.uint8)

    @property
    def target(self) -> np.ndarray:
        return W @ self.p

    @property
    def decoy(self) -> np.ndarray:
        return W @ -self.p

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.p = rng.uniform(-1, 1, 2).astype(np.float32)
        self.q = rng.uniform(-0.5, 0.5, N_JOINTS).astype(np.float32)
        self.t = 0
        self.hold = 0
        # A per-episode background colour: a nuisance the encoder must learn to ignore.
        self._background = np.empty((*self.config.image_size, 3), np.uint8)
        self._background[:] = rng.integers(40, 110, size=3, dtype=np.uint8)

    def observe(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        half = max(1, self.config.image_size[0] // 20)
        imgs = {c: self._background.copy() for c in CAMERAS}
        _marker(imgs["global_image"], self.p, (40, 220, 40), half)
        _marker(imgs["left_image"], self.q[0:2], (220, 40, 40), half)
        _marker(imgs["right_image"], self.q[8:10], (40, 40, 220), half)
        return imgs, self.q.copy()

    def expert_action(self, good: bool) -> np.ndarray:
        cfg = self.config
        base, noise = (self.target, cfg.good_noise) if good else (self.decoy, cfg.poor_noise)
        return (base + self.rng.normal(0, noise, N_JOINTS)).astype(np.float32)

    def step(self, action: np.ndarray) -> tuple[float, bool, bool]:
        """Apply a command; returns (reward, terminal (success), timeout)."""
        cfg = self.config
        self.q = (self.q + LAG * (np.asarray(action, np.float32) - self.q)).astype(np.float32)
        rms = float(np.sqrt(np.mean((self.q - self.target) ** 2)))
        reward = float(np.exp(-(rms / 0.3) ** 2))
        self.t += 1
        final_segment = self.t > cfg.episode_len - cfg.switch_every
        self.hold = self.hold + 1 if (rms < SUCCESS_RMS and final_segment) else 0
        if self.t % cfg.switch_every == 0 and not final_segment:
            self.p = self.rng.uniform(-1, 1, 2).astype(np.float32)
        success = self.hold >= cfg.success_hold
        return reward, success, (not success and self.t >= cfg.episode_len)


def generate_episodes(n_samples: int, poor_fraction: float, seed: int, config: TaskConfig | None = None):
    """Yield episodes as dicts of arrays (seed layout + `target` ground truth) until n_samples."""
    rng = np.random.default_rng(seed)
    task = ReachTask(config)
    total = 0
    while total < n_samples:
        good = rng.random() >= poor_fraction
        task.reset(np.random.default_rng(rng.integers(1 << 31)))
        ep: dict[str, list] = {k: [] for k in (*CAMERAS, "joint", "actions", "rewards", "terminals",
                                               "timeouts", "target")}
        done = False
        while not done and total + len(ep["actions"]) < n_samples:
            imgs, q = task.observe()
            target = task.target
            action = task.expert_action(good)
            reward, terminal, timeout = task.step(action)
            for c in CAMERAS:
                ep[c].append(imgs[c])
            for key, value in (("joint", q), ("actions", action), ("rewards", reward),
                               ("terminals", terminal), ("timeouts", timeout), ("target", target)):
                ep[key].append(value)
            done = terminal or timeout
        arrays = {k: np.asarray(v) for k, v in ep.items()}
        arrays["good"] = good
        total += len(arrays["actions"])
        yield arrays


def evaluate_policy(policy, n_episodes: int, image_size: tuple[int, int], seed: int = 0) -> dict[str, float]:
    """Closed-loop rollouts of a `lapo_learning.Policy` on fresh seeded episodes of the task."""
    task = ReachTask(TaskConfig(image_size=image_size))
    returns, successes = [], 0
    for ep in range(n_episodes):
        task.reset(np.random.default_rng(10_000 + seed * 1000 + ep))  # disjoint from data seeds
        total, done = 0.0, False
        while not done:
            imgs, q = task.observe()
            action = policy.select_action(imgs["left_image"], imgs["right_image"], imgs["global_image"], q)
            reward, success, timeout = task.step(action)
            total += reward
            successes += success
            done = success or timeout
        returns.append(total)
    return {"AverageReturn": float(np.mean(returns)), "StdReturn": float(np.std(returns)),
            "success_rate": successes / n_episodes}
