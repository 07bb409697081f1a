"""Per-episode bookkeeping of the sim loop (lapo_ros.sim.loop) and the in-process evaluator. Pure logic, no ROS.

`parse_sim_status` reads the sim robot's `~/status` message, `EpisodeTracker` accumulates the
stage reward and the joint motion of one episode from the topics, `summarize_returns` turns
finished episodes into the seed's AverageReturn / StdReturn plus a success rate.

Return of an episode = its highest ACT stage reward (0..4: touched, lifted, attempted transfer,
transferred), as ACT reports "highest reward". Evaluation episodes end at success, so the sum of
/reward over an episode depends on when it was cut; it is kept per episode (`reward_sum`) for
fixed-length comparisons but is not the headline return.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

RETURN_DEFINITION = "highest ACT stage reward of the episode (0..4), as ACT's 'highest reward'"
# ACT counts an episode a success when it reaches this stage reward at any instant (its max reward);
# a cube dropped through the left fingers can do that. Our success_rate needs the hand-over held
# (config/sim.yaml success_hold); act_success_rate is ACT's, to compare with ACT's figures.
ACT_SUCCESS_STAGE = 4


@dataclass(frozen=True)
class SimStatus:
    """What the sim robot's `~/status` (std_srvs/Trigger) answers."""

    success: bool  # the hand-over is complete right now
    episode: int
    seed: int
    reward: float  # current stage reward
    demonstrator: str  # "off", "running" or "done"
    sim_time: float  # seconds since the node started (monotonic across resets)
    failure: str = ""  # the demonstrator's failure mode this episode; "" for a clean one or none running


def parse_sim_status(success: bool, message: str) -> SimStatus:
    """Parse `episode=1 seed=1 reward=0 demonstrator=running sim_time=1.234` (plus `failure=MODE`
    while a demonstrator runs, `none` for a clean demonstration).

    Raises ValueError naming the missing or malformed field, so that a change of the sim node's
    message format fails loudly instead of silently reading zeros.
    """
    fields = dict(part.split("=", 1) for part in message.split() if "=" in part)
    try:
        return SimStatus(success=bool(success), episode=int(fields["episode"]), seed=int(fields["seed"]),
                         reward=float(fields["reward"]), demonstrator=fields["demonstrator"],
                         sim_time=float(fields["sim_time"]),
                         failure="" if fields.get("failure", "none") == "none" else fields["failure"])
    except KeyError as exc:
        raise ValueError(f"sim status message {message!r} has no field {exc.args[0]!r}") from exc
    except ValueError as exc:
        raise ValueError(f"sim status message {message!r} is malformed: {exc}") from exc


@dataclass
class EpisodeTracker:
    """Stage rewards, joint motion and command count of the episode in progress."""

    reward_max: float = 0.0
    reward_sum: float = 0.0
    reward_count: int = 0
    commands: int = 0
    max_joint_change: float = 0.0  # largest |q - q_start| of any joint (rad) so far
    _start: np.ndarray | None = None

    def reset(self) -> None:
        """Forget everything: the next joint state is the episode's start pose."""
        self.__init__()

    def add_reward(self, value: float) -> None:
        self.reward_max = max(self.reward_max, value)
        self.reward_sum += value
        self.reward_count += 1

    def add_joints(self, positions: Iterable[float]) -> None:
        q = np.asarray(positions, dtype=np.float64)
        if self._start is None:
            self._start = q
            return
        if q.shape != self._start.shape:
            raise ValueError(f"joint state has {q.size} positions, the episode started with {self._start.size}")
        self.max_joint_change = max(self.max_joint_change, float(np.max(np.abs(q - self._start), initial=0.0)))

    def add_command(self) -> None:
        self.commands += 1


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    success: bool
    episode_return: float  # see RETURN_DEFINITION
    reward_sum: float  # sum of /reward over the episode's control ticks
    reward_ticks: int
    sim_duration: float  # s of sim time from reset to the end of the episode
    commands: int  # commands seen on the command topic during the episode
    max_joint_change: float  # rad
    outcome: str = ""  # recording: the recorder's outcome (success, failure, timeout)
    failure_mode: str = ""  # recording: the demonstrator's failure mode, "" for a clean demonstration

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound at 0/n and n/n, unlike the normal one)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize_returns(results: list[EpisodeResult]) -> dict[str, Any]:
    """AverageReturn / StdReturn (population std, like the seed), success rate (the hand-over held) and
    ACT's success rate (ACT_SUCCESS_STAGE reached), each with its 95% interval."""
    if not results:
        raise ValueError("no episodes to summarize")
    returns = np.array([r.episode_return for r in results], dtype=np.float64)
    successes = sum(bool(r.success) for r in results)
    act = int((returns >= ACT_SUCCESS_STAGE).sum())
    return {"AverageReturn": float(returns.mean()), "StdReturn": float(returns.std()),
            "success_rate": successes / len(results), "success_ci95": list(wilson_interval(successes, len(results))),
            "act_success_rate": act / len(results), "act_success_ci95": list(wilson_interval(act, len(results))),
            "episodes": len(results), "return_definition": RETURN_DEFINITION}
