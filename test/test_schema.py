"""The observation schema: resize, normalisation, serialisation and mismatch reports."""
from __future__ import annotations

import numpy as np
import pytest

from lapo_learning.schema import DatasetStatistics, Normalizer, ObservationSchema, SchemaMismatch, resize_image

NAMES = tuple(f"vx300s_left/j{i}" for i in range(16))


def test_resize_image_shape_and_content():
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 320:] = 200  # right half bright
    out = resize_image(img, (84, 84))
    assert out.shape == (84, 84, 3) and out.dtype == np.uint8
    assert out[:, :40].max() == 0 and out[:, 44:].min() == 200
    assert resize_image(out, (84, 84)) is out  # already the right size: no copy, no filtering
    with pytest.raises(ValueError, match="expected a uint8 HxWx3 image"):
        resize_image(img.astype(np.float32), (84, 84))
    with pytest.raises(ValueError, match="expected a uint8 HxWx3 image"):
        resize_image(img[..., 0], (84, 84))


def test_normalizer_clips_and_round_trips():
    data = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 4)).astype(np.float32)
    data[:, 3] = 5.0  # a constant dimension must not divide by zero
    norm = Normalizer.fit(data)
    z = norm.normalize(data)
    assert np.isfinite(z).all() and np.abs(z[:, :3].mean(axis=0)).max() < 1e-3
    np.testing.assert_allclose(norm.unnormalize(z)[:, :3], data[:, :3], rtol=1e-4, atol=1e-4)
    assert norm.normalize(np.full(4, 1e6, np.float32)).max() == 10.0
    again = Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.mean, norm.mean)


def test_schema_json_round_trip_and_mismatches():
    schema = ObservationSchema(image_size=(84, 84), joint_names=NAMES, action_names=NAMES, rate_hz=30.0)
    assert ObservationSchema.from_json(schema.to_json()) == schema
    other = ObservationSchema(image_size=(96, 128), joint_names=NAMES[:15] + ("x",), action_names=NAMES)
    problems = schema.mismatches(other)
    assert problems == ["joint_names differ at 15: 'vx300s_left/j15' != 'x'"]
    assert schema.mismatches(other, check_image_size=True)[-1] == "image_size (84, 84) != (96, 128)"
    short = ObservationSchema(image_size=(84, 84), joint_names=NAMES[:14], action_names=NAMES)
    with pytest.raises(SchemaMismatch, match="robot config: joint_names: 16 entries != 14 entries"):
        schema.require_compatible(short, "robot config")
    generic = ObservationSchema(image_size=(84, 84), joint_names=ObservationSchema.default_names("joint", 16),
                                action_names=ObservationSchema.default_names("action", 16))
    assert schema.mismatches(generic) == []  # a dataset without names cannot be checked by name
    with pytest.raises(ValueError, match="duplicates"):
        ObservationSchema(image_size=(84, 84), joint_names=("a", "a"), action_names=("a", "b"))


def test_statistics_round_trip():
    norm = Normalizer(mean=np.zeros(2), std=np.ones(2))
    stats = DatasetStatistics(joint=norm, action=norm, action_min=np.array([-1, -2]), action_max=np.array([1, 2]),
                              reward_scale=4.0, extra={"value_range": [0.0, 1.0]})
    again = DatasetStatistics.from_dict(stats.to_dict())
    assert again.reward_scale == 4.0 and again.extra == {"value_range": [0.0, 1.0]}
    np.testing.assert_array_equal(again.action_max, [1, 2])


def test_relative_actions_pair_joints_by_name_and_round_trip():
    joints = ("a", "b", "c")
    schema = ObservationSchema(image_size=(8, 8), joint_names=joints, action_names=("c", "a"))
    assert schema.action_joint_index() == (2, 0)
    generic = ObservationSchema(image_size=(8, 8), joint_names=ObservationSchema.default_names("joint", 3),
                                action_names=ObservationSchema.default_names("action", 3))
    assert generic.action_joint_index() == (0, 1, 2)
    with pytest.raises(SchemaMismatch, match=r"\['d'\] not among joint_names \['a', 'b', 'c'\]"):
        ObservationSchema(image_size=(8, 8), joint_names=joints, action_names=("a", "d")).action_joint_index()

    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 3)).astype(np.float32)
    actions = q[:, [2, 0]] + rng.normal(0.0, 0.01, size=(50, 2)).astype(np.float32)  # small moves
    delta = actions - q[:, [2, 0]]
    stats = DatasetStatistics(joint=Normalizer.fit(q), action=Normalizer.fit(delta), action_min=actions.min(0),
                              action_max=actions.max(0), action_joint_index=(2, 0))
    targets = stats.action_targets(actions[:, None], q)
    np.testing.assert_allclose(targets, Normalizer.fit(delta).normalize(delta), atol=1e-6)
    assert targets.std(axis=0).min() > 0.9  # the motion, not the position, fills the target's range
    np.testing.assert_allclose(stats.chunks_from_targets(targets, q)[:, 0], actions, atol=1e-5)
    again = DatasetStatistics.from_dict(stats.to_dict())
    assert again.action_joint_index == (2, 0)
    old = stats.to_dict()
    del old["action_joint_index"]  # checkpoints from before relative actions
    assert DatasetStatistics.from_dict(old).action_joint_index is None


def test_relative_action_chunks_are_relative_to_the_first_step_and_round_trip():
    rng = np.random.default_rng(1)
    q = rng.normal(size=(20, 3)).astype(np.float32)
    chunks = q[:, None, [2, 0]] + rng.normal(0.0, 0.1, size=(20, 4, 2)).astype(np.float32)
    flat = (chunks - q[:, None, [2, 0]]).reshape(20, 8)
    stats = DatasetStatistics(joint=Normalizer.fit(q), action=Normalizer.fit(flat), action_min=chunks.min((0, 1)),
                              action_max=chunks.max((0, 1)), action_joint_index=(2, 0))
    targets = stats.action_targets(chunks, q)
    assert targets.shape == (20, 8)
    np.testing.assert_allclose(targets, Normalizer.fit(flat).normalize(flat), atol=1e-6)
    np.testing.assert_allclose(stats.chunks_from_targets(targets, q), chunks, atol=1e-5)
