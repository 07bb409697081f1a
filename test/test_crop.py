"""Per-camera crops in the observation schema: one definition, the same pixels at record, load and
policy time (real image messages, real HDF5 episodes, a real trained checkpoint)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lapo_learning import load_policy
from lapo_learning.dataset import load_dataset
from lapo_learning.episode_writer import EpisodeConfig, EpisodeWriter
from lapo_learning.recording import image_converter
from lapo_learning.schema import CAMERAS, ObservationSchema, check_crop, crop_image, parse_crop
from lapo_ros.image_msgs import rgb_to_image_msg

from learning_fixtures import run_train

NAMES = [f"j{i}" for i in range(4)]
RAW = (96, 128)  # what the cameras send
STORED = (60, 80)  # what the recorder stores (its image_height/image_width)
CROPS = {"global_image": (0.25, 0.5, 0.5, 0.375), "left_image": (0.0, 0.0, 1.0, 0.5)}


def test_crop_box_is_in_fractions_of_any_image_size() -> None:
    img = np.arange(100 * 200 * 3, dtype=np.uint32).reshape(100, 200, 3).astype(np.uint8)
    box = (0.1, 0.25, 0.5, 0.5)
    np.testing.assert_array_equal(crop_image(img, box), img[10:60, 50:150])
    half = img[::2, ::2]  # the same scene at half the size: the same part of it
    assert crop_image(half, box).shape == (25, 50, 3)
    assert crop_image(img, (0, 0, 1, 1)).shape == img.shape
    assert crop_image(img, (0.999, 0.999, 0.001, 0.001)).shape == (1, 1, 3)  # never empty
    for bad in ((0.5, 0.0, 0.6, 1.0), (-0.1, 0, 0.5, 0.5), (0, 0, 0, 0.5), (0, 0, 1)):
        with pytest.raises(ValueError, match="crop of global_image"):
            check_crop("global_image", bad)
    assert parse_crop(["global_image", "0.1", "0.25", "0.5", "0.5"]) == ("global_image", box)
    with pytest.raises(ValueError, match="--crop global_image x 0 1 1: TOP LEFT HEIGHT WIDTH must be numbers"):
        parse_crop(["global_image", "x", "0", "1", "1"])
    with pytest.raises(ValueError, match="crop of global_image"):
        parse_crop(["global_image", "0.5", "0", "0.6", "1"])


def test_schema_carries_crops_and_rejects_unknown_cameras() -> None:
    schema = ObservationSchema(image_size=(40, 40), joint_names=NAMES, action_names=NAMES, crops=CROPS)
    again = ObservationSchema.from_json(schema.to_json())
    assert again == schema and again.crops["global_image"] == CROPS["global_image"]
    old = schema.to_dict()
    del old["crops"]  # schemas written before crops existed: whole images
    assert ObservationSchema.from_dict(old).crops == {}
    with pytest.raises(ValueError, match="crops name cameras \\['wrist'\\]"):
        ObservationSchema(image_size=(40, 40), joint_names=NAMES, action_names=NAMES, crops={"wrist": (0, 0, 1, 1)})
    frame = np.random.default_rng(0).integers(0, 256, (*STORED, 3), dtype=np.uint8)
    out = schema.preprocess("global_image", frame)
    assert out.shape == (40, 40, 3)
    assert not np.array_equal(out, schema.preprocess("right_image", frame))  # right_image: whole frame


def _frames(k: int) -> dict[str, np.ndarray]:
    """Camera frames whose every pixel differs per camera, step and position (no two crops alike)."""
    rng = np.random.default_rng(k)
    return {cam: rng.integers(0, 256, (*RAW, 3), dtype=np.uint8) for cam in CAMERAS}


def _record(path: Path, steps: int, first: int, convert) -> None:
    """What the recorder does with each sample: the inputs' conversion, then the episode writer."""
    writer = EpisodeWriter(path, EpisodeConfig(joint_names=NAMES, action_names=NAMES, rate_hz=30.0,
                                               streams=[*CAMERAS, "joint", "action"], has_reward=False))
    for k in range(first, first + steps):
        images = {cam: convert(rgb_to_image_msg(frame)) for cam, frame in _frames(k).items()}
        joint = np.full(4, 0.01 * k, np.float32)
        writer.append(images=images, joint=joint, action=joint + 0.1, reward=None, timestamp=k / 30.0,
                      stamps={s: k / 30.0 for s in [*CAMERAS, "joint", "action"]})
    writer.close("success")


def test_recorder_loader_and_policy_see_the_same_pixels(tmp_path: Path) -> None:
    convert = image_converter("raw", STORED)  # the recorder's and the policy node's conversion
    data = tmp_path / "episodes"
    data.mkdir()
    for e in range(2):
        _record(data / f"episode_{e:04d}.hdf5", 12, 100 * e, convert)

    ds = load_dataset(data, image_size=(40, 40), crops=CROPS)
    assert ds.schema.crops == CROPS
    # Loader: the stored frame cropped (fractions of the stored size), then resized.
    stored = convert(rgb_to_image_msg(_frames(0)["global_image"]))
    top, left = round(0.25 * STORED[0]), round(0.5 * STORED[1])
    expected = ObservationSchema(image_size=(40, 40), joint_names=NAMES, action_names=NAMES).preprocess(
        "global_image", stored[top:top + 30, left:left + 30])
    np.testing.assert_array_equal(ds.images["global_image"][0], expected)

    run = run_train(data, tmp_path / "results", "crop", 2, "--crop", "global_image", *map(str, CROPS["global_image"]),
                    "--crop", "left_image", *map(str, CROPS["left_image"]), "--action_chunk", "3")
    policy = load_policy(run / "model_final_lapo.pth")
    assert policy.schema.crops == CROPS  # the checkpoint carries the crops

    # Policy node: the same messages through the same conversion, then select_action's preprocessing.
    live = [{cam: convert(rgb_to_image_msg(f)) for cam, f in _frames(k).items()} for k in (0, 105)]
    chunks = policy.predict_chunks(*([obs[cam] for obs in live] for cam in CAMERAS), ds.joint[[0, 17]])
    with torch.inference_mode():
        images = [torch.from_numpy(ds.images[cam][[0, 17]]) for cam in CAMERAS]
        joint = torch.from_numpy(policy.stats.joint.normalize(ds.joint[[0, 17]]))
        from_dataset = policy.stats.chunks_from_targets(policy.agent.act(images, joint).numpy(), ds.joint[[0, 17]])
    np.testing.assert_array_equal(chunks, from_dataset)
