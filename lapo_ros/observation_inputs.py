"""ROS adapter for the observation inputs, shared by the recorder and the policy node.

`declare_input_parameters(node)` declares and validates the input parameters (topics, message
types, joint order, staleness limit, image size); `ObservationInputs` subscribes to the three
cameras, the joint states and optionally the commanded actions and a reward, and samples them on
demand with `lapo_ros.stream_sampler` (newest message per stream, stale -> skipped and counted).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import rclpy.time
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float32, Float64

from lapo_learning.schema import CAMERAS, resize_image
from lapo_ros.image_msgs import image_msg_to_rgb
from lapo_ros.joint_msgs import COMMAND_TYPES, JointIndexer, command_msg_class, command_to_array
from lapo_ros.stream_sampler import (ACTION_STREAM, JOINT_STREAM, REWARD_STREAM, Sample,
                                     StreamCache, StreamSampler)

DEFAULT_CAMERA_TOPICS = {
    "left_image": "/left_wrist/image_raw",
    "right_image": "/right_wrist/image_raw",
    "global_image": "/global/image_raw",
}
CAMERA_TYPES = {"raw": Image, "compressed": CompressedImage}
REWARD_TYPES = {"float32": Float32, "float64": Float64}
SYNC_POLICIES = ("newest", "approximate")


class ParameterError(ValueError):
    """A parameter has an invalid value; the message names the parameter."""


class InputError(ValueError):
    """A received message cannot be used (unsupported encoding, unknown joint); names the topic."""


@dataclass(frozen=True)
class CameraInput:
    name: str  # one of CAMERAS
    topic: str
    msg_type: str  # key of CAMERA_TYPES


@dataclass(frozen=True)
class InputParams:
    cameras: tuple[CameraInput, ...]
    joint_states_topic: str
    joint_names: tuple[str, ...]
    action_topic: str
    action_type: str  # key of joint_msgs.COMMAND_TYPES
    action_names: tuple[str, ...]
    reward_topic: str  # "" = no reward topic
    reward_type: str  # key of REWARD_TYPES
    max_age: float
    image_size: tuple[int, int] | None  # (H, W); None keeps the camera's size
    sync_policy: str
    approximate_slop: float

    def topics(self, with_actions: bool = True, with_reward: bool = True) -> dict[str, str]:
        """Stream name -> topic of the streams that are subscribed."""
        topics = {c.name: c.topic for c in self.cameras}
        topics[JOINT_STREAM] = self.joint_states_topic
        if with_actions:
            topics[ACTION_STREAM] = self.action_topic
        if with_reward and self.reward_topic:
            topics[REWARD_STREAM] = self.reward_topic
        return topics


def _declare(node: Node, name: str, default: Any, description: str) -> Any:
    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value


def declare_input_parameters(node: Node) -> InputParams:
    """Declare the input parameters on `node`, read and validate them (ParameterError on bad ones)."""
    cameras = []
    for cam in CAMERAS:
        topic = _declare(node, f"cameras.{cam}.topic", DEFAULT_CAMERA_TOPICS[cam],
                         f"topic of the {cam} camera")
        msg_type = _declare(node, f"cameras.{cam}.type", "raw",
                            "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage, jpeg/png)")
        _check_choice(f"cameras.{cam}.type", msg_type, CAMERA_TYPES)
        _check_topic(f"cameras.{cam}.topic", topic)
        cameras.append(CameraInput(cam, topic, msg_type))
    joint_topic = _declare(node, "joint_states_topic", "/joint_states", "sensor_msgs/JointState topic")
    _check_topic("joint_states_topic", joint_topic)
    node.declare_parameter("joint_names", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
        description="joint order of the observation vector (JointState messages are matched by name)"))
    joint_names = _string_array(node, "joint_names", required=True)
    action_topic = _declare(node, "action.topic", "/forward_position_controller/commands",
                            "topic of the commanded actions")
    action_type = _declare(node, "action.type", "float64_multi_array",
                           "float64_multi_array (values in action_names order), joint_trajectory "
                           "(first point, by name) or joint_state (leader arm, by name)")
    _check_choice("action.type", action_type, COMMAND_TYPES)
    _check_topic("action.topic", action_topic)
    node.declare_parameter("action_names", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
        description="joint order of the action vector; unset = joint_names"))
    action_names = _string_array(node, "action_names", required=False) or joint_names
    reward_topic = _declare(node, "reward.topic", "",
                            "std_msgs Float32/Float64 reward topic; empty = sparse reward from the outcome")
    reward_type = _declare(node, "reward.type", "float32", "float32 or float64")
    _check_choice("reward.type", reward_type, REWARD_TYPES)
    if reward_topic:
        _check_topic("reward.topic", reward_topic)
    max_age = float(_declare(node, "max_age", 0.1,
                             "a sample is skipped when a stream's newest message is older than this (s)"))
    if not max_age > 0:
        raise ParameterError(f"parameter 'max_age' must be > 0 s, got {max_age}")
    height = int(_declare(node, "image_height", 84, "stored/model image height; 0 (with width 0) keeps the raw size"))
    width = int(_declare(node, "image_width", 84, "stored/model image width; 0 (with height 0) keeps the raw size"))
    if (height == 0) != (width == 0) or height < 0 or width < 0:
        raise ParameterError(f"parameters 'image_height'/'image_width' must both be > 0 or both 0, "
                             f"got {height}x{width}")
    sync_policy = _declare(node, "sync_policy", "newest",
                           "newest (newest message per stream at a fixed rate) or approximate "
                           "(cameras matched by message_filters ApproximateTimeSynchronizer)")
    if sync_policy not in SYNC_POLICIES:
        raise ParameterError(f"parameter 'sync_policy' must be one of {list(SYNC_POLICIES)}, got {sync_policy!r}")
    slop = float(_declare(node, "approximate_slop", 0.02, "max stamp spread (s) of a camera set (approximate)"))
    if not slop > 0:
        raise ParameterError(f"parameter 'approximate_slop' must be > 0 s, got {slop}")
    return InputParams(
        cameras=tuple(cameras), joint_states_topic=joint_topic, joint_names=joint_names,
        action_topic=action_topic, action_type=action_type, action_names=action_names,
        reward_topic=reward_topic, reward_type=reward_type, max_age=max_age,
        image_size=(height, width) if height else None, sync_policy=sync_policy,
        approximate_slop=slop)


def _check_choice(name: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise ParameterError(f"parameter '{name}' must be one of {sorted(choices)}, got {value!r}")


def _check_topic(name: str, topic: str) -> None:
    if not topic or any(ch.isspace() for ch in topic):
        raise ParameterError(f"parameter '{name}' must be a topic name, got {topic!r}")


def _string_array(node: Node, name: str, required: bool) -> tuple[str, ...]:
    try:
        values = tuple(node.get_parameter(name).value or ())
    except ParameterUninitializedException:
        values = ()
    if required and not values:
        raise ParameterError(f"parameter '{name}' is not set: give the joint order (see config/recorder.yaml)")
    if len(set(values)) != len(values):
        raise ParameterError(f"parameter '{name}' has duplicate entries: {list(values)}")
    return values


def _seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class ObservationInputs:
    """Subscriptions to the observation streams (and actions/reward) with on-demand sampling.

    `sample(now)` returns a `Sample` whose images are already resized to the configured size, or
    None when a stream is missing or stale (counted in `.skipped`). A message that cannot be used
    (unsupported encoding, unknown joint name) raises InputError naming the topic from `sample`.
    """

    def __init__(self, node: Node, params: InputParams, with_actions: bool, with_reward: bool) -> None:
        self.node = node
        self.params = params
        self.topics = params.topics(with_actions, with_reward)
        caches: dict[str, StreamCache] = {}
        for cam in params.cameras:
            caches[cam.name] = StreamCache(cam.name, self._guard(cam.topic, self._image_converter()))
        indexer = JointIndexer(params.joint_names)
        caches[JOINT_STREAM] = StreamCache(JOINT_STREAM, self._guard(params.joint_states_topic, indexer))
        if with_actions:
            names = params.action_names
            caches[ACTION_STREAM] = StreamCache(
                ACTION_STREAM, self._guard(params.action_topic, lambda m: command_to_array(m, names)))
        if REWARD_STREAM in self.topics:
            caches[REWARD_STREAM] = StreamCache(REWARD_STREAM, lambda m: float(m.data))
        self.sampler = StreamSampler(caches, params.max_age)
        self.skipped = self.sampler.skipped  # stream -> skipped samples (live Counter)
        self._subscriptions: list[Any] = []
        self._synchronizer: Any = None

        qos = qos_profile_sensor_data  # best effort also connects to reliable publishers
        if params.sync_policy == "approximate":
            self._synchronizer = self._approximate_cameras(caches, qos)
        else:
            for cam in params.cameras:
                self._subscribe(CAMERA_TYPES[cam.msg_type], cam.topic, caches[cam.name], qos)
        self._subscribe(JointState, params.joint_states_topic, caches[JOINT_STREAM], qos)
        if with_actions:
            self._subscribe(command_msg_class(params.action_type), params.action_topic,
                            caches[ACTION_STREAM], qos)
        if REWARD_STREAM in caches:
            self._subscribe(REWARD_TYPES[params.reward_type], params.reward_topic,
                            caches[REWARD_STREAM], qos)

    def _image_converter(self) -> Callable[[Any], np.ndarray]:
        size = self.params.image_size
        if size is None:
            return image_msg_to_rgb
        return lambda msg: resize_image(image_msg_to_rgb(msg), size)

    @staticmethod
    def _guard(topic: str, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(msg: Any) -> Any:
            try:
                return convert(msg)
            except ValueError as exc:
                raise InputError(f"topic {topic}: {exc}") from exc
        return run

    def _now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _subscribe(self, msg_class: type, topic: str, cache: StreamCache, qos: Any) -> None:
        has_header = "header" in msg_class.get_fields_and_field_types()

        def callback(msg: Any) -> None:
            cache.update(msg, _seconds(msg.header.stamp) if has_header else None, self._now())

        self._subscriptions.append(self.node.create_subscription(msg_class, topic, callback, qos))

    def _approximate_cameras(self, caches: dict[str, StreamCache], qos: Any) -> Any:
        try:  # optional dependency, imported only when chosen
            import message_filters
        except ImportError as exc:
            raise ParameterError(
                "parameter 'sync_policy' is 'approximate' but the message_filters package is not "
                "installed (apt install ros-$ROS_DISTRO-message-filters); use sync_policy 'newest'"
            ) from exc
        cams = self.params.cameras
        subs = [message_filters.Subscriber(self.node, CAMERA_TYPES[c.msg_type], c.topic, qos_profile=qos)
                for c in cams]
        sync = message_filters.ApproximateTimeSynchronizer(subs, queue_size=10, slop=self.params.approximate_slop)

        def on_set(*msgs: Any) -> None:
            arrival = self._now()
            for cam, msg in zip(cams, msgs):
                caches[cam.name].update(msg, _seconds(msg.header.stamp), arrival)

        sync.registerCallback(on_set)
        self._subscriptions.extend(subs)
        return sync

    def received(self) -> dict[str, int]:
        """Messages received per stream (for status and diagnostics)."""
        return {name: cache.received for name, cache in self.sampler.caches.items()}

    def sample(self, now: rclpy.time.Time) -> Sample | None:
        return self.sampler.sample(now.nanoseconds * 1e-9)
