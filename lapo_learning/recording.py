"""The recorder's ROS-free half: its parameters, how it turns messages into samples, its episodes.

Shared by the recorder and policy nodes (`lapo_ros.observation_inputs` declares these parameters
as ROS parameters with these descriptions and subscribes the streams) and by `convert
from-rosbag2`, which reads the same YAML parameter file (`read_parameter_file`) and feeds a bag's
messages to the same stream caches and sampler: one table of parameters with one validation,
`stream_caches` (message -> array per stream: image conversion and resize, joints by name, the
command type, the reward), `episode_config` (how every episode file is set up).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from lapo_learning.episode_writer import COMPRESSIONS, EpisodeConfig
from lapo_learning.messages import (COMMAND_TYPES, JointIndexer, command_to_array, compressed_image_to_rgb,
                                    raw_image_to_rgb)
from lapo_learning.schema import CAMERAS, resize_image
from lapo_learning.stream_sampler import ACTION_STREAM, JOINT_STREAM, REWARD_STREAM, StreamCache

DEFAULT_CAMERA_TOPICS = {
    "left_image": "/left_wrist/image_raw",
    "right_image": "/right_wrist/image_raw",
    "global_image": "/global/image_raw",
}
# Parameter values naming message types -> the ROS type names.
CAMERA_TYPES = {"raw": "sensor_msgs/msg/Image", "compressed": "sensor_msgs/msg/CompressedImage"}
REWARD_TYPES = {"float32": "std_msgs/msg/Float32", "float64": "std_msgs/msg/Float64"}
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
SYNC_POLICIES = ("newest", "approximate")
NODE_NAME = "recorder"


class ParameterError(ValueError):
    """A parameter has an invalid value; the message names the parameter."""


class InputError(ValueError):
    """A received message cannot be used (unsupported encoding, unknown joint); names the topic."""


@dataclass(frozen=True)
class Param:
    name: str
    default: Any  # None: a string array without default (declared by type)
    description: str


def _camera_params(cam: str) -> tuple[Param, Param]:
    return (Param(f"cameras.{cam}.topic", DEFAULT_CAMERA_TOPICS[cam], f"topic of the {cam} camera"),
            Param(f"cameras.{cam}.type", "raw",
                  "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage, jpeg/png)"))


INPUT_PARAMETERS: tuple[Param, ...] = (
    *(p for cam in CAMERAS for p in _camera_params(cam)),
    Param("joint_states_topic", "/joint_states", "sensor_msgs/JointState topic"),
    Param("joint_names", None, "joint order of the observation vector (JointState messages are matched by name)"),
    Param("action.topic", "/forward_position_controller/commands", "topic of the commanded actions"),
    Param("action.type", "float64_multi_array", "float64_multi_array (values in action_names order), "
          "joint_trajectory (first point, by name) or joint_state (leader arm, by name)"),
    Param("action_names", None, "joint order of the action vector; unset = joint_names"),
    Param("reward.topic", "", "std_msgs Float32/Float64 reward topic; empty = sparse reward from the outcome"),
    Param("reward.type", "float32", "float32 or float64"),
    Param("max_age", 0.1, "a sample is skipped when a stream's newest message is older than this (s)"),
    Param("image_height", 84, "stored/model image height; 0 (with width 0) keeps the raw size"),
    Param("image_width", 84, "stored/model image width; 0 (with height 0) keeps the raw size"),
    Param("sync_policy", "newest", "newest (newest message per stream at a fixed rate) or approximate "
          "(cameras matched by message_filters ApproximateTimeSynchronizer)"),
    Param("approximate_slop", 0.02, "max stamp spread (s) of a camera set (approximate)"),
)

RECORDER_PARAMETERS: tuple[Param, ...] = (
    Param("output_dir", "recordings", "directory of the episode files episode_NNNN.hdf5"),
    Param("record_rate", 30.0, "samples per second (node clock)"),
    Param("auto_start", False, "start an episode at startup and after every time-out"),
    Param("max_episode_steps", 0, "samples after which an episode ends as a time-out; 0 = no limit"),
    Param("compression", "lzf", f"image compression: {', '.join(COMPRESSIONS)}"),
    Param("queue_size", 90, "samples the writer may lag behind before new samples are dropped"),
    Param("flush_period", 0.5, "seconds between flushes to disk (the most a hard kill can lose)"),
    Param("status_period", 5.0, "seconds between status messages"),
    Param("min_free_disk_mb", 500.0, "stop the episode cleanly when the disk has less free space (MB)"),
    Param("max_gap_periods", 3.0, "a pause longer than this many record periods between two samples "
          "is marked in the file (after_gap): no transition is made across it"),
)


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
    action_type: str  # key of messages.COMMAND_TYPES
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


@dataclass(frozen=True)
class RecorderParams:
    output_dir: Path
    record_rate: float
    auto_start: bool
    max_episode_steps: int  # 0 = no limit
    compression: str
    queue_size: int
    flush_period: float
    status_period: float
    min_free_disk_mb: float
    max_gap_periods: float


def _check_choice(name: str, value: str, choices: Any) -> None:
    if value not in choices:
        raise ParameterError(f"parameter '{name}' must be one of {sorted(choices)}, got {value!r}")


def _check_topic(name: str, topic: str) -> None:
    if not topic or any(ch.isspace() for ch in topic):
        raise ParameterError(f"parameter '{name}' must be a topic name, got {topic!r}")


def _string_array(values: Mapping[str, Any], name: str, required: bool) -> tuple[str, ...]:
    names = tuple(values.get(name) or ())
    if required and not names:
        raise ParameterError(f"parameter '{name}' is not set: give the joint order (see config/recorder.yaml)")
    if len(set(names)) != len(names):
        raise ParameterError(f"parameter '{name}' has duplicate entries: {list(names)}")
    return names


def input_params(values: Mapping[str, Any]) -> InputParams:
    """The input parameters from their values (INPUT_PARAMETERS names); ParameterError on bad ones."""
    cameras = []
    for cam in CAMERAS:
        topic, msg_type = values[f"cameras.{cam}.topic"], values[f"cameras.{cam}.type"]
        _check_choice(f"cameras.{cam}.type", msg_type, CAMERA_TYPES)
        _check_topic(f"cameras.{cam}.topic", topic)
        cameras.append(CameraInput(cam, topic, msg_type))
    _check_topic("joint_states_topic", values["joint_states_topic"])
    joint_names = _string_array(values, "joint_names", required=True)
    _check_choice("action.type", values["action.type"], COMMAND_TYPES)
    _check_topic("action.topic", values["action.topic"])
    action_names = _string_array(values, "action_names", required=False) or joint_names
    _check_choice("reward.type", values["reward.type"], REWARD_TYPES)
    if values["reward.topic"]:
        _check_topic("reward.topic", values["reward.topic"])
    max_age = float(values["max_age"])
    if not max_age > 0:
        raise ParameterError(f"parameter 'max_age' must be > 0 s, got {max_age}")
    height, width = int(values["image_height"]), int(values["image_width"])
    if (height == 0) != (width == 0) or height < 0 or width < 0:
        raise ParameterError(f"parameters 'image_height'/'image_width' must both be > 0 or both 0, "
                             f"got {height}x{width}")
    if values["sync_policy"] not in SYNC_POLICIES:
        raise ParameterError(f"parameter 'sync_policy' must be one of {list(SYNC_POLICIES)}, "
                             f"got {values['sync_policy']!r}")
    slop = float(values["approximate_slop"])
    if not slop > 0:
        raise ParameterError(f"parameter 'approximate_slop' must be > 0 s, got {slop}")
    return InputParams(
        cameras=tuple(cameras), joint_states_topic=values["joint_states_topic"], joint_names=joint_names,
        action_topic=values["action.topic"], action_type=values["action.type"], action_names=action_names,
        reward_topic=values["reward.topic"], reward_type=values["reward.type"], max_age=max_age,
        image_size=(height, width) if height else None, sync_policy=values["sync_policy"],
        approximate_slop=slop)


def recorder_params(values: Mapping[str, Any]) -> RecorderParams:
    """The recorder's own parameters from their values (RECORDER_PARAMETERS names); ParameterError
    on bad ones. Whether output_dir is writable is the caller's check."""
    params = RecorderParams(
        output_dir=Path(os.path.expanduser(values["output_dir"])), record_rate=float(values["record_rate"]),
        auto_start=bool(values["auto_start"]), max_episode_steps=int(values["max_episode_steps"]),
        compression=values["compression"], queue_size=int(values["queue_size"]),
        flush_period=float(values["flush_period"]), status_period=float(values["status_period"]),
        min_free_disk_mb=float(values["min_free_disk_mb"]), max_gap_periods=float(values["max_gap_periods"]))
    if not params.record_rate > 0:
        raise ParameterError(f"parameter 'record_rate' must be > 0 Hz, got {params.record_rate}")
    if params.max_episode_steps < 0:
        raise ParameterError(f"parameter 'max_episode_steps' must be >= 0, got {params.max_episode_steps}")
    _check_choice("compression", params.compression, COMPRESSIONS)
    if params.queue_size < 1:
        raise ParameterError(f"parameter 'queue_size' must be >= 1, got {params.queue_size}")
    if not params.flush_period >= 0:
        raise ParameterError(f"parameter 'flush_period' must be >= 0 s, got {params.flush_period}")
    if not params.status_period > 0:
        raise ParameterError(f"parameter 'status_period' must be > 0 s, got {params.status_period}")
    if not params.min_free_disk_mb >= 0:
        raise ParameterError(f"parameter 'min_free_disk_mb' must be >= 0, got {params.min_free_disk_mb}")
    if not params.max_gap_periods > 1:
        raise ParameterError(f"parameter 'max_gap_periods' must be > 1, got {params.max_gap_periods}")
    return params


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _typed(param: Param, value: Any, where: str) -> Any:
    """`value` if it has the parameter's type (ROS parameters are typed: 30 is no float), else ParameterError."""
    if param.default is None:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        expected = "a list of strings"
    else:
        kind = type(param.default)
        ok = type(value) is kind
        expected = {float: "a float (with a decimal point, e.g. 30.0)", int: "an integer", bool: "true or false",
                    str: "a string"}[kind]
    if not ok:
        raise ParameterError(f"{where}: parameter '{param.name}' is {value!r}, expected {expected}")
    return value


def read_parameter_file(path: str | Path, params: Sequence[Param], node_name: str = NODE_NAME) -> dict[str, Any]:
    """The values of `params` as ROS would set them from a `--params-file`: the file's sections for
    `/**` and for the node (in file order), over the defaults; typed like ROS parameters."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ParameterError(f"{path}: cannot read the parameter file ({exc})") from exc
    sections = [k for k in (tree or {}) if k in ("/**", node_name, f"/{node_name}", f"/**/{node_name}")]
    if not sections:
        raise ParameterError(f"{path}: no parameters for the {node_name} (expected a '/**' or '{node_name}' "
                             "section with ros__parameters)")
    given: dict[str, Any] = {}
    for section in sections:
        body = tree[section]
        if not isinstance(body, dict) or not isinstance(body.get("ros__parameters"), dict):
            raise ParameterError(f"{path}: section {section!r} has no ros__parameters mapping")
        given.update(_flatten(body["ros__parameters"]))
    known = {p.name: p for p in params}
    return {name: _typed(known[name], given[name], str(path)) if name in given else known[name].default
            for name in known}


def image_converter(msg_type: str, size: tuple[int, int] | None) -> Callable[[Any], np.ndarray]:
    """Image message of a camera `msg_type` (raw/compressed) -> RGB uint8 resized to `size` (None:
    as sent): what the recorder stores and what the policy node hands to the policy."""
    to_rgb = raw_image_to_rgb if msg_type == "raw" else compressed_image_to_rgb
    if size is None:
        return to_rgb
    return lambda msg: resize_image(to_rgb(msg), size)


def stream_caches(params: InputParams, with_actions: bool, with_reward: bool,
                  decode: Callable[[str, Any], Any] | None = None) -> dict[str, StreamCache]:
    """A cache per subscribed stream, converting its messages as the recorder does: images to RGB
    at the configured size, joints by name, commands of the configured type, the reward's `data`.
    A message that cannot be used raises InputError naming its topic when it is sampled.
    `decode(topic, raw)`: the message of what the cache holds (a bag's serialized bytes), when
    that is not the message itself."""
    def guard(topic: str, convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def run(raw: Any) -> Any:
            try:
                return convert(decode(topic, raw) if decode else raw)
            except ValueError as exc:
                raise InputError(f"topic {topic}: {exc}") from exc
        return run

    topics = params.topics(with_actions, with_reward)
    caches = {cam.name: StreamCache(cam.name, guard(cam.topic, image_converter(cam.msg_type, params.image_size)))
              for cam in params.cameras}
    caches[JOINT_STREAM] = StreamCache(JOINT_STREAM, guard(params.joint_states_topic, JointIndexer(params.joint_names)))
    if with_actions:
        names, msg_type = params.action_names, params.action_type
        caches[ACTION_STREAM] = StreamCache(
            ACTION_STREAM, guard(params.action_topic, lambda m: command_to_array(m, names, msg_type)))
    if REWARD_STREAM in topics:
        caches[REWARD_STREAM] = StreamCache(REWARD_STREAM, guard(params.reward_topic, lambda m: float(m.data)))
    return caches


def episode_config(inputs: InputParams, params: RecorderParams, episode: int) -> EpisodeConfig:
    """How the recorder sets up the file of episode number `episode` (streams, rate, flushes, metadata)."""
    topics = inputs.topics()
    return EpisodeConfig(
        joint_names=inputs.joint_names, action_names=inputs.action_names, rate_hz=params.record_rate,
        streams=tuple(topics), has_reward=REWARD_STREAM in topics, compression=params.compression,
        flush_every=max(1, round(params.flush_period * params.record_rate)),
        min_free_bytes=int(params.min_free_disk_mb * 1e6), max_gap=params.max_gap_periods / params.record_rate,
        attrs={"topics": json.dumps(topics), "max_age": inputs.max_age, "sync_policy": inputs.sync_policy,
               "action_type": inputs.action_type, "episode": episode, "max_gap_periods": params.max_gap_periods})


def episode_end_attrs(skipped: Mapping[str, int], nonfinite: Mapping[str, int], dropped: int) -> dict[str, Any]:
    """The counters the recorder stores when an episode ends (per stream, for this episode)."""
    return {"skipped": json.dumps(dict(skipped)), "nonfinite": json.dumps(dict(nonfinite)), "dropped": dropped}
