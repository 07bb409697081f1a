"""ROS adapter for the observation inputs, shared by the recorder and the policy node.

`declare_input_parameters(node)` declares and validates the input parameters (topics, message
types, joint order, staleness limit, image size); `ObservationInputs` subscribes to the three
cameras, the joint states and optionally the commanded actions and a reward, and samples them on
demand with `lapo_learning.stream_sampler` (newest message per stream, stale -> skipped and counted).
"""
from __future__ import annotations

from typing import Any, Sequence

import rclpy.time
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float32, Float64

from lapo_learning.recording import (INPUT_PARAMETERS, InputParams, Param, ParameterError,
                                     input_params, stream_caches)
from lapo_learning.stream_sampler import (ACTION_STREAM, JOINT_STREAM, REWARD_STREAM, Sample, StreamCache,
                                          StreamSampler)
from lapo_ros.joint_msgs import command_msg_class

# The message classes of the type names in lapo_learning.recording.
CAMERA_TYPES = {"raw": Image, "compressed": CompressedImage}
REWARD_TYPES = {"float32": Float32, "float64": Float64}


def declare_parameters(node: Node, params: Sequence[Param]) -> dict[str, Any]:
    """Declare `params` on `node` with their descriptions; their values (string arrays without a
    default are declared by type and read as () when unset)."""
    values: dict[str, Any] = {}
    for p in params:
        descriptor = ParameterDescriptor(description=p.description)
        if p.default is None:
            node.declare_parameter(p.name, Parameter.Type.STRING_ARRAY, descriptor)
            try:
                values[p.name] = tuple(node.get_parameter(p.name).value or ())
            except ParameterUninitializedException:
                values[p.name] = ()
        else:
            values[p.name] = node.declare_parameter(p.name, p.default, descriptor).value
    return values


def declare_input_parameters(node: Node) -> InputParams:
    """Declare the input parameters on `node`, read and validate them (ParameterError on bad ones)."""
    return input_params(declare_parameters(node, INPUT_PARAMETERS))


def _seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class ObservationInputs:
    """Subscriptions to the observation streams (and actions/reward) with on-demand sampling.

    `sample(now)` returns a `Sample` whose images are already resized to the configured size, or
    None when a stream is missing or stale (counted in `.skipped`) or, with `reject_nonfinite`,
    when its joints, action or reward are NaN/inf (counted in `.nonfinite`). A message that cannot
    be used (unsupported encoding, unknown joint name) raises InputError naming the topic from
    `sample`.
    """

    def __init__(self, node: Node, params: InputParams, with_actions: bool, with_reward: bool,
                 reject_nonfinite: bool = False) -> None:
        self.node = node
        self.params = params
        self.topics = params.topics(with_actions, with_reward)
        caches = stream_caches(params, with_actions, with_reward)
        self.sampler = StreamSampler(caches, params.max_age, reject_nonfinite)
        self.skipped = self.sampler.skipped  # stream -> skipped samples (live Counter)
        self.nonfinite = self.sampler.nonfinite  # stream -> samples skipped for NaN/inf (live Counter)
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

    def sample(self, now: rclpy.time.Time, newer_than: rclpy.time.Time | None = None) -> Sample | None:
        return self.sampler.sample(now.nanoseconds * 1e-9,
                                   None if newer_than is None else newer_than.nanoseconds * 1e-9)
