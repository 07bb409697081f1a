"""Conversion between sensor_msgs images and uint8 RGB arrays (no cv_bridge needed).

Shared by the recorder and the policy node. `sensor_msgs/Image` rows may be padded (`step` larger
than width * channels); the padding is dropped. `CompressedImage` (jpeg/png) is decoded with PIL.
"""
from __future__ import annotations

import array
import io
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

# encoding -> (channels, conversion of the HxWxC array to RGB)
_ENCODINGS: dict[str, tuple[int, Any]] = {
    "rgb8": (3, lambda a: a),
    "bgr8": (3, lambda a: a[..., ::-1]),
    "rgba8": (4, lambda a: a[..., :3]),
    "bgra8": (4, lambda a: a[..., 2::-1]),
    "mono8": (1, lambda a: np.repeat(a, 3, axis=2)),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)


def image_msg_to_rgb(msg: Image | CompressedImage) -> np.ndarray:
    """A contiguous uint8 HxWx3 RGB copy of an Image or CompressedImage message.

    Raises ValueError naming the encoding/format when it is unsupported or the data is malformed.
    """
    if isinstance(msg, CompressedImage):
        return _compressed_to_rgb(msg)
    if not isinstance(msg, Image):
        raise ValueError(f"expected sensor_msgs/Image or CompressedImage, got {type(msg).__name__}")
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


def _compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    try:
        with PILImage.open(io.BytesIO(memoryview(msg.data))) as img:
            if img.format not in ("JPEG", "PNG"):
                raise ValueError(f"compressed image format {msg.format!r} decodes as {img.format}, "
                                 "expected jpeg or png")
            return np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError) as exc:  # PIL's errors for undecodable data
        raise ValueError(f"cannot decode compressed image (format {msg.format!r}): {exc}") from exc


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
