"""Phase 1 of the sim loop: record scripted demonstrations through the sim robot and recorder nodes.

Per episode: pause the sim, reset it (new cube pose, new demonstration), start recording, resume,
wait until the demonstrator is done (polling /sim_robot/status) or the recorder's step limit, and
stop recording with the sim's success flag as the outcome. One HDF5 file per episode in the dataset
folder; a botched demonstration's file also names the demonstrator's failure mode (attribute
`failure_mode`, which the recorder cannot know), so that analyses can group samples by it. The
rewards are the recorder's sparse outcome reward by default, what it stores on a real robot (no
reward topic there), or the sim's ACT stage rewards (`rewards="stage"`, over /reward). Paused
from the reset to the recorder's start, every episode is recorded from its first tick whatever the
pace or the load (the recorder waits for observations stamped after its start), so the sim may run
as fast as it renders: the demonstrator and the recorder follow sim time.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from std_srvs.srv import SetBool, Trigger
from tqdm import tqdm

from lapo_learning.dataset_format import REWARDS_KEY, validate_file
from lapo_learning.episode_writer import FAILURE_MODE_ATTR, OUTCOME_ATTR
from lapo_ros.sim.demonstrator import ALL_FAILURE_MODES
from lapo_ros.sim.episode_stats import EpisodeResult, SimStatus
from lapo_ros.sim.processes import RECORDER_NODE, SIM_NODE, LoopError, LoopNode, RunSettings, Session, sim_topics

log = logging.getLogger("lapo_ros.sim.recording")
# outcome: the recorder's sparse outcome reward (no reward topic, as on a real robot); stage: the sim's /reward
REWARDS = ("outcome", "stage")


@dataclass(frozen=True)
class RecordConfig:
    episodes: int
    seed: int = 0  # sim seed: episode e (1..N) places the cube with seed + e
    noise_std: float = 0.0
    failure_prob: float = 0.0
    failure_mode: str = ALL_FAILURE_MODES  # how botched episodes fail (lapo_ros/sim/demonstrator.py)
    max_episode_steps: int = 0  # recorder samples per episode; 0 = until the demonstrator is done
    episode_time_limit: float = 12.0  # s of sim time; the demonstration takes 6.4 s
    record_rate: float = 30.0
    real_time_factor: float = 10.0  # the sim's pace; rendering caps it (~1.7x real time on 2 cores)
    rewards: str = "outcome"  # one of REWARDS

    def __post_init__(self) -> None:
        if self.rewards not in REWARDS:
            raise ValueError(f"RecordConfig.rewards must be one of {REWARDS}, got {self.rewards!r}")


def record_demonstrations(settings: RunSettings, cfg: RecordConfig, dataset_dir: Path) -> list[EpisodeResult]:
    """Record `cfg.episodes` scripted demonstrations into `dataset_dir` (one HDF5 file each)."""
    session = Session(settings, f"record_{dataset_dir.name}")
    results: list[EpisodeResult] = []
    earlier = set(dataset_dir.glob("episode_*.hdf5"))
    try:
        session.start_sim(demonstrator=True, seed=cfg.seed, noise_std=float(cfg.noise_std),
                          failure_prob=float(cfg.failure_prob), failure_mode=cfg.failure_mode,
                          real_time_factor=float(cfg.real_time_factor))
        # recorder.yaml's reward.topic is "" (no topic: the sparse outcome reward)
        reward = {"reward.topic": sim_topics()["reward"]} if cfg.rewards == "stage" else {}
        session.start_node(RECORDER_NODE, "recorder.yaml", use_sim_time=True, output_dir=str(dataset_dir.resolve()),
                           image_height=settings.image_size[0], image_width=settings.image_size[1],
                           record_rate=float(cfg.record_rate), max_episode_steps=cfg.max_episode_steps,
                           status_period=0.5, **reward)
        ros = session.connect({f"/{SIM_NODE}/reset": Trigger, f"/{SIM_NODE}/status": Trigger,
                               f"/{SIM_NODE}/pause": SetBool,
                               f"/{RECORDER_NODE}/start": Trigger, f"/{RECORDER_NODE}/stop": SetBool})
        # The first episode must not start before the recorder receives every stream.
        ros.spin_until(lambda: _recorder_receives_all(ros.recorder_status), settings.startup_timeout,
                       f"node {RECORDER_NODE} to receive every stream (its /{RECORDER_NODE}/status 'received')")
        for _ in tqdm(range(cfg.episodes), desc="recording demonstrations", unit="episode"):
            results.append(_record_one(session, ros, cfg))
    finally:
        session.close()
    # After the recorder has exited: its writer thread no longer holds the files.
    label_failure_modes(sorted(set(dataset_dir.glob("episode_*.hdf5")) - earlier), results)
    return results


def label_failure_modes(files: list[Path], results: list[EpisodeResult]) -> None:
    """Write each botched demonstration's failure mode into its episode file (`files`: the files the
    recorder wrote, one per entry of `results`, in the same order)."""
    if len(files) != len(results):
        raise LoopError(f"the recorder wrote {len(files)} episode files for {len(results)} demonstrations, "
                        "so their failure modes cannot be matched to them")
    for path, result in zip(files, results):
        if result.failure_mode:
            with h5py.File(path, "r+") as f:
                f.attrs[FAILURE_MODE_ATTR] = result.failure_mode


def _recorder_receives_all(status: dict[str, str]) -> bool:
    received = json.loads(status.get("received", "{}"))
    return bool(received) and all(n > 0 for n in received.values())


def _record_one(session: Session, ros: LoopNode, cfg: RecordConfig) -> EpisodeResult:
    ros.set_bool(f"/{SIM_NODE}/pause", True)
    start = ros.reset_episode()
    response = ros.trigger(f"/{RECORDER_NODE}/start")
    if not response.success:
        raise LoopError(f"/{RECORDER_NODE}/start refused: {response.message}")
    # Only a recorder status stamped after this sim time was sent after the start: the recorder's
    # clock (/clock) never runs ahead of the sim, and it handled the start before we ask.
    started_at = start.sim_time
    ros.set_bool(f"/{SIM_NODE}/pause", False)

    def recorder_ended() -> bool:
        return ros.recorder_status_stamp > started_at and ros.recorder_status.get("recording") == "False"

    def finished(status: SimStatus) -> bool:
        return status.demonstrator == "done" or recorder_ended()

    end = session.wait_episode(start, cfg.episode_time_limit, finished)
    response = ros.set_bool(f"/{RECORDER_NODE}/stop", end.success)
    if response.success:
        outcome = "success" if end.success else "failure"
    else:  # refused because the recorder ended it at max_episode_steps; its status will say so
        ros.spin_until(recorder_ended, session.settings.service_timeout,
                       f"/{RECORDER_NODE}/status to report the episode ended (/{RECORDER_NODE}/stop "
                       f"refused: {response.message})")
        outcome = "timeout"
    t = ros.tracker
    result = EpisodeResult(seed=start.seed, success=end.success, episode_return=max(t.reward_max, end.reward),
                           reward_sum=t.reward_sum, reward_ticks=t.reward_count,
                           sim_duration=end.sim_time - start.sim_time, commands=t.commands,
                           max_joint_change=t.max_joint_change, outcome=outcome, failure_mode=start.failure)
    log.info("demonstration seed %d%s: %s, highest stage %g, %.1f s sim time", result.seed,
             f" ({start.failure})" if start.failure else "", outcome, result.episode_return, result.sim_duration)
    return result


def check_dataset(dataset_dir: Path) -> list[Path]:
    """Every episode file valid (lapo_learning.dataset_format.validate_file), else LoopError listing the problems."""
    files = sorted(dataset_dir.glob("episode_*.hdf5"))
    if not files:
        raise LoopError(f"{dataset_dir}: the recorder wrote no episode files (see the recorder log)")
    problems = [f"{f.name}: {p}" for f in files for p in validate_file(f)]
    if problems:
        raise LoopError(f"invalid episode files in {dataset_dir}:\n" + "\n".join(problems))
    return files


def use_outcome_reward(path: Path) -> None:
    """Replace the rewards of an episode file by the recorder's sparse outcome reward, the one it
    records without a reward topic (lapo_learning.episode_writer: 1 on the last step of a success,
    0 elsewhere; terminals are already set by the outcome either way)."""
    with h5py.File(path, "r+") as f:
        outcome = f.attrs.get(OUTCOME_ATTR)
        if outcome is None:
            raise LoopError(f"{path}: no {OUTCOME_ATTR!r} attribute, so no outcome reward can be derived")
        rewards = np.zeros(f[REWARDS_KEY].shape, dtype=f[REWARDS_KEY].dtype)
        if outcome == "success" and rewards.size:
            rewards[-1] = 1.0
        f[REWARDS_KEY][...] = rewards
        f.attrs["reward_source"] = "sparse_outcome"


def assemble_dataset(files: list[Path], dest: Path, outcome_reward: bool = False) -> list[Path]:
    """The dataset `dest`: copies of `files` as episode_0001.. in that order, made unless `dest`
    exists, then checked (check_dataset). It is built in DEST.partial and renamed when complete, so
    an interrupted build never leaves a partial dataset under its name. `outcome_reward`: the copies
    get the recorder's sparse outcome reward (use_outcome_reward) instead of the recorded one."""
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for i, src in enumerate(files, start=1):
            copy = tmp / f"episode_{i:04d}.hdf5"
            shutil.copy2(src, copy)
            if outcome_reward:
                use_outcome_reward(copy)
        tmp.rename(dest)
    return check_dataset(dest)
