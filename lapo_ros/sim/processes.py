"""The sim loop's processes: child nodes, the orchestrator node that talks to them, one phase's session.

`Session` starts child nodes (`python -m <module> --ros-args --params-file config/<file>`), each
logging to OUT/logs/<phase>_<node>.log, connects the orchestrator `LoopNode` (services, the
sim's reward and joint states, the recorder's status) and always stops the children (SIGINT,
then SIGKILL after `stop_timeout`) when the phase ends, fails or is interrupted; a node that dies
or a service that does not answer in time is a LoopError naming it. Ctrl-C/SIGTERM are held by
`INTERRUPTS` while rclpy is inside a call, so they never raise in the middle of a take.
"""
from __future__ import annotations

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

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import JointState
from std_msgs.msg import Float32, Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from lapo_ros.sim.config import CONFIG_DIR, ros_params
from lapo_ros.sim.episode_stats import EpisodeTracker, SimStatus, parse_sim_status

log = logging.getLogger("lapo_ros.sim.processes")
ROOT = Path(__file__).resolve().parents[2]
SIM_NODE, RECORDER_NODE, POLICY_NODE = "sim_robot", "recorder", "policy"
# ROS node name -> the module that runs it (`python -m MODULE`)
NODE_MODULES = {SIM_NODE: "lapo_ros.sim.robot_node", RECORDER_NODE: "lapo_ros.recorder", POLICY_NODE: "lapo_ros.policy"}
DRAIN_S = 0.3  # wall seconds to let in-flight messages of the previous episode arrive before counting
POLL_S = 0.1  # wall seconds between ~/status polls while an episode runs


class LoopError(RuntimeError):
    """The loop cannot go on; the message names the node, service or file at fault."""


@dataclass
class NodeProcess:
    """One node's `python -m <module>` child (NODE_MODULES) with its own log file."""

    node: str
    params_file: Path
    overrides: dict[str, Any]
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    _log_file: Any = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", NODE_MODULES[self.node], "--ros-args", "--params-file", str(self.params_file)]
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
        self._command_sub = self.node.create_subscription(Float64MultiArray, topics["command"],
                                                          lambda _: self.tracker.add_command(), 50)
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

    def wait_for_policy_inputs(self, timeout: float) -> None:
        """Spin until the policy node reports every input fresh (~/diagnostics) and its command
        publisher is matched here, so that no episode is spent on discovery: a loaded machine can
        take seconds to match the DDS endpoints of freshly started nodes."""
        latest: dict[str, str] = {}

        def on_diagnostics(msg: DiagnosticArray) -> None:
            if msg.status:
                latest.update({kv.key: kv.value for kv in msg.status[0].values})

        sub = self.node.create_subscription(DiagnosticArray, f"/{POLICY_NODE}/diagnostics", on_diagnostics, 10)
        try:
            self.spin_until(lambda: latest.get("stale_inputs") == "none" and self._command_sub.get_publisher_count() > 0,
                            timeout, f"node {POLICY_NODE}'s inputs and commands")
        except LoopError as exc:
            raise LoopError(f"{exc}: its last ~/diagnostics said stale_inputs = "
                            f"{latest.get('stale_inputs', '(none received)')}, and its command publishers seen here: "
                            f"{self._command_sub.get_publisher_count()} (see its log)") from exc
        finally:
            self.node.destroy_subscription(sub)

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
    params = ros_params("sim.yaml", SIM_NODE)
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
