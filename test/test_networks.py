"""Image encoders chosen by name: shapes, size limits, and that spatial softmax finds positions."""
from __future__ import annotations

import pytest
import torch

from lapo_learning.networks import IMAGE_ENCODERS, SpatialSoftmax, build_image_encoder


def test_spatial_softmax_returns_the_position_of_a_peak() -> None:
    layer = SpatialSoftmax(channels=1, keypoints=1)
    with torch.no_grad():  # the keypoint map is the input itself, sharpened
        layer.keypoints.weight.fill_(1.0)
        layer.keypoints.bias.zero_()
        layer.log_temperature.fill_(-3.0)
    maps = torch.zeros(2, 1, 9, 17)
    maps[0, 0, 0, 16] = 1.0  # top right
    maps[1, 0, 6, 4] = 1.0  # row 6 of 0..8, column 4 of 0..16
    xy = layer(maps)
    assert xy.shape == (2, 2)
    torch.testing.assert_close(xy[0], torch.tensor([1.0, -1.0]), atol=1e-3, rtol=0)
    torch.testing.assert_close(xy[1], torch.tensor([-0.5, 0.5]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("name", [n for n in IMAGE_ENCODERS if n != "resnet18"])
def test_encoders_give_their_width_and_refuse_too_small_images(name: str) -> None:
    enc = build_image_encoder(name, (48, 64))
    out = enc(torch.rand(3, 3, 48, 64))
    assert out.shape == (3, enc.out_dim) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="too small"):
        build_image_encoder(name, (16, 16))
    with pytest.raises(ValueError, match="pretrained weights exist only for resnet18"):
        build_image_encoder(name, (48, 64), pretrained=True)


def test_random_crop_takes_whole_windows_and_inference_takes_the_centre() -> None:
    from lapo_learning.networks import center_crop, random_crop

    h, w = 10, 12
    index = torch.arange(h * w, dtype=torch.int64).view(1, h, w, 1)
    images = (index % 251).to(torch.uint8).expand(64, h, w, 3).contiguous()
    crops = random_crop(images, (8, 9), torch.Generator().manual_seed(0))
    assert crops.shape == (64, 8, 9, 3)
    tops_lefts = set()
    for c in crops:  # every crop is one contiguous window of the image
        top, left = divmod(int(c[0, 0, 0]), w)
        torch.testing.assert_close(c, images[0, top:top + 8, left:left + 9])
        tops_lefts.add((top, left))
    assert len(tops_lefts) > 5  # and the windows vary between samples
    torch.testing.assert_close(center_crop(images[:1], (8, 9)), images[:1, 1:9, 1:10])


def test_random_shift_is_a_window_of_the_replicate_padded_image() -> None:
    from lapo_learning.networks import random_shift

    h, w, pad = 10, 12, 4
    index = torch.arange(h * w, dtype=torch.int64).view(1, h, w, 1)
    images = (index % 251).to(torch.uint8).expand(64, h, w, 3).contiguous()
    shifted = random_shift(images, pad, torch.Generator().manual_seed(0))
    assert shifted.dtype == torch.uint8 and shifted.shape == images.shape
    padded = torch.nn.functional.pad(images[:1].permute(0, 3, 1, 2).float(), (pad,) * 4, mode="replicate")
    padded = padded.permute(0, 2, 3, 1).to(torch.uint8)[0]
    offsets = set()
    for s in shifted:  # each sample is the whole h x w window of the padded image at some offset
        match = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.equal(s, padded[dy:dy + h, dx:dx + w])]
        assert match, "a shifted image that is no window of the replicate-padded image"
        offsets.add(match[0])
    assert len(offsets) > 20  # and the offsets vary between samples
    torch.testing.assert_close(random_shift(images, pad, torch.Generator().manual_seed(0)), shifted)
    assert random_shift(images, 0) is images


def test_agent_with_random_crop_trains_on_windows_and_acts_on_the_centre(sample_file) -> None:
    import numpy as np

    from lapo_learning.agent import AgentConfig
    from lapo_learning.bc_agent import BCAgent
    from lapo_learning.dataset import load_dataset
    from lapo_learning.replay import ReplayBuffer, fit_statistics

    ds = load_dataset(sample_file)
    episodes = np.arange(ds.n_episodes)
    stats = fit_statistics(ds, ds.episode_indices(episodes))
    agent = BCAgent(ds.schema, AgentConfig(algo="bc", augment_crop=0.9), "cpu")
    assert agent.view_size == (36, 36) and ds.schema.image_size == (40, 40)
    batch = ReplayBuffer(ds, episodes, stats, "cpu", seed=0).sample(8)
    assert np.isfinite(agent.train_step(batch)["bc_loss"])
    images = [torch.from_numpy(ds.images[c][:2]) for c in ds.schema.cameras]
    joint = torch.zeros(2, ds.schema.joint_dim)
    torch.testing.assert_close(agent.act(images, joint), agent.act(images, joint))  # no randomness at inference
    with pytest.raises(ValueError, match="augment_crop"):
        AgentConfig(augment_crop=1.5)
