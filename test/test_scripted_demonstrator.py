"""The scripted demonstrator really transfers the cube in MuJoCo, and fails when told to."""
import os

os.environ.setdefault("MUJOCO_GL", "osmesa")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lapo_ros.sim.demonstrator import (  # noqa: E402
    FAILURE_MODES, LOOK_T, MAX_GRASP_JITTER, ArmIK, DemonstratorConfig, ScriptedDemonstrator, run_episode,
)
from lapo_ros.sim.world import SimWorld, SimWorldConfig  # noqa: E402

ARM_JOINTS = np.r_[0:6, 8:14]


@pytest.fixture(scope="module")
def world() -> SimWorld:
    w = SimWorld(SimWorldConfig(image_height=8, image_width=8))  # physics only
    yield w
    w.close()


def test_noise_free_demonstrations_succeed(world: SimWorld) -> None:
    demo = ScriptedDemonstrator(model=world.model)
    results = [run_episode(world, demo, seed) for seed in (11, 12, 13, 14)]
    assert all(r.success and r.max_reward == 4 and r.failure_mode is None for r in results), results


def test_reward_stages_come_in_order(world: SimWorld) -> None:
    demo = ScriptedDemonstrator(model=world.model)
    world.reset(21)
    demo.plan(world.cube_pose(), world.joint_positions(), seed=21)
    rewards = []
    while not demo.done:
        world.step(demo.next_command(world.cube_pose()))
        rewards.append(world.reward())
    first4 = rewards.index(4)
    assert 1 in rewards[:first4] and 2 in rewards[:first4]
    # The carry to the hand-over point: lifted (stage 2) for a good second without a break.
    longest, run = 0, 0
    for r in rewards[:first4]:
        run = run + 1 if r == 2 else 0
        longest = max(longest, run)
    assert longest >= 50
    assert world.success()
    assert world.cube_pose()[2] > 0.15  # held up in the air by the left arm


# The highest stage reward (world.py) each failure mode reaches: grasp_offset never touches the
# cube; the others lift it (2) and drop it without the left gripper ever touching it (3).
MODE_STAGE = {"grasp_offset": 0, "early_release": 2, "left_miss": 2, "wrong_height": 2}


def play(world: SimWorld, demo: ScriptedDemonstrator, seed: int) -> tuple[np.ndarray, list[int]]:
    """One episode: the commands and the stage reward after each of them."""
    world.reset(seed)
    demo.plan(world.cube_pose(), world.joint_positions(), seed=seed)
    commands, rewards = [], []
    while not demo.done:
        commands.append(demo.next_command(world.cube_pose()))
        world.step(commands[-1])
        rewards.append(world.reward())
    return np.array(commands), rewards


@pytest.mark.parametrize("mode", FAILURE_MODES)
def test_each_failure_mode_fails_as_designed(world: SimWorld, mode: str) -> None:
    assert set(MODE_STAGE) == set(FAILURE_MODES)
    clean = ScriptedDemonstrator(model=world.model)
    botched = ScriptedDemonstrator(DemonstratorConfig(failure_prob=1.0, failure_mode=mode), model=world.model)
    for seed in (1, 2, 3):
        good_commands, good_rewards = play(world, clean, seed)
        assert world.success() and max(good_rewards) == 4
        commands, rewards = play(world, botched, seed)
        assert botched.failure_mode == mode
        assert not world.success() and max(rewards) == MODE_STAGE[mode], (seed, max(rewards))
        assert world.cube_pose()[2] < 0.03  # back on the table
        # Looks competent: as long and as smooth as the good plan (no jitter, no jump).
        assert commands.shape == good_commands.shape
        steps = np.abs(np.diff(commands[:, ARM_JOINTS], axis=0)).max()
        assert steps < 0.05 and steps < 1.5 * np.abs(np.diff(good_commands[:, ARM_JOINTS], axis=0)).max()
        if MODE_STAGE[mode] == 2:
            dropped_at = (max(i for i, r in enumerate(rewards) if r == 2) + 1) * DemonstratorConfig().control_dt
            if mode == "early_release":  # before the left gripper reaches the hand-over point at 4.4 s
                assert 3.7 < dropped_at < 4.4, dropped_at
            else:  # held at the hand-over until the right gripper lets go at 5.2 s
                assert dropped_at > 5.2, dropped_at


def test_failure_modes_are_consistent_mistakes(world: SimWorld) -> None:
    """Each botched plan makes the same mistake on every cube pose: the right gripper closes 7 cm
    short of the cube (the good plan closes on it); left_miss and wrong_height hand over at one
    wrong place, the same for every seed."""
    ik = ArmIK(world.model, "right")
    close_tick = int(2.4 / DemonstratorConfig().control_dt)
    # A fixed hand-over point (no meet_jitter): the mistakes are then the same joint commands each time.
    demo = {mode: ScriptedDemonstrator(DemonstratorConfig(failure_prob=1.0, failure_mode=mode, meet_jitter=0.0),
                                       model=world.model)
            for mode in ("grasp_offset", "left_miss", "wrong_height")}
    clean = ScriptedDemonstrator(DemonstratorConfig(meet_jitter=0.0), model=world.model)
    ends = {mode: [] for mode in demo}
    for seed in (4, 5, 6):
        for mode, d in demo.items():
            world.reset(seed)
            d.plan(world.cube_pose(), world.joint_positions(), seed=seed)
            commands = np.array([d.next_command() for _ in range(d.num_ticks)])
            ends[mode].append(commands[-1])
            if mode == "grasp_offset":
                ik.set_joints(commands[close_tick, 8:14])
                offset = ik.forward()[0] - world.cube_pose()[:3]
                assert np.linalg.norm(offset[:2]) == pytest.approx(0.07, abs=0.005)
        world.reset(seed)
        clean.plan(world.cube_pose(), world.joint_positions(), seed=seed)
        clean_commands = np.array([clean.next_command() for _ in range(clean.num_ticks)])
        ik.set_joints(clean_commands[close_tick, 8:14])
        assert np.linalg.norm((ik.forward()[0] - world.cube_pose()[:3])[:2]) < 0.005
        for mode in ("left_miss", "wrong_height"):
            assert np.abs(ends[mode][-1] - clean_commands[-1]).max() > 0.05  # not the good hand-over
    for mode in ("left_miss", "wrong_height"):
        assert np.ptp(np.array(ends[mode]), axis=0).max() < 0.05


def test_failure_draw_is_deterministic_for_a_seed(world: SimWorld) -> None:
    """failure_prob decides per episode whether it is botched, failure_mode how; "all" draws the
    mode, and every mode comes up."""
    def modes(config: DemonstratorConfig, seeds: tuple[int, ...]) -> list[str | None]:
        demo = ScriptedDemonstrator(config, model=world.model)
        out = []
        for seed in seeds:
            world.reset(seed)
            demo.plan(world.cube_pose(), world.joint_positions(), seed=seed)
            out.append(demo.failure_mode)
        return out

    seeds = (0, 2, 9, 10)  # these draw the four modes
    drawn = modes(DemonstratorConfig(failure_prob=1.0), seeds)
    assert sorted(drawn) == sorted(FAILURE_MODES)
    assert modes(DemonstratorConfig(failure_prob=1.0), seeds) == drawn
    half = modes(DemonstratorConfig(failure_prob=0.5, failure_mode="left_miss"), (0, 1, 2, 3))
    assert half == [None, None, "left_miss", "left_miss"]
    assert modes(DemonstratorConfig(failure_prob=0.5, failure_mode="left_miss"), (0, 1, 2, 3)) == half


def test_plan_is_deterministic_and_noise_has_the_asked_std(world: SimWorld) -> None:
    world.reset(5)
    clean = ScriptedDemonstrator(model=world.model)
    noisy = ScriptedDemonstrator(DemonstratorConfig(noise_std=0.02), model=world.model)
    for demo in (clean, noisy):
        demo.plan(world.cube_pose(), world.joint_positions(), seed=5)
    a = np.array([clean.next_command() for _ in range(clean.num_ticks)])
    b = np.array([noisy.next_command() for _ in range(noisy.num_ticks)])
    diff = b - a
    assert diff[:, ARM_JOINTS].std() == pytest.approx(0.02, rel=0.1)
    np.testing.assert_array_equal(diff[:, [6, 7, 14, 15]], 0.0)  # fingers stay clean
    assert clean.done
    np.testing.assert_array_equal(clean.next_command(), a[-1])  # holds the last command
    clean.plan(world.cube_pose(), world.joint_positions(), seed=5)
    np.testing.assert_array_equal(np.array([clean.next_command() for _ in range(clean.num_ticks)]), a)


def test_alike_scenes_give_alike_joint_commands(world: SimWorld) -> None:
    """No joint-space branch flips: the right wrist's twist joints stayed at 0 for some cube poses
    and went to +pi/-pi (same gripper pose) for others, so a policy regressing the demonstrations
    commanded their mean, a pose none of them used."""
    demo = ScriptedDemonstrator(DemonstratorConfig(meet_jitter=0.0), model=world.model)
    plans = []
    for seed in range(1, 9):  # seeds 1 and 2 flipped to -pi and +pi before
        world.reset(seed)
        demo.plan(world.cube_pose(), world.joint_positions(), seed=seed)
        plans.append(np.array([demo.next_command() for _ in range(demo.num_ticks)]))
    right_twist = np.concatenate([p[:, [11, 13]] for p in plans])
    assert np.abs(right_twist).max() < 0.5
    ends = np.array([p[-1] for p in plans])  # every plan ends at the same hand-over pose
    assert np.ptp(ends, axis=0).max() < 0.05


def grip_point(world: SimWorld, arm: str, command: np.ndarray) -> np.ndarray:
    """`arm`'s grip point for 16 joint values (commands or positions), by forward kinematics."""
    ik = ArmIK(world.model, arm)
    first = 0 if arm == "left" else 8
    ik.set_joints(command[first:first + 6])
    return ik.forward()[0]


def test_the_left_arm_reaches_for_the_cube_it_sees(world: SimWorld) -> None:
    """At LOOK_T the left arm's reach is re-planned to the cube's position; a cube far from the
    hand-over point (still on the table) is not a target. The hand-over point itself varies."""
    world.reset(5)
    start_cube, start_joints = world.cube_pose(), world.joint_positions()
    demo = ScriptedDemonstrator(model=world.model)
    look, close = int(LOOK_T / demo.config.control_dt), int(4.8 / demo.config.control_dt)

    def left_plan(cube_at_look: np.ndarray | None) -> np.ndarray:
        demo.plan(start_cube, start_joints, seed=5)
        return np.array([demo.next_command(cube_at_look) for _ in range(demo.num_ticks)])

    demo.plan(start_cube, start_joints, seed=5)
    for _ in range(look):
        world.step(demo.next_command(world.cube_pose()))
    seen = world.cube_pose()
    assert np.linalg.norm(seen[:3] - np.array(demo.config.meet_point)) > 0.003  # this episode's jitter
    aimed = left_plan(seen)
    # The left grip point closes on the cube's -x half, wherever the right arm brought it ...
    np.testing.assert_allclose(grip_point(world, "left", aimed[close]), seen[:3] + [-0.012, 0.0, 0.0], atol=2e-3)
    moved = seen.copy()
    moved[:3] += [0.02, 0.0, -0.01]
    np.testing.assert_allclose(grip_point(world, "left", left_plan(moved)[close])
                               - grip_point(world, "left", aimed[close]),
                               [0.02, 0.0, -0.01], atol=2e-3)
    # ... the motion before the look is the plan's, and a cube on the table is not reached for.
    np.testing.assert_array_equal(left_plan(moved)[:look], aimed[:look])
    np.testing.assert_array_equal(left_plan(start_cube), left_plan(None))
    np.testing.assert_allclose(grip_point(world, "left", left_plan(None)[close]),
                               np.array(demo.config.meet_point) + [-0.012, 0.0, 0.0], atol=2e-3)


def test_grasp_jitter_shifts_the_grasp_along_the_approach_and_the_hand_over_follows_the_cube(world: SimWorld) -> None:
    """grasp_jitter moves the right grasp toward or away from the right arm's base (the cube then
    sits up to 2 cm deeper or shallower in the gripper), and the left arm still completes the hand-over,
    because it goes to the cube it sees, not to where the right gripper is."""
    close = int(2.4 / DemonstratorConfig.control_dt)  # the right fingers have closed
    base = ArmIK(world.model, "right").base_pos
    shifts, holds = [], []
    for seed in (1, 2, 3, 4, 5, 6):
        world.reset(seed)
        cube, joints = world.cube_pose(), world.joint_positions()
        plans = {}
        for jitter in (0.0, MAX_GRASP_JITTER):
            demo = ScriptedDemonstrator(DemonstratorConfig(grasp_jitter=jitter), model=world.model)
            demo.plan(cube, joints, seed=seed)
            plans[jitter] = np.array([demo.next_command() for _ in range(demo.num_ticks)])
        shift = (grip_point(world, "right", plans[MAX_GRASP_JITTER][close])
                 - grip_point(world, "right", plans[0.0][close]))
        toward_base = (base - cube[:3]) * [1.0, 1.0, 0.0]
        toward_base /= np.linalg.norm(toward_base)
        np.testing.assert_allclose(shift, np.dot(shift, toward_base) * toward_base, atol=1e-3)  # along the approach
        shifts.append(np.dot(shift, toward_base))
        # Played in MuJoCo: the cube's place in the right gripper when the left arm looks, and the outcome.
        demo = ScriptedDemonstrator(DemonstratorConfig(grasp_jitter=MAX_GRASP_JITTER), model=world.model)
        demo.plan(cube, joints, seed=seed)
        for tick in range(demo.num_ticks):
            command = demo.next_command(world.cube_pose())
            world.step(command)
            if tick == int(LOOK_T / demo.config.control_dt):
                holds.append(np.dot(world.cube_pose()[:3] - grip_point(world, "right", world.joint_positions()),
                                    toward_base))
        assert world.success(), f"seed {seed}: grasp shifted {shifts[-1]:+.3f} m, no hand-over"
    assert max(np.abs(shifts)) <= MAX_GRASP_JITTER + 1e-3 and np.ptp(shifts) > MAX_GRASP_JITTER
    assert np.ptp(holds) > 0.01  # the demonstrations show the cube at different places in the gripper


def test_ik_reaches_a_reachable_pose(world: SimWorld) -> None:
    ik = ArmIK(world.model, "right")
    ik.set_joints(np.array([0.3, -0.2, 0.4, 0.2, 0.5, -0.3]))
    pos, rot = ik.forward()
    ik.set_joints(np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0]))  # home
    ik.solve(pos, rot, iterations=300)
    got_pos, got_rot = ik.forward()
    assert np.linalg.norm(got_pos - pos) < 1e-3
    assert np.abs(got_rot - rot).max() < 1e-2


def test_errors() -> None:
    with pytest.raises(ValueError, match="failure_mode must be one of .*'grasp_ofset'"):
        DemonstratorConfig(failure_prob=1.0, failure_mode="grasp_ofset").validate()
    with pytest.raises(ValueError):
        DemonstratorConfig(failure_prob=1.5).validate()
    with pytest.raises(ValueError):
        DemonstratorConfig(noise_std=-0.1).validate()
    with pytest.raises(ValueError, match="meet_jitter"):
        DemonstratorConfig(meet_jitter=-0.01).validate()
    with pytest.raises(ValueError, match=r"grasp_jitter must be in \[0, 0.02\] m, got 0.05"):
        DemonstratorConfig(grasp_jitter=0.05).validate()
    with pytest.raises(RuntimeError, match="plan"):
        ScriptedDemonstrator().next_command()
