"""The whole loop on the simulated robot: record demonstrations -> train -> evaluate the policy.

    python -m lapo_ros.sim_loop [--out demo_output/sim] [--episodes 8] [--steps 1500] [--eval_episodes 3]

1. Record: starts the sim robot (scripted demonstrator on) and the recorder as ROS 2 processes;
   per episode it resets the sim, starts recording, waits until the demonstrator is done (polling
   /sim_robot/status) or the recorder's step limit, and stops recording with the sim's success
   flag as the outcome. Episode files go to OUT/dataset/.
2. Train: `lapo_learning.train` on that folder (CPU, small CNN, images at the recorded size).
   Outputs in OUT/results/Expsim/multimodal_robot/ (progress.csv, training_curves.png, ...).
3. Evaluate: starts the sim (demonstrator off) and the policy node with the trained checkpoint;
   per episode: reset, /policy/enable true, run until the hand-over succeeds or --eval_time
   seconds of sim time, /policy/enable false. Logs the success rate and AverageReturn/StdReturn
   (return = the episode's highest ACT stage reward, 0..4) and writes OUT/eval/eval_summary.json
   and OUT/eval/eval_episodes.png.

The nodes follow the sim's /clock (use_sim_time), so a slow CPU slows the sim down but never
changes what the nodes see. Child processes log to OUT/logs/<phase>_<node>.log and are always
stopped (SIGINT, then SIGKILL 40 s later) when the loop ends, fails or is interrupted; a node that
dies or a service that does not answer in time ends the loop with an error naming it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from tqdm import tqdm

from lapo_learning.dataset_format import validate_file
from lapo_learning.train import RUN_SUBDIR
from lapo_learning.train import main as train_main
from lapo_ros.episode_stats import EpisodeResult, EpisodeTracker, SimStatus, parse_sim_status, summarize_returns

log = logging.getLogger("lapo_ros.sim_loop")
ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "config"
SIM_NODE, RECORDER_NODE, POLICY_NODE = "sim_robot", "recorder", "policy"
DRAIN_S = 0.3  # wall seconds to let in-flight messages of the previous episode arrive before counting
POLL_S = 0.1  # wall seconds between ~/status polls while an episode runs


class LoopError(RuntimeError):
    """The loop cannot go on; the message names the node, service or file at fault."""


# ----------------------------------------------------------------------------- child processes
@dataclass
class NodeProcess:
    """One `python -m lapo_ros.<node>` child with its own log file."""

    node: str
    params_file: Path
    overrides: dict[str, Any]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    _log_file: Any = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", f"lapo_ros.{self.node}", "--ros-args", "--params-file", str(self.params_file)]
        for key, value in self.overrides.items():
            cmd += ["-p", f"{key}:={_ros_value(value)}"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = self.log_path.open("w")
        log.info("starting %s (log %s)", self.node, self.log_path)
        log.debug("command: %s", " ".join(cmd))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def check(self) -> None:
        """Raise LoopError if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise LoopError(f"node {self.node} exited with code {self.proc.returncode}; "
                            f"last lines of {self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float) -> None:
        """SIGINT (the nodes exit cleanly on it, the recorder closes its files), SIGKILL after `timeout`."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("%s did not exit within %.0f s of SIGINT: killing it", self.node, timeout)
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        if rc != 0 and rc != -signal.SIGINT:
            log.warning("%s exited with code %s; last lines of %s:\n%s", self.node, rc, self.log_path, self.tail())
        else:
            log.info("%s stopped", self.node)
        self._log_file.close()
        self.proc = None


def _ros_value(value: Any) -> str:
    """A `-p name:=value` literal; booleans must be lower-case for the ROS YAML parser."""
    return str(value).lower() if isinstance(value, bool) else str(value)


# ----------------------------------------------------------------------------- ROS side
class InterruptGate:
    """Ctrl-C raises KeyboardInterrupt and SIGTERM SystemExit, so that the loop's finally-blocks
    stop the children, but never inside rclpy: raised during a subscription take, pybind11 turns
    the exception into a RuntimeError. Inside `held()` a signal is kept and raised at its end."""

    def __init__(self) -> None:
        self._holding = False
        self._pending: BaseException | None = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        exc = KeyboardInterrupt() if signum == signal.SIGINT else SystemExit(128 + signum)
        if not self._holding:
            raise exc
        self._pending = exc

    @contextmanager
    def held(self) -> Iterator[None]:
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending is not None:
            exc, self._pending = self._pending, None
            raise exc


INTERRUPTS = InterruptGate()


class LoopNode:
    """The orchestrator's own rclpy node (private context): service calls and the episode topics."""

    def __init__(self, domain_id: int, topics: dict[str, str], children: list[NodeProcess],
                 service_timeout: float) -> None:
        self.context = Context()
        # No rclpy signal handlers: SIGINT must raise KeyboardInterrupt here so the loop's
        # finally-blocks stop the children.
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = Node("sim_loop", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.children = children
        self.service_timeout = service_timeout
        self.tracker = EpisodeTracker()
        self.recorder_status: dict[str, str] = {}
        self.recorder_status_stamp = 0.0  # s of sim time (the recorder follows /clock)
        self.joint_states = 0
        self.node.create_subscription(Float32, topics["reward"], lambda m: self.tracker.add_reward(m.data), 50)
        self.node.create_subscription(JointState, topics["joint_states"], self._on_joints, 50)
        self.node.create_subscription(Float64MultiArray, topics["command"], lambda _: self.tracker.add_command(), 50)
        self.node.create_subscription(DiagnosticArray, f"/{RECORDER_NODE}/status", self._on_recorder_status, 10)
        self._clients: dict[str, Any] = {}

    def _on_joints(self, msg: JointState) -> None:
        self.joint_states += 1
        self.tracker.add_joints(msg.position)

    def _on_recorder_status(self, msg: DiagnosticArray) -> None:
        if msg.status:
            self.recorder_status = {kv.key: kv.value for kv in msg.status[0].values}
            self.recorder_status_stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9

    def spin_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Spin until `condition()`; LoopError naming `what` after `timeout` wall seconds or if a child dies."""
        deadline = time.monotonic() + timeout
        while not condition():
            for child in self.children:
                child.check()
            if time.monotonic() > deadline:
                raise LoopError(f"timed out after {timeout:.0f} s waiting for {what}")
            with INTERRUPTS.held():
                self.executor.spin_once(timeout_sec=0.02)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        self.spin_until(lambda: time.monotonic() >= end, seconds + 1.0, "a pause")

    def wait_for_services(self, services: dict[str, type], timeout: float) -> None:
        for name, srv_type in services.items():
            client = self._client(name, srv_type)
            self.spin_until(client.service_is_ready, timeout,
                            f"service {name} (is node {name.split('/')[1]} up? see its log)")

    def _client(self, name: str, srv_type: type) -> Any:
        if name not in self._clients:
            self._clients[name] = self.node.create_client(srv_type, name)
        return self._clients[name]

    def call(self, name: str, srv_type: type, request: Any) -> Any:
        client = self._client(name, srv_type)
        future = client.call_async(request)
        self.spin_until(future.done, self.service_timeout, f"an answer from service {name}")
        if future.exception() is not None:
            raise LoopError(f"service {name} failed: {future.exception()}")
        return future.result()

    def trigger(self, name: str) -> Trigger.Response:
        return self.call(name, Trigger, Trigger.Request())

    def set_bool(self, name: str, value: bool) -> SetBool.Response:
        return self.call(name, SetBool, SetBool.Request(data=value))

    def sim_status(self) -> SimStatus:
        response = self.trigger(f"/{SIM_NODE}/status")
        try:
            return parse_sim_status(response.success, response.message)
        except ValueError as exc:
            raise LoopError(f"/{SIM_NODE}/status: {exc}") from exc

    def reset_episode(self) -> SimStatus:
        """Reset the sim and start a fresh tracker once the previous episode's messages are in."""
        response = self.trigger(f"/{SIM_NODE}/reset")
        if not response.success:
            raise LoopError(f"/{SIM_NODE}/reset refused: {response.message}")
        self.spin_for(DRAIN_S)
        self.tracker.reset()
        return self.sim_status()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@dataclass
class RunSettings:
    """What every phase needs to start nodes and talk to them."""

    out: Path
    domain_id: int
    image_size: tuple[int, int]  # stored / model image size (H, W)
    render_size: tuple[int, int] | None  # sim camera size (H, W); None = config/sim.yaml
    startup_timeout: float = 120.0
    service_timeout: float = 15.0
    stall_timeout: float = 60.0  # wall seconds without sim-time progress -> the sim is stuck
    stop_timeout: float = 40.0

    def env(self) -> dict[str, str]:
        return dict(os.environ, ROS_DOMAIN_ID=str(self.domain_id), MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"),
                    PYTHONUNBUFFERED="1")


def sim_topics() -> dict[str, str]:
    """Topic names from config/sim.yaml (the nodes get the same file), so they live in YAML only."""
    params = yaml.safe_load((CONFIG_DIR / "sim.yaml").read_text())["sim_robot"]["ros__parameters"]
    return {"reward": params["reward_topic"], "joint_states": params["joint_states_topic"],
            "command": params["command_topic"]}


class Session:
    """Child nodes + the orchestrator node of one phase; `close` stops all of them, children first."""

    def __init__(self, settings: RunSettings, phase: str) -> None:
        self.settings = settings
        self.phase = phase
        self.children: list[NodeProcess] = []
        self.ros: LoopNode | None = None

    def start_node(self, node: str, params_file: str, **overrides: Any) -> NodeProcess:
        child = NodeProcess(node, CONFIG_DIR / params_file, overrides,
                            self.settings.out / "logs" / f"{self.phase}_{node}.log", self.settings.env())
        self.children.append(child)
        child.start()
        return child

    def start_sim(self, **overrides: Any) -> NodeProcess:
        if self.settings.render_size is not None:
            overrides.update(image_height=self.settings.render_size[0], image_width=self.settings.render_size[1])
        return self.start_node(SIM_NODE, "sim.yaml", **overrides)

    def connect(self, services: dict[str, type]) -> LoopNode:
        self.ros = LoopNode(self.settings.domain_id, sim_topics(), self.children, self.settings.service_timeout)
        self.ros.wait_for_services(services, self.settings.startup_timeout)
        return self.ros

    def wait_episode(self, start: SimStatus, limit: float, done: Callable[[SimStatus], bool]) -> SimStatus:
        """Poll the sim status until `done(status)` or `limit` s of sim time since `start`.

        LoopError when sim time stops advancing for stall_timeout wall seconds.
        """
        assert self.ros is not None
        status = start
        progress_at, progress_time = time.monotonic(), start.sim_time
        while not done(status) and status.sim_time - start.sim_time < limit:
            self.ros.spin_for(POLL_S)
            status = self.ros.sim_status()
            if status.sim_time > progress_time:
                progress_at, progress_time = time.monotonic(), status.sim_time
            elif time.monotonic() - progress_at > self.settings.stall_timeout:
                raise LoopError(f"node {SIM_NODE}: sim time stuck at {status.sim_time:.2f} s for "
                                f"{self.settings.stall_timeout:.0f} s (see its log)")
        return status

    def close(self) -> None:
        for child in reversed(self.children):  # consumers first: the recorder closes its episode
            try:
                child.stop(self.settings.stop_timeout)
            except Exception:  # noqa: BLE001 - keep stopping the others
                log.exception("stopping %s failed", child.node)
        if self.ros is not None:
            self.ros.close()


# ----------------------------------------------------------------------------- phase 1: record
@dataclass(frozen=True)
class RecordConfig:
    episodes: int
    seed: int = 0  # sim seed: episode e (1..N) places the cube with seed + e
    noise_std: float = 0.0
    failure_prob: float = 0.0
    max_episode_steps: int = 0  # recorder samples per episode; 0 = until the demonstrator is done
    episode_time_limit: float = 12.0  # s of sim time; the demonstration takes 6.4 s
    record_rate: float = 30.0


def record_demonstrations(settings: RunSettings, cfg: RecordConfig, dataset_dir: Path) -> list[EpisodeResult]:
    """Record `cfg.episodes` scripted demonstrations into `dataset_dir` (one HDF5 file each)."""
    session = Session(settings, f"record_{dataset_dir.name}")
    results: list[EpisodeResult] = []
    try:
        session.start_sim(demonstrator=True, seed=cfg.seed, noise_std=float(cfg.noise_std),
                          failure_prob=float(cfg.failure_prob))
        session.start_node(RECORDER_NODE, "recorder.yaml", use_sim_time=True, output_dir=str(dataset_dir.resolve()),
                           image_height=settings.image_size[0], image_width=settings.image_size[1],
                           record_rate=float(cfg.record_rate), max_episode_steps=cfg.max_episode_steps,
                           status_period=0.5)
        ros = session.connect({f"/{SIM_NODE}/reset": Trigger, f"/{SIM_NODE}/status": Trigger,
                               f"/{RECORDER_NODE}/start": Trigger, f"/{RECORDER_NODE}/stop": SetBool})
        # The first episode must not start before the recorder receives every stream.
        ros.spin_until(lambda: _recorder_receives_all(ros.recorder_status), settings.startup_timeout,
                       f"node {RECORDER_NODE} to receive every stream (its /{RECORDER_NODE}/status 'received')")
        for _ in tqdm(range(cfg.episodes), desc="recording demonstrations", unit="episode"):
            results.append(_record_one(session, ros, cfg))
    finally:
        session.close()
    return results


def _recorder_receives_all(status: dict[str, str]) -> bool:
    received = json.loads(status.get("received", "{}"))
    return bool(received) and all(n > 0 for n in received.values())


def _record_one(session: Session, ros: LoopNode, cfg: RecordConfig) -> EpisodeResult:
    start = ros.reset_episode()
    response = ros.trigger(f"/{RECORDER_NODE}/start")
    if not response.success:
        raise LoopError(f"/{RECORDER_NODE}/start refused: {response.message}")
    # Only a recorder status stamped after this sim time was sent after the start: the recorder's
    # clock (/clock) never runs ahead of the sim, and it handled the start before we ask.
    started_at = ros.sim_status().sim_time

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
                           max_joint_change=t.max_joint_change, outcome=outcome)
    log.info("demonstration seed %d: %s, highest stage %g, %.1f s sim time", result.seed, outcome,
             result.episode_return, result.sim_duration)
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


# ----------------------------------------------------------------------------- phase 2: train
@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500
    algo: str = "lapo"
    image_encoder: str = "cnn_3conv_1fc_0"
    batch_size: int = 32
    device: str = "cpu"
    seed: int = 0
    action_space: str = "relative"  # lapo_learning.train --action_space
    # ACT-style action chunks of 1 s at the 30 Hz recording rate (the README's sim benchmark table
    # compares them with single actions); latent 32 = the reference's 2 x 16 for one action.
    action_chunk: int = 30  # lapo_learning.train --action_chunk
    latent_dim: int = 32  # lapo_learning.train --latent_dim
    extra_args: tuple[str, ...] = ()  # further lapo_learning.train flags, as given


def add_chunk_flags(add_argument: Callable[..., Any]) -> None:
    """--action_chunk and --latent_dim, defaulting to TrainConfig's (shared with bench/sim_success.py)."""
    add_argument("--action_chunk", type=int, default=TrainConfig.action_chunk,
                 help="actions predicted per observation, see lapo_learning.train --help (default: %(default)s)")
    add_argument("--latent_dim", type=int, default=TrainConfig.latent_dim,
                 help="LAPO's VAE latent width, see lapo_learning.train --help (default: %(default)s)")


def train_policy(settings: RunSettings, cfg: TrainConfig, dataset_dir: Path, exp_id: str) -> Path:
    """Train with lapo_learning.train; returns the run folder (model_final_<algo>.pth inside)."""
    h, w = settings.image_size
    argv = ["--hdf5_path", str(dataset_dir), "--results_dir", str(settings.out / "results"), "--ExpID", exp_id,
            "--algo", cfg.algo, "--image_encoder", cfg.image_encoder, "--image_size", str(h), str(w),
            "--max_timesteps", str(cfg.steps), "--eval_freq", str(max(cfg.steps // 10, 1)),
            "--save_freq", str(cfg.steps), "--batch_size", str(cfg.batch_size), "--device", cfg.device,
            "--seed", str(cfg.seed), "--action_space", cfg.action_space, "--action_chunk", str(cfg.action_chunk),
            "--latent_dim", str(cfg.latent_dim), *cfg.extra_args]
    log.info("training: python -m lapo_learning.train %s", " ".join(argv))
    rc = train_main(argv)
    run_dir = settings.out / "results" / f"Exp{exp_id}" / RUN_SUBDIR
    if rc != 0 or not (run_dir / f"model_final_{cfg.algo}.pth").is_file():
        raise LoopError(f"training failed (exit code {rc}); see the log above and {run_dir}")
    return run_dir


# ----------------------------------------------------------------------------- phase 3: evaluate
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


def write_eval_summary(path: Path, results: list[EpisodeResult], extra: dict[str, Any]) -> dict[str, Any]:
    """eval_summary.json (+ eval_episodes.png next to it); returns the summary."""
    summary = {**summarize_returns(results), **extra, "per_episode": [r.to_dict() for r in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2))
    _plot_episodes(path.with_name("eval_episodes.png"), results, summary)
    return summary


def _plot_episodes(path: Path, results: list[EpisodeResult], summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.4 * len(results) + 2), 3))
    colors = ["tab:green" if r.success else "tab:red" for r in results]
    ax.bar(np.arange(len(results)), [r.episode_return for r in results], color=colors)
    ax.set_xticks(np.arange(len(results)), [str(r.seed) for r in results], fontsize=7)
    ax.set_xlabel("episode seed (green: hand-over succeeded)")
    ax.set_ylabel("highest stage reward")
    ax.set_ylim(0, 4.2)
    ax.set_title(f"success {summary['success_rate']:.0%}, AverageReturn {summary['AverageReturn']:.2f} "
                 f"± {summary['StdReturn']:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lapo_ros.sim_loop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--out", type=Path, default=Path("demo_output/sim"),
      help="output folder: dataset/, results/, eval/, logs/ (default: %(default)s)")
    a("--episodes", type=int, default=8, help="demonstrations to record (default: %(default)s)")
    a("--noise_std", type=float, default=0.0, help="demonstrator command noise, rad (default: %(default)s)")
    a("--failure_prob", type=float, default=0.0,
      help="share of demonstrations botched on purpose (default: %(default)s)")
    a("--max_episode_steps", type=int, default=0,
      help="recorder samples per demonstration, 0 = until the demonstrator is done (default: %(default)s)")
    a("--record_rate", type=float, default=30.0, help="recorder samples per second of sim time (default: %(default)s)")
    a("--seed", type=int, default=0,
      help="sim seed of the demonstrations (episode e uses seed+e) and training seed (default: %(default)s)")
    a("--image_size", type=int, nargs=2, default=(48, 48), metavar=("H", "W"),
      help="image size the recorder stores and the model uses (default: 48 48)")
    a("--render_size", type=int, nargs=2, default=None, metavar=("H", "W"),
      help="sim camera size (default: config/sim.yaml)")
    a("--steps", type=int, default=1500, help="training steps (default: %(default)s)")
    a("--batch_size", type=int, default=32, help="training batch size (default: %(default)s)")
    a("--algo", choices=("lapo", "bc"), default="lapo", help="lapo or the bc baseline (default: %(default)s)")
    a("--image_encoder", default="cnn_3conv_1fc_0", help="image backbone, see lapo_learning.train --help")
    a("--action_space", choices=("absolute", "relative"), default="relative",
      help="what the model predicts, see lapo_learning.train --help (default: %(default)s: the arms are "
           "position-commanded and move little per tick)")
    add_chunk_flags(a)
    a("--device", default="cpu", help="torch device for training (default: %(default)s)")
    a("--eval_episodes", type=int, default=3, help="evaluation episodes (default: %(default)s)")
    a("--eval_seed", type=int, default=1000,
      help="sim seed of the evaluation: episode e uses eval_seed+e, disjoint from the demos (default: %(default)s)")
    a("--eval_time", type=float, default=10.0,
      help="sim seconds per evaluation episode unless the hand-over succeeds first (default: %(default)s)")
    a("--checkpoint", choices=("final", "best"), default="final",
      help="evaluate model_final_<algo>.pth or model_best_<algo>.pth (default: %(default)s)")
    a("--skip_recording", action="store_true", help="train on the episodes already in OUT/dataset")
    a("--skip_training", action="store_true", help="evaluate the checkpoint already in OUT/results")
    a("--domain_id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", "0")),
      help="ROS_DOMAIN_ID of all nodes (default: $ROS_DOMAIN_ID or 0)")
    a("--startup_timeout", type=float, default=120.0,
      help="wall seconds for the nodes to come up (default: %(default)s)")
    a("--service_timeout", type=float, default=15.0, help="wall seconds for a service answer (default: %(default)s)")
    a("--log_level", default="INFO", help="logging level (default: %(default)s)")
    return p


def _check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("episodes", "steps", "batch_size", "eval_episodes", "action_chunk"):
        if getattr(args, name) <= 0:
            p.error(f"--{name} must be > 0, got {getattr(args, name)}")
    if min(args.image_size) < 36:
        p.error(f"--image_size must be >= 36 36 (the CNN's smallest input), got {args.image_size}")
    if args.eval_time <= 0 or args.record_rate <= 0:
        p.error("--eval_time and --record_rate must be > 0")
    if not 0 <= args.domain_id <= 101:
        p.error(f"--domain_id must be in 0..101, got {args.domain_id}")


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    _check_args(p, args)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    INTERRUPTS.install()
    settings = RunSettings(out=args.out, domain_id=args.domain_id, image_size=tuple(args.image_size),
                           render_size=tuple(args.render_size) if args.render_size else None,
                           startup_timeout=args.startup_timeout, service_timeout=args.service_timeout)
    dataset_dir = args.out / "dataset"
    exp_id = "sim"
    t0 = time.perf_counter()
    try:
        if not args.skip_recording:
            if any(dataset_dir.glob("episode_*.hdf5")):
                raise LoopError(f"{dataset_dir} already holds episodes: pass --skip_recording to reuse them "
                                "or choose another --out")
            demos = record_demonstrations(settings, RecordConfig(
                episodes=args.episodes, seed=args.seed, noise_std=args.noise_std, failure_prob=args.failure_prob,
                max_episode_steps=args.max_episode_steps, record_rate=args.record_rate), dataset_dir)
            (args.out / "recording_summary.json").write_text(json.dumps(
                {**summarize_returns(demos), "per_episode": [d.to_dict() for d in demos]}, indent=2))
            log.info("recorded %d demonstrations, %d successful", len(demos), sum(d.success for d in demos))
        files = check_dataset(dataset_dir)
        log.info("dataset %s: %d valid episode files", dataset_dir, len(files))
        t_record = time.perf_counter()

        train_cfg = TrainConfig(steps=args.steps, algo=args.algo, image_encoder=args.image_encoder,
                                batch_size=args.batch_size, device=args.device, seed=args.seed,
                                action_space=args.action_space, action_chunk=args.action_chunk,
                                latent_dim=args.latent_dim)
        run_dir = (settings.out / "results" / f"Exp{exp_id}" / RUN_SUBDIR if args.skip_training
                   else train_policy(settings, train_cfg, dataset_dir, exp_id))
        checkpoint = run_dir / f"model_{args.checkpoint}_{args.algo}.pth"
        if not checkpoint.is_file():
            raise LoopError(f"checkpoint {checkpoint} not found")
        t_train = time.perf_counter()

        results = evaluate_policy(settings, EvalConfig(episodes=args.eval_episodes, seed=args.eval_seed,
                                                       time_limit=args.eval_time), checkpoint, args.algo)
        t_eval = time.perf_counter()
        summary = write_eval_summary(args.out / "eval" / "eval_summary.json", results, {
            "checkpoint": str(checkpoint), "algo": args.algo, "eval_seed": args.eval_seed,
            "eval_time_limit_s": args.eval_time, "dataset": str(dataset_dir), "dataset_episodes": len(files),
            "train_steps": args.steps if not args.skip_training else None,
            "wall_time_s": {"record": t_record - t0, "train": t_train - t_record, "eval": t_eval - t_train}})
    except LoopError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted: child nodes stopped")
        return 130
    log.info("success rate %.2f (%d episodes), AverageReturn %.2f, StdReturn %.2f (return = %s)",
             summary["success_rate"], summary["episodes"], summary["AverageReturn"], summary["StdReturn"],
             summary["return_definition"])
    log.info("dataset %s, results %s (training_curves.png), evaluation %s; %.1f min in all",
             dataset_dir, run_dir, args.out / "eval", (time.perf_counter() - t0) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
