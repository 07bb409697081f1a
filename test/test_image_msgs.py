"""sensor_msgs image <-> RGB conversion: encodings, row padding, compressed images, errors."""
import array
import io

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image

from lapo_learning.messages import SUPPORTED_ENCODINGS
from lapo_ros.image_msgs import image_msg_to_rgb, rgb_to_image_msg

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)


def padded_msg(pixels: np.ndarray, encoding: str, pad: int) -> Image:
    """An Image with `pad` garbage bytes at the end of every row (step > width*channels)."""
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1)
    garbage = np.full((h, pad), 0xEE, dtype=np.uint8)
    data = array.array("B")
    data.frombytes(np.concatenate([rows, garbage], axis=1).tobytes())
    return Image(height=h, width=w, encoding=encoding, step=rows.shape[1] + pad, data=data)


def encoded(encoding: str) -> np.ndarray:
    alpha = np.full(RGB.shape[:2] + (1,), 77, dtype=np.uint8)
    return {
        "rgb8": RGB, "bgr8": RGB[..., ::-1],
        "rgba8": np.concatenate([RGB, alpha], axis=2),
        "bgra8": np.concatenate([RGB[..., ::-1], alpha], axis=2),
        "mono8": RGB[..., :1],
    }[encoding]


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_encodings_with_row_padding(encoding: str, pad: int) -> None:
    out = image_msg_to_rgb(padded_msg(np.ascontiguousarray(encoded(encoding)), encoding, pad))
    expected = np.repeat(RGB[..., :1], 3, axis=2) if encoding == "mono8" else RGB
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def test_last_row_may_omit_padding() -> None:
    msg = padded_msg(RGB, "rgb8", 4)
    msg.data = msg.data[:-4]
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)


@pytest.mark.parametrize("encoding", ["bgr16", "16UC1", "yuv422", "bayer_rggb8"])
def test_unsupported_encoding_is_named(encoding: str) -> None:
    msg = padded_msg(RGB, "rgb8", 0)
    msg.encoding = encoding
    with pytest.raises(ValueError, match=f"unsupported image encoding '{encoding}'.*rgb8"):
        image_msg_to_rgb(msg)


def test_short_data_and_bad_step_are_errors() -> None:
    msg = padded_msg(RGB, "rgb8", 0)
    msg.data = msg.data[:-10]
    with pytest.raises(ValueError, match="carries 95 bytes, expected 105"):
        image_msg_to_rgb(msg)
    msg = padded_msg(RGB, "rgb8", 0)
    msg.step = 20
    with pytest.raises(ValueError, match="step 20 < width\\*channels = 21"):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize("fmt,exact", [("png", True), ("jpeg", False)])
def test_compressed_images(fmt: str, exact: bool) -> None:
    smooth = np.repeat(np.repeat(RGB[:2, :2], 8, axis=0), 8, axis=1)  # JPEG-friendly blocks
    buf = io.BytesIO()
    PILImage.fromarray(smooth).save(buf, format=fmt.upper(), quality=95)
    data = array.array("B")
    data.frombytes(buf.getvalue())
    out = image_msg_to_rgb(CompressedImage(format=f"rgb8; {fmt} compressed rgb8", data=data))
    assert out.shape == smooth.shape and out.dtype == np.uint8
    if exact:
        np.testing.assert_array_equal(out, smooth)
    else:
        assert np.abs(out.astype(int) - smooth).mean() < 8  # lossy, chroma subsampled at edges


def test_undecodable_compressed_image_names_format() -> None:
    data = array.array("B", b"not an image at all")
    with pytest.raises(ValueError, match="cannot decode compressed image \\(format 'jpeg'\\)"):
        image_msg_to_rgb(CompressedImage(format="jpeg", data=data))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_rgb_to_image_msg_roundtrip(encoding: str) -> None:
    msg = rgb_to_image_msg(RGB, encoding, frame_id="cam")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, encoding)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), RGB)
    with pytest.raises(ValueError, match="rgb8 or bgr8"):
        rgb_to_image_msg(RGB, "mono8")


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_matches_cv_bridge(encoding: str) -> None:
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge is not installed here")
    cv2 = pytest.importorskip("cv2")
    msg = padded_msg(np.ascontiguousarray(encoded(encoding)), encoding, 3)
    ref = cv_bridge.CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    if ref.ndim == 2:
        ref = cv2.cvtColor(ref, cv2.COLOR_GRAY2RGB)
    np.testing.assert_array_equal(image_msg_to_rgb(msg), ref)
