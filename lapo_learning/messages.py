"""The contents of ROS messages as arrays, without ROS: images to uint8 RGB, joints by name.

Duck-typed on the messages' field names, so the same code converts the messages rclpy delivers to
the recorder and policy nodes and those `rosbags` deserializes from a bag (`convert from-rosbag2`).
`sensor_msgs/Image` rows may be padded (`step` larger than width * channels); the padding is
dropped. `CompressedImage` (jpeg/png) is decoded with PIL. `/joint_states` order depends on the
broadcaster's configuration, so JointState messages are indexed by name; Float64MultiArray carries
no names and must already be in the configured order.
"""
from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image as PILImage

# encoding -> (channels, conversion of the HxWxC array to RGB)
_ENCODINGS: dict[str, tuple[int, Callable[[np.ndarray], np.ndarray]]] = {
    "rgb8": (3, lambda a: a),
    "bgr8": (3, lambda a: a[..., ::-1]),
    "rgba8": (4, lambda a: a[..., :3]),
    "bgra8": (4, lambda a: a[..., 2::-1]),
    "mono8": (1, lambda a: np.repeat(a, 3, axis=2)),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
# Command message types by the names the `action.type` parameter uses (and their ROS type names).
COMMAND_TYPES: dict[str, str] = {
    "float64_multi_array": "std_msgs/msg/Float64MultiArray",
    "joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
    "joint_state": "sensor_msgs/msg/JointState",
}


def raw_image_to_rgb(msg: Any) -> np.ndarray:
    """A contiguous uint8 HxWx3 RGB copy of a sensor_msgs/Image; ValueError naming the encoding
    when it is unsupported or the data is malformed."""
    enc = msg.encoding.lower()
    if enc not in _ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r} "
                         f"(supported: {', '.join(SUPPORTED_ENCODINGS)})")
    channels, to_rgb = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels
    if h <= 0 or w <= 0:
        raise ValueError(f"image ({msg.encoding}) has an empty size {h}x{w}")
    if step < row:
        raise ValueError(f"image ({msg.encoding}, {h}x{w}) has step {step} < width*channels = {row}")
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    if buf.size < step * (h - 1) + row:
        raise ValueError(f"image ({msg.encoding}, {h}x{w}, step {step}) carries {buf.size} bytes, "
                         f"expected {step * h}")
    # Rows are `step` bytes apart; a strided view skips the padding without an intermediate copy.
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    return np.ascontiguousarray(to_rgb(rows.reshape(h, w, channels)))


def compressed_image_to_rgb(msg: Any) -> np.ndarray:
    """uint8 HxWx3 RGB of a sensor_msgs/CompressedImage (jpeg or png); ValueError when it is neither."""
    try:
        with PILImage.open(io.BytesIO(memoryview(msg.data))) as img:
            if img.format not in ("JPEG", "PNG"):
                raise ValueError(f"compressed image format {msg.format!r} decodes as {img.format}, "
                                 "expected jpeg or png")
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError) as exc:  # PIL's errors for undecodable data
        raise ValueError(f"cannot decode compressed image (format {msg.format!r}): {exc}") from exc


def _name_order(msg_names: Sequence[str], joint_names: Sequence[str], what: str) -> np.ndarray:
    """Index into the message's arrays of every configured joint; error on missing/unknown names."""
    where = {name: i for i, name in enumerate(msg_names)}
    if len(where) != len(msg_names):
        raise ValueError(f"{what} has duplicate joint names: {list(msg_names)}")
    missing = [n for n in joint_names if n not in where]
    unknown = [n for n in msg_names if n not in set(joint_names)]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"lacks configured joints {missing}")
        if unknown:
            parts.append(f"has unknown joints {unknown}")
        raise ValueError(f"{what} " + " and ".join(parts) +
                         f" (configured joint_names: {list(joint_names)})")
    return np.fromiter((where[n] for n in joint_names), dtype=np.int64, count=len(joint_names))


class JointIndexer:
    """Maps JointState messages to float32[J] in the configured joint order.

    The name -> index mapping is computed once per distinct name list (publishers keep theirs).
    """

    def __init__(self, joint_names: Sequence[str]) -> None:
        if not joint_names:
            raise ValueError("joint_names is empty")
        self.joint_names = tuple(joint_names)
        self._cached_names: tuple[str, ...] | None = None
        self._order = np.zeros(0, dtype=np.int64)

    def __call__(self, msg: Any) -> np.ndarray:
        names = tuple(msg.name)
        if names != self._cached_names:
            self._order = _name_order(names, self.joint_names, "JointState")
            self._cached_names = names
        position = np.asarray(msg.position, dtype=np.float64)
        if len(position) != len(names):
            raise ValueError(f"JointState has {len(names)} names but {len(position)} positions")
        return position[self._order].astype(np.float32)


def command_to_array(msg: Any, joint_names: Sequence[str], msg_type: str) -> np.ndarray:
    """float32[J] of a command of type `msg_type` (a COMMAND_TYPES name), in joint order."""
    if msg_type == "joint_state":
        return JointIndexer(joint_names)(msg)
    if msg_type == "float64_multi_array":
        if len(msg.data) != len(joint_names):
            raise ValueError(f"Float64MultiArray command has {len(msg.data)} values, "
                             f"expected {len(joint_names)} (one per joint in {list(joint_names)})")
        return np.asarray(msg.data, dtype=np.float32)
    if msg_type == "joint_trajectory":
        if not msg.points:
            raise ValueError("JointTrajectory command has no points")
        point = msg.points[0]
        if len(point.positions) != len(msg.joint_names):
            raise ValueError(f"JointTrajectory has {len(msg.joint_names)} joint_names but its first "
                             f"point has {len(point.positions)} positions")
        order = _name_order(tuple(msg.joint_names), joint_names, "JointTrajectory")
        return np.asarray(point.positions, dtype=np.float64)[order].astype(np.float32)
    raise ValueError(f"unsupported command type {msg_type!r}, expected one of {sorted(COMMAND_TYPES)}")
