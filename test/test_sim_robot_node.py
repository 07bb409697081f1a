"""The sim robot node in a subprocess, observed through real rclpy from the test process.

Both sides use a private ROS_DOMAIN_ID so that nodes of other runs on this machine do not mix in.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rclpy
from rclpy.client import Client
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float64MultiArray
from std_srvs.srv import SetBool, Trigger

ROOT = Path(__file__).resolve().parents[1]
DOMAIN_ID = 1 + os.getpid() % 100
HEIGHT, WIDTH = 48, 64
IMAGE_TOPICS = ("/left_wrist/image_raw", "/right_wrist/image_raw", "/global/image_raw")
COMMAND_TOPIC = "/forward_position_controller/commands"


def start_node(*params: str) -> subprocess.Popen:
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN_ID), MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"))
    args = [sys.executable, "-m", "lapo_ros.sim.robot_node", "--ros-args",
            "--params-file", str(ROOT / "config" / "sim.yaml"),
            "-p", f"image_height:={HEIGHT}", "-p", f"image_width:={WIDTH}"]
    for p in params:
        args += ["-p", p]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_node(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out


class Probe:
    """A test node that keeps every message it receives."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = Node("sim_robot_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.images: dict[str, list[Image]] = {t: [] for t in IMAGE_TOPICS}
        self.joints: list[JointState] = []
        self.clock: list[Clock] = []
        self.rewards: list[Float32] = []
        self.commands: list[Float64MultiArray] = []
        for topic in IMAGE_TOPICS:
            self.node.create_subscription(Image, topic, self.images[topic].append, qos_profile_sensor_data)
        self.node.create_subscription(JointState, "/joint_states", self.joints.append, 10)
        self.node.create_subscription(Clock, "/clock", self.clock.append, 10)
        self.node.create_subscription(Float32, "/reward", self.rewards.append, 10)
        self.node.create_subscription(Float64MultiArray, COMMAND_TOPIC, self.commands.append, 10)
        self.command_pub = self.node.create_publisher(Float64MultiArray, COMMAND_TOPIC, 10)
        self.clients: dict[str, Client] = {}

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)

    def spin_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, service: str, timeout: float = 10.0, srv_type: type = Trigger, request=None):
        """One service call (Trigger unless told); the request is sent again every 2 s until answered.
        A request (or its response) sent while the two sides are still matching their endpoints can be
        lost without an error (ros2/rclcpp#625, ros2/rmw_cyclonedds#74). Repeating is harmless here:
        ~/status is a query, a second ~/reset only moves on to the next seed, ~/pause sets a state."""
        request = srv_type.Request() if request is None else request
        if service not in self.clients:  # one client per service: each new one must be discovered again
            self.clients[service] = self.node.create_client(srv_type, service)
        client = self.clients[service]
        deadline = time.monotonic() + timeout
        while True:
            assert client.wait_for_service(timeout_sec=max(deadline - time.monotonic(), 0.0)), \
                f"{service} not offered within {timeout} s"
            future = client.call_async(request)
            resend = time.monotonic() + 2.0
            while not future.done() and time.monotonic() < min(resend, deadline):
                self.executor.spin_once(timeout_sec=0.05)
            if future.done():
                return future.result()
            client.remove_pending_request(future)
            assert time.monotonic() < deadline, f"no answer from {service} within {timeout} s"

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def stamp_s(msg) -> float:
    return msg.sec + msg.nanosec * 1e-9


@pytest.fixture(scope="module")
def probe() -> Probe:
    p = Probe()
    yield p
    p.close()


@pytest.fixture(scope="class")  # stopped before the demonstrator test starts its own node
def sim(probe: Probe) -> subprocess.Popen:
    proc = start_node("seed:=3")
    probe.spin_until(lambda: all(probe.images.values()) or proc.poll() is not None, 40, "first images")
    assert proc.poll() is None, stop_node(proc)[1]
    yield proc
    rc, out = stop_node(proc)
    assert rc == 0 and "Traceback" not in out, out  # SIGINT is a clean exit


class TestSimRobot:
    def test_streams(self, sim: subprocess.Popen, probe: Probe) -> None:
        probe.spin_until(lambda: len(probe.images["/global/image_raw"]) >= 3 and len(probe.clock) >= 5,
                         20, "three frames and five clock ticks")
        for topic, msgs in probe.images.items():
            msg = msgs[-1]
            assert (msg.height, msg.width, msg.encoding, msg.step) == (HEIGHT, WIDTH, "rgb8", WIDTH * 3), topic
            pixels = np.frombuffer(msg.data, np.uint8)
            assert pixels.size == HEIGHT * WIDTH * 3 and pixels.std() > 5, topic
        frames = probe.images["/global/image_raw"]
        assert stamp_s(frames[-1].header.stamp) - stamp_s(frames[-2].header.stamp) == pytest.approx(0.04)  # 25 Hz

        js = probe.joints[-1]
        assert len(js.name) == 16 and len(js.position) == 16
        assert js.name[0] == "left_waist" and js.name[8] == "right_waist"
        stamps = [stamp_s(m.header.stamp) for m in probe.joints[-5:]]
        np.testing.assert_allclose(np.diff(stamps), 0.02, atol=1e-6)  # one message per control tick
        clocks = [stamp_s(m.clock) for m in probe.clock]
        assert len(clocks) >= 5 and all(b > a for a, b in zip(clocks, clocks[1:]))
        assert probe.rewards and probe.rewards[-1].data == 0.0  # nobody touched the cube

    def test_a_node_ticking_on_sim_time_sees_the_data_of_its_tick(self, sim: subprocess.Popen,
                                                                  probe: Probe) -> None:
        """/clock comes after the tick's joint states and frames: a sim-time timer (as the policy
        node's) samples the joint state of its own time and frames at most one tick old, as the
        in-process evaluator does (before, 20 ms and 20-40 ms)."""
        node = Node("sim_time_sampler", context=probe.context,
                    parameter_overrides=[Parameter("use_sim_time", value=True)])
        newest: dict[str, float] = {}

        def keep(name: str) -> Callable:
            return lambda msg: newest.__setitem__(name, stamp_s(msg.header.stamp))

        node.create_subscription(JointState, "/joint_states", keep("joint"), qos_profile_sensor_data)
        node.create_subscription(Image, "/global/image_raw", keep("image"), qos_profile_sensor_data)
        ages: list[tuple[float, float]] = []

        def tick() -> None:
            if len(newest) == 2:
                now = node.get_clock().now().nanoseconds * 1e-9
                ages.append((now - newest["joint"], now - newest["image"]))

        node.create_timer(1 / 30, tick)
        probe.executor.add_node(node)
        try:
            probe.spin_until(lambda: len(ages) >= 60, 30, "60 ticks of a 30 Hz sim-time timer")
        finally:
            probe.executor.remove_node(node)
            node.destroy_node()
        joint_age, image_age = np.round(np.array(ages) * 1000).T  # ms
        assert np.mean(joint_age == 0) >= 0.8, joint_age
        assert np.mean(image_age <= 20) >= 0.9, image_age  # frames every 2nd tick (25 Hz)


    def test_command_moves_joints_and_reset_restores(self, sim: subprocess.Popen, probe: Probe) -> None:
        home = np.array(probe.joints[-1].position)
        target = home.copy()
        target[0] = 0.5  # left waist
        msg = Float64MultiArray(data=target.tolist())
        probe.command_pub.publish(Float64MultiArray(data=[0.0] * 5))  # wrong size: dropped
        probe.command_pub.publish(msg)  # the controller holds it
        probe.spin_until(lambda: probe.joints[-1].position[0] > 0.45, 20, "left waist to reach 0.5")
        assert abs(probe.joints[-1].position[8] - home[8]) < 0.05  # right waist untouched

        status = probe.call("/sim_robot/status")
        assert not status.success and "episode=0 seed=3" in status.message
        response = probe.call("/sim_robot/reset")
        assert response.success and response.message == "episode 1 seed 4"
        before = stamp_s(probe.clock[-1].clock)
        probe.spin_until(lambda: stamp_s(probe.clock[-1].clock) > before + 0.1, 10, "ticks after reset")
        # Reset restores the home pose and holds it (the old command is forgotten); time keeps going.
        assert abs(probe.joints[-1].position[0]) < 0.05

    def test_pause_stops_time_and_topics_until_resumed(self, sim: subprocess.Popen, probe: Probe) -> None:
        def pause(value: bool) -> SetBool.Response:
            return probe.call("/sim_robot/pause", srv_type=SetBool, request=SetBool.Request(data=value))

        assert pause(True).success
        probe.spin_for(0.3)  # ticks sent before the pause took effect
        clocks, joints, frames = len(probe.clock), len(probe.joints), len(probe.images["/global/image_raw"])
        paused_at = stamp_s(probe.clock[-1].clock)
        assert probe.call("/sim_robot/reset").success  # a reset while paused does not tick either
        probe.spin_for(1.0)
        assert (len(probe.clock), len(probe.joints), len(probe.images["/global/image_raw"])) == (clocks, joints, frames)
        assert f"sim_time={paused_at:.3f}" in probe.call("/sim_robot/status").message
        assert pause(False).success
        probe.spin_until(lambda: len(probe.clock) > clocks + 2, 10, "ticks after resuming")
        # Time goes on from where it stopped, one control period per tick, from the reset pose.
        assert stamp_s(probe.clock[clocks].clock) == pytest.approx(paused_at + 0.02)
        assert stamp_s(probe.joints[joints].header.stamp) == pytest.approx(paused_at + 0.02)
        assert abs(probe.joints[joints].position[0]) < 0.05


def test_a_command_that_arrived_during_a_tick_drives_the_next_step() -> None:
    """rclpy's executor runs a due timer before a ready subscription, so when ticks run back to
    back (rendering slower than the period, a loaded machine) a command that arrived during a
    tick used to wait one more step. The tick takes waiting commands itself: here nothing spins
    the sim node, and its next step still applies the command."""
    from lapo_ros.sim.robot_node import SimRobotNode

    rclpy.init(domain_id=DOMAIN_ID + 101)  # the default context, which the node uses
    sim = commander = None
    try:
        sim = SimRobotNode()
        commander = Node("commander")
        publisher = commander.create_publisher(Float64MultiArray, COMMAND_TOPIC, 10)
        deadline = time.monotonic() + 10
        while publisher.get_subscription_count() == 0:
            assert time.monotonic() < deadline, "the sim node's command subscription was not discovered"
            time.sleep(0.01)
        target = sim._world.joint_positions()
        target[0] = 0.5  # left waist
        publisher.publish(Float64MultiArray(data=target.tolist()))
        deadline = time.monotonic() + 5
        while sim._world.data.ctrl[0] != 0.5:  # the step's command, as the world applied it
            assert time.monotonic() < deadline, "the command never reached a step"
            time.sleep(0.01)  # delivery to the (unspun) subscription
            sim._tick()
    finally:
        for node in (sim, commander):
            if node is not None:
                node.destroy_node()
        rclpy.shutdown()


def test_demonstrator_publishes_commands_and_transfers(probe: Probe) -> None:
    proc = start_node("demonstrator:=true", "real_time_factor:=5.0", "camera_rate:=5.0")
    try:
        probe.commands.clear()
        probe.spin_until(lambda: len(probe.commands) >= 10 or proc.poll() is not None, 40, "demo commands")
        assert len(probe.commands[-1].data) == 16
        probe.spin_until(lambda: "demonstrator=done" in probe.call("/sim_robot/status").message,
                         60, "the demonstration to finish")
        status = probe.call("/sim_robot/status")
        assert status.success, status.message
    finally:
        rc, out = stop_node(proc)
    assert rc == 0, out


def test_success_needs_the_hand_over_to_hold_for_success_hold(probe: Probe) -> None:
    """~/status counts a hand-over that stays complete for success_hold: the demonstration's holds
    about 1 s (test above), not 30 s, though its stage is 4 all along."""
    proc = start_node("demonstrator:=true", "real_time_factor:=5.0", "camera_rate:=5.0", "success_hold:=30.0")
    try:
        probe.spin_until(lambda: proc.poll() is not None or
                         "demonstrator=done" in probe.call("/sim_robot/status").message, 60,
                         "the demonstration to finish")
        status = probe.call("/sim_robot/status")
        assert not status.success and "reward=4" in status.message, status.message
    finally:
        rc, out = stop_node(proc)
    assert rc == 0, out


def test_demonstrator_fails_in_the_asked_mode(probe: Probe) -> None:
    """failure_mode reaches the demonstrator (seed 0's own draw of "all" would be left_miss, which
    lifts the cube): grasp_offset never touches the cube, stage 0 all along. The rewards are checked
    on the episode after a reset: the first one starts with the node, before the probe's
    subscription has matched its publisher, so its first ticks may never arrive."""
    proc = start_node("demonstrator:=true", "failure_prob:=1.0", "failure_mode:=grasp_offset",
                      "real_time_factor:=5.0", "camera_rate:=5.0")

    def finish_demonstration() -> Trigger.Response:
        probe.spin_until(lambda: proc.poll() is not None or
                         "demonstrator=done" in probe.call("/sim_robot/status").message, 60,
                         "the demonstration to finish")
        return probe.call("/sim_robot/status")

    try:
        status = finish_demonstration()
        assert not status.success and "seed=0 " in status.message, status.message
        assert "failure=grasp_offset" in status.message, status.message
        assert probe.call("/sim_robot/reset").success
        probe.rewards.clear()  # from here on: the whole of episode 1 (and a few of episode 0's last, all 0)
        status = finish_demonstration()
        assert not status.success and "failure=grasp_offset" in status.message, status.message
        assert len(probe.rewards) > 200 and max(r.data for r in probe.rewards) == 0.0
    finally:
        rc, out = stop_node(proc)
    assert rc == 0, out


@pytest.mark.parametrize("param, name", [("camera_rate:=100.0", "camera_rate"),
                                         ("failure_mode:=sideways", "failure_mode"),
                                         ("grasp_jitter:=0.05", "grasp_jitter"),
                                         ("success_hold:=-1.0", "success_hold")])
def test_invalid_parameters_exit_nonzero(param: str, name: str) -> None:
    proc = start_node(param)
    out, _ = proc.communicate(timeout=30)  # exits by itself
    rc = proc.returncode
    assert rc == 1 and name in out and "Traceback" not in out
