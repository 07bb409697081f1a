"""SimWorld on the real gym-aloha MuJoCo scene (CPU rendering through OSMesa)."""
import os

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lapo_ros.sim.world import (  # noqa: E402
    CAMERAS, CUBE_HALF_SIZE, CUBE_X_RANGE, CUBE_Y_RANGE, NUM_JOINTS, SimWorld, SimWorldConfig,
)

HOME = np.array([0, -0.96, 1.16, 0, -0.3, 0, 0.024, -0.024] * 2)  # the scene's keyframe


@pytest.fixture(scope="module")
def world() -> SimWorld:
    w = SimWorld(SimWorldConfig(image_height=48, image_width=64))
    yield w
    w.close()


def test_joint_names_and_home_pose(world: SimWorld) -> None:
    names = world.joint_names()
    assert len(names) == NUM_JOINTS == len(set(names))
    assert names[0] == "left_waist" and names[8] == "right_waist" and names[15] == "right_right_finger"
    assert all("/" not in n for n in names)
    world.reset(0)
    np.testing.assert_allclose(world.joint_positions(), HOME, atol=1e-6)


def test_reset_places_cube_from_seed(world: SimWorld) -> None:
    world.reset(3)
    first = world.cube_pose()
    world.reset(3)
    np.testing.assert_array_equal(world.cube_pose(), first)
    world.reset(4)
    assert not np.allclose(world.cube_pose()[:2], first[:2])
    for seed in range(10):
        world.reset(seed)
        x, y, z = world.cube_pose()[:3]
        assert CUBE_X_RANGE[0] <= x <= CUBE_X_RANGE[1] and CUBE_Y_RANGE[0] <= y <= CUBE_Y_RANGE[1]
        assert z == pytest.approx(CUBE_HALF_SIZE)
        assert world.reward() == 0 and not world.success()


def test_step_tracks_position_command_and_advances_time(world: SimWorld) -> None:
    world.reset(0)
    target = HOME.copy()
    target[0] += 0.4  # left waist
    target[9] -= 0.2  # right shoulder
    for _ in range(50):  # 1 s
        world.step(target)
    assert world.time == pytest.approx(50 * 0.02)
    q = world.joint_positions()
    assert q[0] == pytest.approx(target[0], abs=0.03)
    assert q[9] == pytest.approx(target[9], abs=0.03)
    np.testing.assert_allclose(q[[1, 2, 8, 10]], HOME[[1, 2, 8, 10]], atol=0.03)
    # The cube did not move: nothing touched it.
    assert world.cube_pose()[2] == pytest.approx(CUBE_HALF_SIZE, abs=1e-3)


def test_step_can_advance_part_of_a_control_period(world: SimWorld) -> None:
    """A command arriving mid-period (the evaluator's command_delay) drives the last substeps."""
    world.reset(0)
    target = HOME.copy()
    target[0] += 0.4
    world.step(HOME, 4)
    assert world.time == pytest.approx(4 * 0.002)
    world.step(target, 6)
    split = world.data.qpos.copy()
    world.reset(0)
    world.step(target)
    assert world.time == pytest.approx(0.02)
    assert world.data.qpos[0] > split[0] > HOME[0]  # 6 of 10 substeps pulling: between
    with pytest.raises(ValueError, match="substeps"):
        world.step(HOME, 0)


def test_success_held_counts_an_unbroken_hand_over(world: SimWorld) -> None:
    """A scripted hand-over stays complete for longer than the sim's success_hold (0.5 s), counted
    by steps; the count stops as soon as the state breaks (here: the cube put back on the table)."""
    from lapo_ros.sim.demonstrator import ScriptedDemonstrator

    demo = ScriptedDemonstrator(model=world.model)
    world.reset(11)
    demo.plan(world.cube_pose(), world.joint_positions(), seed=11)
    held = []
    while not demo.done:
        command = demo.next_command(world.cube_pose())
        world.step(command)
        held.append(world.success_held())
    assert held[0] == -1 and held[-1] >= 0.5, max(held)
    holding = np.array(held[held.index(0.0):])
    np.testing.assert_allclose(holding, 0.02 * np.arange(len(holding)), atol=1e-9)  # one step each
    cube = world.model.jnt_qposadr[world.model.joint("red_box_joint").id]
    world.data.qpos[cube:cube + 3] = (0.1, 0.5, CUBE_HALF_SIZE)
    world.step(command)
    assert world.success_held() == -1 and not world.success()
    world.reset(11)
    assert world.success_held() == -1


def test_step_clips_to_limits_and_rejects_bad_commands(world: SimWorld) -> None:
    world.reset(0)
    _, high = world.joint_limits()
    command = HOME.copy()
    command[6] = 1.0  # far beyond the finger range
    for _ in range(25):
        world.step(command)
    assert world.joint_positions()[6] <= high[6] + 1e-3
    with pytest.raises(ValueError):
        world.step(np.zeros(14))
    with pytest.raises(ValueError):
        world.step(np.full(NUM_JOINTS, np.nan))


def test_render_all_cameras(world: SimWorld) -> None:
    world.reset(0)
    images = {cam: world.render(cam) for cam in CAMERAS}
    for cam, img in images.items():
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8, cam
        assert img.std() > 5, f"{cam} looks blank"
    assert not np.array_equal(images["left_wrist"], images["top"])
    assert not np.array_equal(images["left_wrist"], images["right_wrist"])
    # The red cube is visible from the overhead camera and moves with the seed.
    red = lambda img: (img[..., 0] > 120) & (img[..., 1] < 60) & (img[..., 2] < 60)  # noqa: E731
    mask0 = red(images["top"])
    assert mask0.sum() > 0
    world.reset(7)
    mask7 = red(world.render("top"))
    assert mask7.sum() > 0 and not np.array_equal(mask0, mask7)
    with pytest.raises(ValueError):
        world.render("front_close")


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="multiple of the physics timestep"):
        SimWorld(SimWorldConfig(control_dt=0.025))
    with pytest.raises(ValueError, match="image size"):
        SimWorld(SimWorldConfig(image_height=2))
