"""sensor_msgs images to and from uint8 RGB arrays (no cv_bridge needed).

Shared by the recorder and the policy node; the conversion itself is ROS-free
(`lapo_learning.messages`, also used by `convert from-rosbag2`), this module adds the ROS types.
"""
from __future__ import annotations

import array
from typing import Any

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from lapo_learning.messages import compressed_image_to_rgb, raw_image_to_rgb


def image_msg_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """A contiguous uint8 HxWx3 RGB copy of an Image or CompressedImage message.

    Raises ValueError naming the encoding/format when it is unsupported or the data is malformed.
    """
    if isinstance(msg, CompressedImage):
        return compressed_image_to_rgb(msg)
    if not isinstance(msg, Image):
        raise ValueError(f"expected sensor_msgs/Image or CompressedImage, got {type(msg).__name__}")
    return raw_image_to_rgb(msg)


def rgb_to_image_msg(rgb: np.ndarray, encoding: str = "rgb8", stamp: Any = None,
                     frame_id: str = "") -> Image:
    """An Image message from a uint8 HxWx3 RGB array, in `encoding` (rgb8 or bgr8), no row padding."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 array, got {rgb.dtype} {rgb.shape}")
    if encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"rgb_to_image_msg writes rgb8 or bgr8, not {encoding!r}")
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = encoding
    msg.step = msg.width * 3
    pixels = rgb if encoding == "rgb8" else rgb[..., ::-1]
    # The `data` setter iterates element by element on plain bytes; array.array is copied at once.
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).tobytes())
    msg.data = data
    return msg
