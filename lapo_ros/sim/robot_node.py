"""ROS 2 node: the simulated bimanual robot (MuJoCo transfer-cube world, see world.py).

    python -m lapo_ros.sim.robot_node --ros-args --params-file config/sim.yaml
    ros2 launch lapo_ros sim.launch.py demonstrator:=true

The node is the clock source: every control tick it steps the physics by one control period,
advances sim time by the same amount and publishes joint states and reward stamped with it;
cameras are rendered every 1/camera_rate of sim time. /clock is published last, after the
tick's joint states and frames: a node that ticks on sim time (the policy node, the recorder)
wakes at time T with the observation of T already sent, as `lapo_ros.sim.evaluate` models it
(published first, the policy node acted on joint states one tick and frames one camera period
older than that). Ticks are paced by a steady (wall) timer at real_time_factor, and when
rendering is slower than that, sim time simply slows down: nodes that run with use_sim_time see
the same data either way.

Commands follow the forward_position_controller convention: std_msgs/Float64MultiArray with 16
values in the order of the joint_states names, the last one held. A step applies the newest
command that arrived before it began (taken at the start of the tick: rclpy's executor runs a due
timer before a ready subscription, so when ticks run back to back a command would otherwise wait
one more step). With `demonstrator: true` a scripted teleoperator (demonstrator.py) runs in this
process and publishes its commands on the command topic, so a recorder records them as actions.
It runs in-process because it plans from the true cube pose (which no topic carries, as on a real
robot) and must produce exactly one command per sim tick; the node then applies its commands
directly and does not subscribe. The command for the step from T is published with the
observation of T, before /clock reaches T, so a recorder pairs each observation with the command
applied from it.

Services: ~/reset (std_srvs/Trigger) starts a new episode (cube pose from seed + episode
number, new demonstration); ~/pause (std_srvs/SetBool, as Gazebo's pause_physics: true stops
ticking, so sim time, topics and the demonstrator stand still; false resumes where it stopped),
which lets a client reset and get ready (start a recorder) before the episode's first tick
whatever the pace or the load; ~/status (Trigger) answers success = the hand-over has been complete
for success_hold s without a break at some point of this episode (world.py: the complete state
alone flickers while a dropped cube brushes the left fingers), with the episode, seed, stage
reward (0..4), demonstration state and its failure mode (failure=none for a clean one) in the message.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, fields

import numpy as np
from builtin_interfaces.msg import Time as TimeMsg
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float32, Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from lapo_ros.image_msgs import rgb_to_image_msg
from lapo_ros.node_runner import run_node
from lapo_ros.sim.demonstrator import (
    ALL_FAILURE_MODES,
    FAILURE_MODES,
    DemonstratorConfig,
    ScriptedDemonstrator,
)
from lapo_ros.sim.world import NUM_JOINTS, SimWorld, SimWorldConfig

# MuJoCo camera -> (topic parameter, frame_id). "top" is the global camera.
CAMERA_TOPICS: dict[str, tuple[str, str]] = {
    "left_wrist": ("left_wrist_topic", "left_wrist"),
    "right_wrist": ("right_wrist_topic", "right_wrist"),
    "top": ("global_topic", "global"),
}


@dataclass(frozen=True)
class SimRobotParams:
    image_height: int = 96
    image_width: int = 128
    control_rate: float = 50.0
    camera_rate: float = 25.0
    real_time_factor: float = 1.0
    success_hold: float = 0.5
    seed: int = 0
    command_topic: str = "/forward_position_controller/commands"
    joint_states_topic: str = "/joint_states"
    reward_topic: str = "/reward"
    left_wrist_topic: str = "/left_wrist/image_raw"
    right_wrist_topic: str = "/right_wrist/image_raw"
    global_topic: str = "/global/image_raw"
    demonstrator: bool = False
    noise_std: float = 0.0
    failure_prob: float = 0.0
    failure_mode: str = ALL_FAILURE_MODES
    grasp_jitter: float = DemonstratorConfig.grasp_jitter

    def demonstrator_config(self) -> DemonstratorConfig:
        return DemonstratorConfig(noise_std=self.noise_std, failure_prob=self.failure_prob,
                                  failure_mode=self.failure_mode, grasp_jitter=self.grasp_jitter,
                                  control_dt=1.0 / self.control_rate)

    def validate(self) -> None:
        if self.control_rate <= 0 or self.camera_rate <= 0:
            raise ValueError("control_rate and camera_rate must be > 0")
        if self.camera_rate > self.control_rate:
            raise ValueError(f"camera_rate ({self.camera_rate}) cannot exceed control_rate ({self.control_rate})")
        if self.real_time_factor <= 0:
            raise ValueError(f"real_time_factor must be > 0, got {self.real_time_factor}")
        if not self.success_hold >= 0:
            raise ValueError(f"success_hold must be >= 0, got {self.success_hold}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        topics = [getattr(self, f.name) for f in fields(self) if f.name.endswith("_topic")]
        if any(not t for t in topics) or len(set(topics)) != len(topics):
            raise ValueError(f"topic names must be non-empty and distinct: {topics}")
        self.demonstrator_config().validate()  # with the demonstrator off too: a typo is an error either way


DESCRIPTIONS: dict[str, str] = {
    "image_height": "camera image height, pixels (rendering cost grows with it)",
    "image_width": "camera image width, pixels",
    "control_rate": "control ticks per second of sim time; 1/control_rate must be a multiple of "
                    "the physics timestep (0.002 s)",
    "camera_rate": "camera frames per second of sim time (<= control_rate)",
    "real_time_factor": "target sim seconds per wall second; slower rendering lowers it, never "
                        "changes the data",
    "success_hold": "s the hand-over must stay complete without a break for the episode to count as a "
                    "success (0: any instant; the state flickers while a dropped cube brushes the left fingers)",
    "seed": "episode e places the cube with seed + e (episode 0 at start, +1 per ~/reset)",
    "command_topic": "std_msgs/Float64MultiArray position commands, 16 values in joint_states order",
    "joint_states_topic": "sensor_msgs/JointState output (16 joints, stamped with sim time)",
    "reward_topic": "std_msgs/Float32 stage reward 0..4 each control tick",
    "left_wrist_topic": "sensor_msgs/Image rgb8 of the left wrist camera",
    "right_wrist_topic": "sensor_msgs/Image rgb8 of the right wrist camera",
    "global_topic": "sensor_msgs/Image rgb8 of the overhead (global) camera",
    "demonstrator": "a scripted teleoperator publishes commands on command_topic and the node "
                    "ignores other commands",
    "noise_std": "demonstrator: Gaussian noise std (rad) on arm-joint commands",
    "failure_prob": "demonstrator: probability that an episode is botched on purpose",
    "failure_mode": f"demonstrator: how a botched episode fails, one of {', '.join(FAILURE_MODES)} "
                    f"(see lapo_ros/sim/demonstrator.py), or {ALL_FAILURE_MODES} (one of them per episode)",
    "grasp_jitter": "demonstrator: m, the right grasp's per-episode shift along its approach, uniform in "
                    "+-grasp_jitter (the left arm re-aims at the cube wherever it sits in the right gripper)",
}


def declare_params(node: Node) -> SimRobotParams:
    """Declare every SimRobotParams field as a read-only ROS parameter and return the validated values."""
    values = {}
    for f in fields(SimRobotParams):
        descriptor = ParameterDescriptor(description=DESCRIPTIONS[f.name], read_only=True)
        values[f.name] = node.declare_parameter(f.name, f.default, descriptor).value
    params = SimRobotParams(**values)
    params.validate()
    return params


def _stamp(nanoseconds: int) -> TimeMsg:
    return TimeMsg(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


class SimRobotNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_robot")
        self.params = p = declare_params(self)
        self._world = SimWorld(SimWorldConfig(
            image_height=p.image_height, image_width=p.image_width,
            control_dt=1.0 / p.control_rate, seed=p.seed,
        ))
        self._control_ns = round(1e9 / p.control_rate)
        self._camera_ns = round(1e9 / p.camera_rate)
        self._sim_ns = 0
        self._next_camera_ns = 0
        self._episode = 0
        self._joint_names = self._world.joint_names()
        self._command = self._world.joint_positions()
        self._demo_reported = False  # "demonstration finished" logged once per episode
        self._succeeded = False  # the hand-over held for success_hold in this episode
        self._paused = False

        self._demo: ScriptedDemonstrator | None = None
        if p.demonstrator:
            self._demo = ScriptedDemonstrator(p.demonstrator_config(), seed=p.seed, model=self._world.model)
            self._command_pub = self.create_publisher(Float64MultiArray, p.command_topic, 10)
        else:
            self._command_sub = self.create_subscription(Float64MultiArray, p.command_topic, self._on_command, 10)

        self._clock_pub = self.create_publisher(ClockMsg, "/clock", QoSProfile(depth=1))
        self._joint_pub = self.create_publisher(JointState, p.joint_states_topic, 10)
        self._reward_pub = self.create_publisher(Float32, p.reward_topic, 10)
        self._image_pubs = {
            cam: (self.create_publisher(Image, getattr(p, topic), qos_profile_sensor_data), frame)
            for cam, (topic, frame) in CAMERA_TOPICS.items()
        }
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/status", self._on_status)
        self.create_service(SetBool, "~/pause", self._on_pause)

        self._start_episode()
        # The node is the clock source, so its pacing timer must not follow /clock (use_sim_time).
        self.create_timer(1.0 / (p.control_rate * p.real_time_factor), self._tick,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"sim robot up: {p.image_width}x{p.image_height} images at {p.camera_rate} Hz, "
            f"control {p.control_rate} Hz, demonstrator={p.demonstrator}, commands on {p.command_topic}")

    # ------------------------------------------------------------------ episodes
    def _seed(self) -> int:
        return self.params.seed + self._episode

    def _start_episode(self) -> None:
        self._world.reset(self._seed())
        self._command = self._world.joint_positions()
        self._demo_reported = False
        self._succeeded = False
        if self._demo is not None:
            self._demo.plan(self._world.cube_pose(), self._command, seed=self._seed())
            self._next_demo_command()  # for the first step, sent with the reset pose it starts from
        self._next_camera_ns = self._sim_ns  # fresh frames right away

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._episode += 1
        self._start_episode()
        response.success = True
        response.message = f"episode {self._episode} seed {self._seed()}"
        self.get_logger().info(f"reset: {response.message}")
        return response

    def _on_pause(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self._paused = bool(request.data)
        response.success = True
        response.message = f"{'paused' if self._paused else 'running'} at sim_time={self._sim_ns / 1e9:.3f}"
        return response

    def _on_status(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success = self._succeeded
        demo = "off" if self._demo is None else ("done" if self._demo.done else "running")
        # Which failure this episode's demonstration plays (none = a clean one), as the recorder's user sees it.
        failure = "" if self._demo is None else f" failure={self._demo.failure_mode or 'none'}"
        response.message = (f"episode={self._episode} seed={self._seed()} reward={self._world.reward()} "
                            f"demonstrator={demo}{failure} sim_time={self._sim_ns / 1e9:.3f}")
        return response

    # ------------------------------------------------------------------ commands
    def _on_command(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        if values.shape != (NUM_JOINTS,) or not np.all(np.isfinite(values)):
            # Like forward_command_controller: a wrong size or non-finite command is dropped.
            self.get_logger().error(
                f"dropping command: need {NUM_JOINTS} finite values, got {values.size}",
                throttle_duration_sec=5.0)
            return
        self._command = values

    def _take_commands(self) -> None:
        """Run the command callback for every command that arrived since the last step."""
        sub = self._command_sub
        while True:
            with sub.handle:
                taken = sub.handle.take_message(sub.msg_type, sub.raw)
            if taken is None:
                return
            self._on_command(taken[0])

    # ------------------------------------------------------------------ simulation
    def _next_demo_command(self) -> None:
        assert self._demo is not None
        self._command = self._demo.next_command(self._world.cube_pose())  # the operator sees the cube
        self._command_pub.publish(Float64MultiArray(data=self._command.tolist()))
        if self._demo.done and not self._demo_reported:
            self._demo_reported = True
            self.get_logger().info(f"demonstration {self._episode} finished, success={self._succeeded}")

    def _tick(self) -> None:
        if self._paused:
            return
        if self._demo is None:
            self._take_commands()
        self._world.step(self._command)
        self._sim_ns += self._control_ns
        self._succeeded = self._succeeded or self._world.success_held() >= self.params.success_hold
        stamp = _stamp(self._sim_ns)

        joints = JointState(name=self._joint_names, position=self._world.joint_positions().tolist())
        joints.header.stamp = stamp
        self._joint_pub.publish(joints)
        self._reward_pub.publish(Float32(data=float(self._world.reward())))
        if self._sim_ns >= self._next_camera_ns:
            self._next_camera_ns += self._camera_ns
            for cam, (pub, frame) in self._image_pubs.items():
                pub.publish(rgb_to_image_msg(self._world.render(cam), stamp=stamp, frame_id=frame))
        if self._demo is not None:
            self._next_demo_command()
        self._clock_pub.publish(ClockMsg(clock=stamp))  # last: the tick's data is out before time reaches it

    def destroy_node(self) -> None:
        # rclpy also destroys a half-built node (invalid parameters) at shutdown: no world yet.
        world: SimWorld | None = getattr(self, "_world", None)
        if world is not None:
            world.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    # ValueError: parameter validation, named in the message.
    return run_node(SimRobotNode, "sim_robot", (ValueError,), args, fatal_prefix="invalid parameters: ")


if __name__ == "__main__":
    sys.exit(main())
