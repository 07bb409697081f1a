"""The policy node with real rclpy/DDS and a checkpoint trained by the CLI in this session.

- a node process started like a user does (`python -m lapo_ros.policy --params-file ...`) fed by
  a publisher node here: commands at the checkpoint's rate, each equal to `select_action` on the
  published inputs (limits wide: safety is a no-op), no commands on stale input or when disabled;
- an in-process node whose `select_action` is replaced by an adversary (huge/NaN outputs): limits,
  per-tick change and non-finite rejection hold; disabled and shut down publish nothing; every
  paused tick restarts from the measured position; diagnostics say WARN/ERROR on rejected ticks;
- a checkpoint trained on data with one 1e30 action: limits stay sane and the tracking watchdog
  stops the node when the arm does not follow, until re-enabled;
- refusals (exit code 1, message in the log): joint names/count that differ from the checkpoint,
  a corrupt checkpoint, non-finite weights, and JointState messages lacking a configured joint.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np
import pytest
import rclpy
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from lapo_learning import dataset_format as fmt
from lapo_learning.policy import load_policy
from lapo_learning.recording import InputError
from lapo_learning.schema import CAMERAS, ObservationSchema
from lapo_learning.temporal_ensemble import TemporalEnsemble
from lapo_ros.image_msgs import rgb_to_image_msg
from lapo_ros.policy import PolicyNode

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "policy.yaml"
JOINTS = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]["joint_names"]
DATA_RATE_HZ = 20.0  # written into the dataset's schema: the node's default control rate
IMAGE_HW = (48, 64)  # published image size = the node's input size, so inputs reach the model as sent
INPUT_RATE_HZ = 30.0
WIDE = 1000.0  # limits and max delta that make safety a no-op
# Policy tests use DDS domain 51 (51-59 are the policy's), so concurrent suites do not cross-talk.
# Set per process here rather than in os.environ, which every test module of a session shares.
DOMAIN_ID = 51
ENV = {**os.environ, "ROS_DOMAIN_ID": str(DOMAIN_ID)}


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, **kw)


def train_checkpoint(root: Path, *train_flags: str, edit: Callable[[h5py.File], None] | None = None) -> Path:
    """A tiny checkpoint trained by the CLIs on the sample dataset renamed to the robot's joints
    (`edit` changes the dataset file first)."""
    data = root / "sample.hdf5"
    made = _run([sys.executable, "-m", "lapo_learning.create_dataset", "--create_sample", "--output", str(data),
                 "--n_samples", "400", "--image_size", "40", "40"])
    assert made.returncode == 0, made.stderr
    # As if recorded on the robot: named joints and a recording rate.
    with h5py.File(data, "r+") as f:
        schema = fmt.read_schema(f)
        f.attrs[fmt.SCHEMA_ATTR] = ObservationSchema(
            schema.image_size, JOINTS, JOINTS, schema.cameras, DATA_RATE_HZ).to_json()
        f.attrs[fmt.RATE_ATTR] = DATA_RATE_HZ
        if edit is not None:
            edit(f)
    trained = _run([sys.executable, "-m", "lapo_learning.train", "--hdf5_path", str(data), "--ExpID", "p",
                    "--results_dir", str(root / "results"), "--max_timesteps", "10", "--batch_size", "8",
                    "--eval_freq", "1000", "--save_freq", "1000", "--image_size", "40", "40",
                    "--device", "cpu", "--log_level", "WARNING", *train_flags])
    assert trained.returncode == 0, trained.stderr
    return root / "results" / "Expp" / "multimodal_robot" / "model_final_lapo.pth"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return train_checkpoint(tmp_path_factory.mktemp("policy_ckpt"))


@pytest.fixture(scope="module")
def ros():
    rclpy.init(domain_id=DOMAIN_ID)
    yield
    rclpy.shutdown()


def topic_params(prefix: str) -> dict[str, Any]:
    """Input/output topics under `prefix`, so the tests' graphs stay apart."""
    params: dict[str, Any] = {f"cameras.{cam}.topic": f"{prefix}/{cam}" for cam in CAMERAS}
    params.update({"joint_states_topic": f"{prefix}/joint_states", "action.topic": f"{prefix}/commands"})
    return params


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        d = out
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value
    return out


class Inputs:
    """One set of observation values: three images and the joint vector (in JOINTS order)."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.images = {cam: rng.integers(0, 256, (*IMAGE_HW, 3), dtype=np.uint8) for cam in CAMERAS}
        self.joint = rng.uniform(-0.5, 0.5, len(JOINTS)).astype(np.float32)


class Rig(Node):
    """Publishes observations at INPUT_RATE_HZ (JointState names shuffled) and records commands."""

    def __init__(self, prefix: str, inputs: Inputs, node_ns: str, command_class: type = Float64MultiArray) -> None:
        super().__init__("policy_test_rig")
        self.inputs = inputs
        self.send_joints = True
        self.lock = threading.Lock()
        self.commands: list[tuple[float, np.ndarray]] = []
        self.images = {cam: self.create_publisher(Image, f"{prefix}/{cam}", 5) for cam in CAMERAS}
        self.joints = self.create_publisher(JointState, f"{prefix}/joint_states", 5)
        self.order = np.random.default_rng(1).permutation(len(JOINTS))
        self.raw_commands: list[Any] = []
        self.create_subscription(command_class, f"{prefix}/commands", self._on_command, 100)
        self.enable_client = self.create_client(SetBool, f"{node_ns}/policy/enable")
        self.diagnostics: list[dict[str, Any]] = []  # KeyValues, plus "level" (int) and "message"
        self.create_subscription(DiagnosticArray, f"{node_ns}/policy/diagnostics", self._on_diagnostics, 10)
        self.create_timer(1.0 / INPUT_RATE_HZ, self.publish_inputs)

    def publish_inputs(self) -> None:
        stamp = self.get_clock().now().to_msg()
        inputs = self.inputs
        for cam in CAMERAS:
            self.images[cam].publish(rgb_to_image_msg(inputs.images[cam], stamp=stamp))
        if self.send_joints:
            msg = JointState(name=[JOINTS[i] for i in self.order],
                             position=[float(inputs.joint[i]) for i in self.order])
            msg.header.stamp = stamp
            self.joints.publish(msg)

    def _on_command(self, msg: Any) -> None:
        values = msg.data if isinstance(msg, Float64MultiArray) else msg.points[0].positions
        with self.lock:
            self.raw_commands.append(msg)
            self.commands.append((time.monotonic(), np.asarray(values, dtype=np.float64)))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        status = msg.status[0]
        with self.lock:
            self.diagnostics.append({kv.key: kv.value for kv in status.values}
                                    | {"level": ord(status.level), "message": status.message})

    def latest_diagnostics(self) -> dict[str, Any]:
        with self.lock:
            return self.diagnostics[-1] if self.diagnostics else {}

    def received(self, since: float = 0.0) -> list[np.ndarray]:
        with self.lock:
            return [c for t, c in self.commands if t >= since]


def wait_for(condition: Callable[[], bool], timeout: float, spin: Callable[[float], None]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        spin(0.05)
    return condition()


# --- node process, as a user runs it ------------------------------------------------------------

@pytest.fixture(scope="module")
def node_process(ros, checkpoint, tmp_path_factory):
    """`python -m lapo_ros.policy` with config/policy.yaml + overrides; a rig spun in a thread."""
    prefix = "/proc"
    overrides = tmp_path_factory.mktemp("policy_params") / "overrides.yaml"
    params = {**topic_params(prefix), "checkpoint": str(checkpoint), "autostart": True, "torch_threads": 1,
              "image_height": IMAGE_HW[0], "image_width": IMAGE_HW[1], "max_age": 0.3,
              "max_delta_per_tick": WIDE, "joint_lower_limits": [-WIDE] * len(JOINTS),
              "joint_upper_limits": [WIDE] * len(JOINTS), "tracking_max_error": WIDE}
    overrides.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested(params)}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "lapo_ros.policy", "--ros-args", "--params-file", str(CONFIG),
         "--params-file", str(overrides)],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rig = Rig(prefix, Inputs(seed=10), node_ns="")  # the only node named /policy: in-process ones get a namespace
    executor = SingleThreadedExecutor()
    executor.add_node(rig)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        # A fresh process loads torch and the checkpoint first.
        started = wait_for(lambda: len(rig.received()) > 0 or proc.poll() is not None, 60, time.sleep)
        assert started and proc.poll() is None, _stop(proc)
        yield rig, proc
    finally:
        executor.shutdown()
        rig.destroy_node()
        log = _stop(proc)
    if "shutting down ROS took over" in log:  # exited at run_node's teardown deadline: keep its stacks
        warnings.warn(f"the policy node's teardown hung:\n{log}")
    assert proc.returncode == 0, log  # SIGINT is a clean exit


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.stdout.read() if proc.stdout else ""


def test_commands_equal_select_action_at_the_checkpoint_rate(node_process, checkpoint):
    rig, proc = node_process
    policy = load_policy(checkpoint)
    a, b = rig.inputs, Inputs(seed=20)
    # During the switch from A to B the node may sample some streams from each: every mix is a
    # legitimate input, so each command must equal select_action on one of the 16 combinations.
    expected = {}
    for combo in itertools.product((a, b), repeat=4):
        images = [combo[i].images[cam] for i, cam in enumerate(CAMERAS)]
        expected[tuple(id(c) for c in combo)] = policy.select_action(*images, combo[3].joint)
    all_a, all_b = expected[(id(a),) * 4], expected[(id(b),) * 4]
    assert np.abs(all_a - all_b).max() > 1e-3  # the inputs matter, so the check below can fail

    start = time.monotonic()
    time.sleep(3.0)
    phase_a = rig.received(since=start)
    rig.inputs = b
    switch = time.monotonic()
    time.sleep(2.0)
    commands = rig.received(since=start)
    assert proc.poll() is None

    window = 3.0
    assert abs(len(phase_a) - DATA_RATE_HZ * window) <= 0.2 * DATA_RATE_HZ * window, \
        f"{len(phase_a)} commands in {window} s, expected ~{DATA_RATE_HZ * window:.0f} (rate from the checkpoint)"

    def label(cmd: np.ndarray) -> str:
        for key, exp in expected.items():
            if np.allclose(cmd, exp, rtol=1e-5, atol=1e-5):
                return "A" if exp is all_a else "B" if exp is all_b else "mix"
        raise AssertionError(f"command {cmd} equals select_action on none of the published inputs")

    labels = [label(c) for c in commands]
    assert set(labels[:len(phase_a)]) == {"A"}
    assert labels.count("B") >= DATA_RATE_HZ  # about a second of B after the switch
    first_b = labels.index("B")
    assert "A" not in labels[first_b:], "an old input was used after the new one had arrived"
    assert labels.count("mix") <= 2
    assert len(rig.received(since=switch + 0.5)) > 0


def test_stale_input_stops_commands_until_it_resumes(node_process):
    rig, _ = node_process
    assert wait_for(lambda: "stale_skips" in rig.latest_diagnostics(), 5, time.sleep)
    before = rig.latest_diagnostics()  # startup (before the first messages) counts skips too
    rig.send_joints = False
    stopped = time.monotonic()
    time.sleep(2.5)
    # max_age is 0.3 s: after that (plus delivery), nothing more goes out.
    assert rig.received(since=stopped + 1.0) == []
    # The diagnostics name the input that blocks the ticks, and why (readable while disabled too).
    stale = rig.latest_diagnostics()["stale_inputs"]
    assert stale.startswith("/proc/joint_states: newest message") and "max_age 0.3 s" in stale, stale
    assert "image" not in stale, stale
    rig.send_joints = True
    resumed = time.monotonic()
    assert wait_for(lambda: len(rig.received(since=resumed)) >= 5, 5, time.sleep)
    assert wait_for(lambda: rig.latest_diagnostics()["stale_inputs"] == "none", 5, time.sleep)

    # The skipped ticks are reported, with the stream that caused them.
    def increase(key: str) -> int:
        return int(rig.latest_diagnostics()[key]) - int(before[key])

    assert wait_for(lambda: increase("stale_skips") >= 10, 5, time.sleep)
    assert increase("skipped_joint") >= 10 and increase("skipped_left_image") <= 2, rig.latest_diagnostics()
    diag = rig.latest_diagnostics()
    assert int(diag["published"]) > 0 and 0 < float(diag["achieved_rate_hz"]) <= DATA_RATE_HZ * 1.2, diag


def test_disable_service_stops_and_enable_resumes(node_process):
    rig, _ = node_process
    assert rig.enable_client.wait_for_service(timeout_sec=5)

    def call(data: bool) -> SetBool.Response:
        future = rig.enable_client.call_async(SetBool.Request(data=data))
        assert wait_for(future.done, 5, time.sleep)
        return future.result()

    assert call(False).message == "disabled"
    disabled = time.monotonic()
    time.sleep(1.5)
    assert rig.received(since=disabled + 0.2) == []
    assert call(True).message == "enabled"
    enabled = time.monotonic()
    assert wait_for(lambda: len(rig.received(since=enabled)) >= 5, 5, time.sleep)


# --- in-process node with an adversarial policy -------------------------------------------------

def make_node(checkpoint: Path, prefix: str, **extra: Any) -> PolicyNode:
    params = {**topic_params(prefix), "checkpoint": str(checkpoint), "joint_names": JOINTS,
              "image_height": IMAGE_HW[0], "image_width": IMAGE_HW[1], "max_age": 0.5, **extra}
    return PolicyNode([Parameter(k, value=v) for k, v in params.items()], namespace=prefix)


def test_adversarial_outputs_are_limited_and_nothing_goes_out_when_disabled(ros, checkpoint, monkeypatch):
    node = make_node(checkpoint, "/adv", max_delta_per_tick=0.02, autostart=False)
    rig = Rig("/adv", Inputs(seed=30), node_ns="/adv")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(rig)
    spin = lambda t: executor.spin_once(timeout_sec=t)  # noqa: E731
    outputs = itertools.cycle([1e6, -1e6, np.nan, 0.0, np.inf, -np.inf, 3.0, -3.0])
    calls = {"finite": 0, "all": 0}

    def adversary(*_: Any) -> np.ndarray:
        value = next(outputs)
        calls["all"] += 1
        calls["finite"] += bool(np.isfinite(value))
        return np.full(len(JOINTS), value, dtype=np.float32)

    monkeypatch.setattr(node.policy, "select_action", adversary)
    try:
        # Disabled (no autostart): inputs flow, nothing is computed or published.
        wait_for(lambda: False, 1.0, spin)
        assert rig.received() == [] and calls["all"] == 0

        future = rig.enable_client.call_async(SetBool.Request(data=True))
        assert wait_for(future.done, 5, spin) and future.result().success
        assert wait_for(lambda: len(rig.received()) >= 30, 20, spin)

        future = rig.enable_client.call_async(SetBool.Request(data=False))
        assert wait_for(future.done, 5, spin)
        wait_for(lambda: False, 0.3, spin)  # deliver what was published before the disable
        n_disabled, calls_disabled = len(rig.received()), dict(calls)
        wait_for(lambda: False, 1.0, spin)
        assert len(rig.received()) == n_disabled and calls == calls_disabled

        # Every finite output was published after safety, every non-finite one dropped and counted.
        commands = rig.received()
        assert len(commands) == calls["finite"]
        assert node.stats.counts["nonfinite_rejections"] == calls["all"] - calls["finite"] > 0
        stats = node.policy.stats
        margin = 0.05 * (stats.action_max - stats.action_min)  # config default limit_margin
        lower, upper = stats.action_min - margin, stats.action_max + margin
        # Within 0.02 of the previous command, or, after a rejected tick, of the measured position.
        measured = previous = rig.inputs.joint.astype(np.float64)
        for cmd in commands:
            assert np.all(cmd >= lower - 1e-6) and np.all(cmd <= upper + 1e-6)
            assert min(np.abs(cmd - previous).max(), np.abs(cmd - measured).max()) <= 0.02 + 1e-9
            previous = cmd
        assert node.stats.counts["clamped"] > 0 and node.stats.counts["rate_limited"] > 0

        # Shut down: nothing further, even with inputs flowing and the service enabling it.
        node.shutdown()
        future = rig.enable_client.call_async(SetBool.Request(data=True))
        assert wait_for(future.done, 5, spin) and not future.result().success
        n_final = len(rig.received())
        wait_for(lambda: False, 1.0, spin)
        assert len(rig.received()) == n_final
    finally:
        executor.shutdown()
        rig.destroy_node()
        node.destroy_node()


def test_joint_trajectory_commands_carry_names_and_one_period(ros, checkpoint):
    node = make_node(checkpoint, "/jtc", autostart=True, **{"action.type": "joint_trajectory"},
                     max_delta_per_tick=WIDE, joint_lower_limits=[-WIDE] * len(JOINTS),
                     joint_upper_limits=[WIDE] * len(JOINTS), tracking_max_error=WIDE)
    rig = Rig("/jtc", Inputs(seed=50), node_ns="/jtc", command_class=JointTrajectory)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(rig)
    try:
        assert wait_for(lambda: len(rig.received()) >= 3, 20, lambda t: executor.spin_once(timeout_sec=t))
    finally:
        executor.shutdown()
        rig.destroy_node()
        node.destroy_node()
    expected = load_policy(checkpoint).select_action(*(rig.inputs.images[c] for c in CAMERAS), rig.inputs.joint)
    for msg, cmd in zip(rig.raw_commands, rig.received()):
        assert list(msg.joint_names) == JOINTS and len(msg.points) == 1
        duration = msg.points[0].time_from_start
        assert duration.sec + duration.nanosec * 1e-9 == pytest.approx(1.0 / DATA_RATE_HZ)
        np.testing.assert_allclose(cmd, expected, rtol=1e-5, atol=1e-5)


def test_action_chunks_are_ensembled_from_each_enable(ros, tmp_path):
    """A chunked checkpoint: on constant inputs the commands follow TemporalEnsemble from the first
    tick, and re-enabling or a stall of the control timer starts the ensemble again (no chunk from
    before is reused)."""
    chunked = train_checkpoint(tmp_path, "--action_chunk", "4", "--latent_dim", "16")
    decay = 0.5
    node = make_node(chunked, "/chunk", autostart=True, ensemble_decay=decay, max_delta_per_tick=WIDE,
                     joint_lower_limits=[-WIDE] * len(JOINTS), joint_upper_limits=[WIDE] * len(JOINTS),
                     tracking_max_error=WIDE)
    rig = Rig("/chunk", Inputs(seed=60), node_ns="/chunk")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(rig)
    spin = lambda t: executor.spin_once(timeout_sec=t)  # noqa: E731
    policy = load_policy(chunked)
    chunk = policy.predict_chunks(*([rig.inputs.images[c]] for c in CAMERAS), rig.inputs.joint[None])[0]
    ensemble = TemporalEnsemble(4, decay)
    expected = np.stack([ensemble(chunk) for _ in range(6)])
    assert np.abs(expected[0] - expected[-1]).max() > 1e-4  # the ensemble changes the command over the ticks
    try:
        assert wait_for(lambda: len(rig.received()) >= 6, 20, spin)
        np.testing.assert_allclose(np.stack(rig.received()[:6]), expected, rtol=1e-4, atol=1e-5)
        since = 0.0
        for enable in (False, True):
            since = time.monotonic()  # once disabled, nothing is published until enabled again
            future = rig.enable_client.call_async(SetBool.Request(data=enable))
            assert wait_for(future.done, 5, spin) and future.result().success
        assert wait_for(lambda: len(rig.received(since)) >= 3, 20, spin)
        np.testing.assert_allclose(np.stack(rig.received(since)[:3]), expected[:3], rtol=1e-4, atol=1e-5)

        # A stalled executor: the control timer misses ticks. The chunks' steps meant for them are
        # not taken by the ticks after the stall: the ensemble starts again, and the stall is counted.
        wait_for(lambda: len(rig.received(since)) >= 8, 20, spin)  # steady: the ensemble is full
        late = node.stats.counts["late_ticks"]
        time.sleep(0.3)  # nothing spins: about 9 ticks never fire
        since = time.monotonic()
        assert wait_for(lambda: len(rig.received(since)) >= 3, 20, spin)
        assert node.stats.counts["late_ticks"] == late + 1
        np.testing.assert_allclose(np.stack(rig.received(since)[:3]), expected[:3], rtol=1e-4, atol=1e-5)
    finally:
        executor.shutdown()
        rig.destroy_node()
        node.destroy_node()


def test_joint_states_lacking_a_configured_joint_stop_the_node(ros, checkpoint):
    node = make_node(checkpoint, "/lack", autostart=True)
    rig = Rig("/lack", Inputs(seed=40), node_ns="/lack")
    rig.order = rig.order[1:]  # one joint never published
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(rig)
    try:
        with pytest.raises(InputError, match=r"topic /lack/joint_states: JointState lacks configured joints"):
            wait_for(lambda: False, 10, lambda t: executor.spin_once(timeout_sec=t))
        assert rig.received() == []
    finally:
        executor.shutdown()
        rig.destroy_node()
        node.destroy_node()


@contextlib.contextmanager
def running(node: PolicyNode, rig: Rig) -> Iterator[Callable[[float], None]]:
    """Both nodes on one executor spun by the test thread (no races with the test's own changes)."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(rig)
    try:
        yield lambda t: executor.spin_once(timeout_sec=t)
    finally:
        executor.shutdown()
        rig.destroy_node()
        node.destroy_node()


def idle(spin: Callable[[float], None], seconds: float) -> None:
    wait_for(lambda: False, seconds, spin)


def test_every_paused_tick_restarts_from_the_measured_position(ros, checkpoint, monkeypatch):
    """Non-finite joints, a non-finite action, a failed inference: nothing is published meanwhile,
    and the next command is rate limited from where the arm is measured, not from the last command."""
    delta = 0.02
    node = make_node(checkpoint, "/pause", autostart=True, max_delta_per_tick=delta, tracking_max_error=WIDE,
                     joint_lower_limits=[-WIDE] * len(JOINTS), joint_upper_limits=[WIDE] * len(JOINTS))
    rig = Rig("/pause", Inputs(seed=70), node_ns="/pause")
    mode = {"output": 5.0, "fail": False}

    def adversary(*_: Any) -> np.ndarray:
        if mode["fail"]:
            raise ValueError("simulated inference failure")
        return np.full(len(JOINTS), mode["output"], dtype=np.float32)

    monkeypatch.setattr(node.policy, "select_action", adversary)

    def nan_joint(on: bool) -> None:
        rig.inputs.joint[2] = np.nan if on else rig.inputs.joint[3]

    pauses = {"non-finite joint": nan_joint,
              "non-finite action": lambda on: mode.update(output=np.nan if on else 5.0),
              "inference failure": lambda on: mode.update(fail=on)}
    with running(node, rig) as spin:
        for kind, pause in pauses.items():
            n = len(rig.received())
            assert wait_for(lambda: len(rig.received()) >= n + 5, 10, spin), kind
            pause(True)
            idle(spin, 0.5)  # commands computed before the pause are delivered
            n = len(rig.received())
            rig.inputs.joint += 0.3  # the arm moves meanwhile
            idle(spin, 0.5)
            assert len(rig.received()) == n, f"{kind}: published while paused"
            pause(False)
            assert wait_for(lambda: len(rig.received()) > n, 10, spin), kind
            np.testing.assert_allclose(rig.received()[n], rig.inputs.joint.astype(np.float64) + delta, atol=1e-5,
                                       err_msg=f"after a {kind}, the command did not restart from the measurement")
    assert node.stats.counts["nonfinite_rejections"] > 0 and node.stats.counts["errors"] > 0


def test_diagnostics_warn_when_ticks_are_rejected_and_error_when_all_are(ros, checkpoint, monkeypatch):
    node = make_node(checkpoint, "/reject", autostart=True, diagnostics_period=0.25)
    rig = Rig("/reject", Inputs(seed=75), node_ns="/reject")
    values = {"cycle": itertools.cycle([np.nan])}
    monkeypatch.setattr(node.policy, "select_action",
                        lambda *_: np.full(len(JOINTS), next(values["cycle"]), dtype=np.float32))

    def reports(level: int, text: str) -> Callable[[], bool]:
        return lambda: any(d["level"] == level and text in d["message"] for d in rig.diagnostics[-2:])

    with running(node, rig) as spin:
        assert wait_for(reports(2, "every tick rejected, nothing published (nonfinite_rejections="), 10, spin), \
            rig.diagnostics[-3:]
        values["cycle"] = itertools.cycle([np.nan, 0.0])  # half of the ticks rejected
        assert wait_for(reports(1, "ticks rejected (nonfinite_rejections="), 10, spin), rig.diagnostics[-3:]
        values["cycle"] = itertools.cycle([0.0])
        assert wait_for(reports(0, "running"), 10, spin), rig.diagnostics[-3:]


def test_outlier_in_training_data_keeps_limits_sane_and_the_watchdog_stops_a_stuck_arm(ros, tmp_path, capfd):
    """The issue's scenario: one action of 1e30 in the data, the arm does not follow the commands."""
    row, joint = 17, 3

    def poison(f: h5py.File) -> None:
        f["actions"][row, joint] = 1e30

    poisoned = train_checkpoint(tmp_path, "--allow_outliers", "--train_test_split", "1.0", edit=poison)
    with h5py.File(tmp_path / "sample.hdf5") as f:
        clean = np.delete(f["actions"][()], row, axis=0).astype(np.float64)
    assert load_policy(poisoned).stats.action_max[joint] > 1e29  # the outlier was trained on
    capfd.readouterr()
    node = make_node(poisoned, "/stuck", autostart=False, max_delta_per_tick=0.05, diagnostics_period=0.25)
    lower, upper = node.safety.config.lower, node.safety.config.upper
    span = clean.max(axis=0) - clean.min(axis=0)
    assert np.all(lower >= clean.min(axis=0) - 0.1 * span) and np.all(upper <= clean.max(axis=0) + 0.1 * span)
    log = capfd.readouterr().err
    assert "joint limits in force, from training data" in log and "Configure joint limits for a real robot" in log
    assert f"{JOINTS[joint]} [{lower[joint]:.4g}, {upper[joint]:.4g}]" in log
    assert (node.params.tracking_max_error, node.params.tracking_timeout) == (0.3, 0.5)  # config defaults

    rig = Rig("/stuck", Inputs(seed=80), node_ns="/stuck")
    rig.inputs.joint[:] = (lower + upper) / 2  # the arm stays mid-range, every limit more than 0.3 away
    assert np.all((upper - lower) / 2 > 0.3 + 0.05)
    with running(node, rig) as spin:
        future = rig.enable_client.call_async(SetBool.Request(data=True))
        assert wait_for(future.done, 5, spin) and future.result().success
        assert wait_for(lambda: node.fault is not None, 10, spin), "the watchdog never tripped"
        assert JOINTS[joint] in node.fault and not node.enabled
        idle(spin, 0.3)
        commands = np.stack(rig.received())
        # Out to 0.3 at 0.05 per tick (7 ticks), then 0.5 s at 20 Hz (10 ticks): stopped soon after.
        assert 8 <= len(commands) <= 25, len(commands)
        assert np.all(commands >= lower - 1e-9) and np.all(commands <= upper + 1e-9)
        assert np.abs(commands[:, joint] - rig.inputs.joint[joint]).max() > 0.3
        assert wait_for(lambda: bool(rig.diagnostics) and rig.diagnostics[-1]["level"] == 2, 5, spin)
        assert "tracking watchdog" in rig.diagnostics[-1]["message"] and JOINTS[joint] in rig.diagnostics[-1]["message"]
        idle(spin, 1.0)
        assert len(rig.received()) == len(commands), "published after the watchdog tripped"
        assert rig.diagnostics[-1]["level"] == 2  # still ERROR: waits for re-enable
        # Re-enabled: commands resume from the measured position.
        future = rig.enable_client.call_async(SetBool.Request(data=True))
        assert wait_for(future.done, 5, spin) and future.result().success and node.fault is None
        assert wait_for(lambda: len(rig.received()) > len(commands), 5, spin)
        assert np.abs(rig.received()[len(commands)] - rig.inputs.joint).max() <= 0.05 + 1e-6


# --- refusals -----------------------------------------------------------------------------------

def refusal(checkpoint: Path, *params: str) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "lapo_ros.policy", "--ros-args", "--params-file", str(CONFIG),
                 "-p", f"checkpoint:={checkpoint}", *itertools.chain.from_iterable(("-p", p) for p in params)],
                timeout=120)


@pytest.mark.parametrize("names, message", [
    (JOINTS[:14], "joint_names: 16 entries != 14 entries"),
    ([JOINTS[1], JOINTS[0], *JOINTS[2:]], "joint_names differ at 0: 'left_waist' != 'left_shoulder', "
                                          "1: 'left_shoulder' != 'left_waist'"),
])
def test_schema_mismatch_is_refused(checkpoint, names, message):
    result = refusal(checkpoint, f"joint_names:=[{','.join(names)}]")
    assert result.returncode == 1
    assert "refusing to run" in result.stderr and message in result.stderr, result.stderr


def test_corrupt_checkpoint_is_refused(checkpoint, tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])  # truncated copy
    result = refusal(corrupt)
    assert result.returncode == 1
    assert f"refusing to run: {corrupt}: not a readable lapo checkpoint: it is not a complete torch archive: " \
           "truncated" in result.stderr, result.stderr
    assert "weights_only" not in result.stderr  # torch's advice would let a malicious file run code


def test_nonfinite_weights_are_refused(checkpoint, tmp_path):
    ckpt = torch.load(checkpoint, weights_only=True)
    name, weights = next((k, v) for k, v in ckpt["state"]["modules"]["actor"].items() if v.is_floating_point())
    weights.view(-1)[0] = float("nan")
    broken = tmp_path / "nan_weights.pth"
    torch.save(ckpt, broken)
    result = refusal(broken)
    assert result.returncode == 1
    assert f"refusing to run: {broken}: state.modules.actor.{name} holds 1 NaN/inf value(s)" in result.stderr, \
        result.stderr
