"""Phase 3 of the sim loop: the checkpoint in the policy node drives the sim robot, over DDS.

Once, before the first episode: wait until the policy node reports every input fresh and its
command topic is matched here (DDS discovery of freshly started nodes can take seconds on a loaded
machine, which the first episode would otherwise spend). Per episode: reset, /policy/enable true,
run until the hand-over succeeds (the sim's ~/status: complete for success_hold without a break)
or the time limit of sim time, /policy/enable false.
The policy starts about 0.3 s after the reset (the drain below), as `lapo_ros.sim.evaluate`'s
start_delay models it. This is the path a real robot takes; `lapo_ros.sim.evaluate`
is the fast in-process equivalent used to choose checkpoints and recipes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from std_srvs.srv import SetBool, Trigger
from tqdm import tqdm

from lapo_ros.sim.episode_stats import EpisodeResult
from lapo_ros.sim.processes import DRAIN_S, POLICY_NODE, SIM_NODE, LoopError, RunSettings, Session

log = logging.getLogger("lapo_ros.sim.node_evaluation")

@dataclass(frozen=True)
class EvalConfig:
    episodes: int = 3
    seed: int = 1000  # sim seed: evaluation episode e (1..M) places the cube with seed + e
    time_limit: float = 10.0  # s of sim time per episode (the demonstration takes 6.4 s)


def evaluate_policy(settings: RunSettings, cfg: EvalConfig, checkpoint: Path, tag: str) -> list[EpisodeResult]:
    """Run the policy node with `checkpoint` on the sim for `cfg.episodes` episodes."""
    session = Session(settings, f"eval_{tag}")
    enable = f"/{POLICY_NODE}/enable"
    results: list[EpisodeResult] = []
    try:
        session.start_sim(demonstrator=False, seed=cfg.seed)
        session.start_node(POLICY_NODE, "policy.yaml", use_sim_time=True, checkpoint=str(checkpoint.resolve()),
                           autostart=False, image_height=settings.image_size[0], image_width=settings.image_size[1])
        ros = session.connect({f"/{SIM_NODE}/reset": Trigger, f"/{SIM_NODE}/status": Trigger, enable: SetBool})
        ros.wait_for_policy_inputs(settings.startup_timeout)
        for _ in tqdm(range(cfg.episodes), desc=f"evaluating {tag}", unit="episode"):
            start = ros.reset_episode()
            ros.set_bool(enable, True)
            end = session.wait_episode(start, cfg.time_limit, lambda s: s.success)
            ros.set_bool(enable, False)
            t = ros.tracker
            if t.commands == 0:
                raise LoopError(f"node {POLICY_NODE} published no command in {end.sim_time - start.sim_time:.1f} s "
                                f"of sim time while enabled (stale inputs? see /{POLICY_NODE}/diagnostics and its log)")
            result = EpisodeResult(seed=start.seed, success=end.success,
                                   episode_return=max(t.reward_max, end.reward), reward_sum=t.reward_sum,
                                   reward_ticks=t.reward_count, sim_duration=end.sim_time - start.sim_time,
                                   commands=t.commands, max_joint_change=t.max_joint_change)
            log.info("evaluation seed %d: success=%s, highest stage %g, %d commands, joints moved up to %.3f rad",
                     result.seed, result.success, result.episode_return, result.commands, result.max_joint_change)
            results.append(result)
            ros.spin_for(DRAIN_S)  # the last commands in flight land before the reset
    finally:
        session.close()
    return results
