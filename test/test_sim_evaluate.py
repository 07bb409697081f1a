"""The in-process evaluator's model of the node path's timing (lapo_ros.sim.evaluate), on the real
MuJoCo world and a checkpoint trained by the CLI: the start delay and the command delay."""
import os

os.environ.setdefault("MUJOCO_GL", "osmesa")

from collections import deque  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lapo_ros.sim.evaluate import SimEvalConfig, advance, build_parser, evaluate, main  # noqa: E402
from lapo_ros.sim.world import SimWorld, SimWorldConfig  # noqa: E402
from test_policy_node import train_checkpoint  # noqa: E402

MS = 1_000_000  # ns


@pytest.fixture(scope="module")
def world() -> SimWorld:
    w = SimWorld(SimWorldConfig(image_height=48, image_width=64))
    yield w
    w.close()


def test_a_command_drives_the_arms_from_its_time_to_the_physics_step(world: SimWorld) -> None:
    world.reset(1)
    hold = world.joint_positions()
    target = hold.copy()
    target[0] += 0.4
    world.step(hold, 4)  # due 8 ms into the period: 4 physics steps of 2 ms before it
    world.step(target, 6)
    expected = world.data.qpos.copy()

    world.reset(1)
    pending = deque([(108 * MS, target)])  # the period from 100 ms
    assert advance(world, hold, pending, 100 * MS) is target and not pending
    np.testing.assert_array_equal(world.data.qpos, expected)

    world.reset(1)
    later = deque([(120 * MS, target)])  # due when the next period starts: held over this one
    assert advance(world, hold, later, 100 * MS) is hold and len(later) == 1
    assert advance(world, hold, later, 120 * MS) is target and not later  # the whole next period
    two_periods = world.data.qpos.copy()
    world.reset(1)
    world.step(hold)
    world.step(target)
    np.testing.assert_array_equal(world.data.qpos, two_periods)


def test_commands_due_in_one_period_take_over_in_turn(world: SimWorld) -> None:
    world.reset(2)
    a, b, c = (world.joint_positions() + d for d in (0.1, 0.2, 0.3))
    world.step(a, 2)
    world.step(b, 5)
    world.step(c, 3)
    expected = world.data.qpos.copy()
    world.reset(2)
    pending = deque([(4 * MS, b), (14 * MS, c)])
    assert advance(world, a, pending, 0) is c and not pending
    np.testing.assert_array_equal(world.data.qpos, expected)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return train_checkpoint(tmp_path_factory.mktemp("eval_ckpt"))  # sim joint names, 20 Hz, 40x40


def test_delays_shift_the_episode_and_keep_its_length(checkpoint: Path) -> None:
    cfg = SimEvalConfig.from_config_files(render_size=(48, 64), image_size=(40, 40), time_limit=0.5,
                                          start_delay=0.0, command_delay=0.0)
    base, = evaluate(checkpoint, [7], cfg, progress=False)
    rested, = evaluate(checkpoint, [7], replace(cfg, start_delay=0.3), progress=False)
    late, = evaluate(checkpoint, [7], replace(cfg, command_delay=0.012), progress=False)
    # --eval_time counts from the policy's start: the same ticks at the checkpoint's 20 Hz (both ends)
    for r in (base, rested, late):
        assert r.sim_duration == pytest.approx(0.5) and r.commands == 11, r
    # The arms move differently when the policy starts from the rested pose or acts later.
    assert rested.max_joint_change != base.max_joint_change
    assert late.max_joint_change != base.max_joint_change
    assert evaluate(checkpoint, [7], replace(cfg, command_delay=0.012), progress=False) == [late]


def test_a_tripped_watchdog_does_not_carry_into_the_next_episode(checkpoint: Path) -> None:
    # A tracking bound no moving arm keeps: the watchdog stops the policy in every episode.
    cfg = SimEvalConfig.from_config_files(render_size=(48, 64), image_size=(40, 40), time_limit=1.0,
                                          tracking_max_error=1e-4, tracking_timeout=0.1)
    first, again = evaluate(checkpoint, [7, 7], cfg, progress=False)
    assert 0 < first.commands < 21  # stopped before the end (20 Hz for 1 s)
    assert again == first  # the same seed plays the same episode, the fault of the first forgotten


@pytest.mark.parametrize("flag", ["--start_delay", "--command_delay"])
def test_negative_delays_are_refused(flag: str, tmp_path: Path, capsys) -> None:
    assert flag in build_parser().format_help()
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(tmp_path / "x.pth"), "--out", str(tmp_path), flag, "-0.1"])
    assert f"{flag} must be >= 0" in capsys.readouterr().err
