"""Scripted teleoperator for the transfer-cube task. Pure logic, no ROS.

Like a human teleoperator it streams joint-space position commands, one per control tick. The
plan comes from the cube pose seen at the start of the episode (as ACT's scripted policy):
Cartesian gripper waypoints, interpolated per tick (linear position, slerp orientation) and turned
into joint targets by damped-least-squares IK on a private MjData of the same model. Once, like an
operator watching the hand-over, it looks again: when the right arm has brought the cube to the
hand-over point (LOOK_T), the left arm's reach is re-planned to where the cube is (pass the cube
pose to ``next_command``). The hand-over point varies per episode by up to ``meet_jitter`` in x and
z, so the demonstrations show the left gripper going to the cube, not to a fixed point: a policy's
right arm places it within a centimetre or two of the demonstrated point, and a left arm that had
learnt the point closed on air (measured: the cube 1-1.7 cm off in x on failed hand-overs). Where the
cube sits in the right gripper can vary as well, by up to ``grasp_jitter`` along the right grasp's
approach (off by default: it did not raise a trained policy's success, README "Simulated robot").

Hand-over geometry: the right gripper picks the cube pitched down from the +x side with its
fingers on the cube's +-y faces; the left gripper comes horizontally from the -x side rolled by
90 degrees, so its fingers close on the top and bottom faces and never meet the right fingers.

Quality knobs (``DemonstratorConfig``):
  noise_std     std (rad) of Gaussian noise added to the 12 arm-joint commands every tick
                (finger commands stay open/close: noise there would only rattle the grasp);
  failure_prob  probability that an episode is botched on purpose;
  failure_mode  how a botched episode fails: one of FAILURE_MODES, or "all" (one of them drawn
                per episode). Each looks competent, the way a wrong operator does: the same smooth
                plan, timing and speed as a good demonstration, with one consistent mistake (a
                fixed offset, never jitter), so only the outcome tells it from a good one:
    grasp_offset   the right gripper closes on air GRASP_OFFSET short of the cube (on its arm's
                   side) and carries the air to the hand-over as if it held the cube: stage 0;
    early_release  the right gripper opens as soon as it reaches the hand-over point, while the
                   left one is still on its way: the cube drops (stage 2, lifted, at most);
    left_miss      the left gripper closes LEFT_MISS_OFFSET beside the cube it sees, then the
                   right one lets go: stage 2 at most;
    wrong_height   the right gripper holds the cube at WRONG_HEIGHT_OFFSET from the point where
                   the left one closes (10 cm below it, too far off for the operator to re-aim,
                   LOOK_RADIUS), then lets go: stage 2 at most.
Stages as measured on sim seeds 0..59 (test_scripted_demonstrator.py checks a few).
"""
from __future__ import annotations

from dataclasses import dataclass

# sim_world first: it picks the headless MUJOCO_GL default, which mujoco reads at import.
from lapo_ros.sim.world import ARMS, NUM_JOINTS, SimWorld, load_model  # isort: skip

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

FAILURE_MODES: tuple[str, ...] = ("grasp_offset", "early_release", "left_miss", "wrong_height")
ALL_FAILURE_MODES = "all"
# The botched plans' fixed mistakes (m, world frame). At 5-6 cm the grasp_offset fingers still
# knocked some cubes (a stage 2 tick); at 7 cm none of 60 cube poses is touched.
GRASP_OFFSET = 0.07
# Aimed at the cube it sees, a left gripper 5 cm beside it still completed 2 of 12 hand-overs and
# 7 cm touched 3 of 60 cubes (stage 4); at 8 cm none of 60 is touched.
LEFT_MISS_OFFSET = np.array([0.0, 0.08, 0.0])
WRONG_HEIGHT_OFFSET = np.array([0.0, 0.0, -0.1])

# Point between the finger pads in the gripper_link frame (finger tips end at x=0.154).
GRIP_POINT = np.array([0.135, 0.0, 0.0])
FINGER_OPEN, FINGER_CLOSED = 0.057, 0.021  # left_finger ctrlrange; right_finger is mirrored
# s into the plan (before time_scale): the right arm holds the cube at the hand-over point and the
# left one waits beside it; the demonstrator looks at the cube and re-plans the left arm's reach.
LOOK_T = 3.6
# The operator re-aims only at a cube this close to where it expects it: a cube still on the table
# (grasp_offset) or held far off (wrong_height) is the mistake of those modes, not a new target.
LOOK_RADIUS = 0.05
# The cube is 4 cm: a grasp shifted further along the approach than this closes on its edge.
MAX_GRASP_JITTER = 0.02


@dataclass(frozen=True)
class DemonstratorConfig:
    noise_std: float = 0.0
    failure_prob: float = 0.0
    failure_mode: str = ALL_FAILURE_MODES
    control_dt: float = 0.02
    pick_pitch_deg: float = 60.0  # right gripper tilt below horizontal when picking
    meet_point: tuple[float, float, float] = (0.0, 0.5, 0.25)  # cube centre at hand-over
    meet_jitter: float = 0.015  # m, uniform per episode in x and z around meet_point (see the module doc)
    grasp_jitter: float = 0.0  # m, uniform per episode: the right grasp's shift along its approach (module doc)
    time_scale: float = 1.0  # >1 slows the whole motion down

    def validate(self) -> None:
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not 0.0 <= self.failure_prob <= 1.0:
            raise ValueError(f"failure_prob must be in [0, 1], got {self.failure_prob}")
        if self.failure_mode not in (*FAILURE_MODES, ALL_FAILURE_MODES):
            raise ValueError(f"failure_mode must be one of {(*FAILURE_MODES, ALL_FAILURE_MODES)}, "
                             f"got {self.failure_mode!r}")
        if self.control_dt <= 0 or self.time_scale <= 0:
            raise ValueError("control_dt and time_scale must be > 0")
        if self.meet_jitter < 0:
            raise ValueError(f"meet_jitter must be >= 0, got {self.meet_jitter}")
        if not 0.0 <= self.grasp_jitter <= MAX_GRASP_JITTER:
            raise ValueError(f"grasp_jitter must be in [0, {MAX_GRASP_JITTER}] m, got {self.grasp_jitter}")
        if not 0.0 <= self.pick_pitch_deg <= 90.0:
            raise ValueError(f"pick_pitch_deg must be in [0, 90], got {self.pick_pitch_deg}")


@dataclass(frozen=True)
class Waypoint:
    t: float  # seconds from episode start
    pos: np.ndarray  # grip point, world frame
    rot: np.ndarray  # gripper_link orientation, 3x3
    grip: float  # 1 open .. 0 closed


def _frame(x_axis: np.ndarray, y_axis: np.ndarray) -> np.ndarray:
    x = x_axis / np.linalg.norm(x_axis)
    y = y_axis - x * (x @ y_axis)
    y /= np.linalg.norm(y)
    return np.column_stack([x, y, np.cross(x, y)])


def _pick_frame(base: np.ndarray, target: np.ndarray, pitch_deg: float) -> np.ndarray:
    """Gripper frame reaching `target` from an arm at `base`: approach axis in the vertical plane
    through both, pitched down by `pitch_deg`, fingers horizontal. Off that plane the gripper has
    to yaw, which this arm can only do by large opposite twists of forearm_roll and wrist_rotate."""
    toward = np.array([target[0] - base[0], target[1] - base[1], 0.0])
    toward /= np.linalg.norm(toward)
    pitch = np.deg2rad(pitch_deg)
    approach = np.cos(pitch) * toward - np.array([0.0, 0.0, np.sin(pitch)])
    return _frame(approach, np.array([-toward[1], toward[0], 0.0]))


def _quat(rot: np.ndarray) -> np.ndarray:
    q = np.empty(4)
    mujoco.mju_mat2Quat(q, rot.reshape(-1))
    return q


def _slerp_rot(r0: np.ndarray, r1: np.ndarray, s: float) -> np.ndarray:
    q0, q1 = _quat(r0), _quat(r1)
    dot = float(q0 @ q1)
    if dot < 0:  # shortest way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + s * (q1 - q0)
    else:
        theta = np.arccos(dot)
        q = (np.sin((1 - s) * theta) * q0 + np.sin(s * theta) * q1) / np.sin(theta)
    q /= np.linalg.norm(q)
    out = np.empty(9)
    mujoco.mju_quat2Mat(out, q)
    return out.reshape(3, 3)


def _interpolate(waypoints: list[Waypoint], t: float) -> tuple[np.ndarray, np.ndarray, float]:
    if t <= waypoints[0].t:
        w = waypoints[0]
        return w.pos, w.rot, w.grip
    for a, b in zip(waypoints, waypoints[1:]):
        if t <= b.t:
            s = (t - a.t) / (b.t - a.t)
            return a.pos + s * (b.pos - a.pos), _slerp_rot(a.rot, b.rot, s), a.grip + s * (b.grip - a.grip)
    w = waypoints[-1]
    return w.pos, w.rot, w.grip


class ArmIK:
    """Damped-least-squares IK for one arm's 6 joints, on a private MjData."""

    def __init__(self, model: mujoco.MjModel, arm: str, damping: float = 0.03, twist_pull: float = 0.0) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.body = model.body(f"vx300s_{arm}/gripper_link").id
        joints = [model.joint(f"vx300s_{arm}/{j}").id for j in
                  ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")]
        self.qpos_idx = np.array([model.jnt_qposadr[j] for j in joints])
        self.dof_idx = np.array([model.jnt_dofadr[j] for j in joints])
        self.low, self.high = model.jnt_range[joints, 0], model.jnt_range[joints, 1]
        self.damping = damping
        # `twist_pull` pulls forearm_roll - wrist_rotate weakly towards 0. Where wrist_angle
        # crosses 0 the two axes coincide and only their sum turns the gripper; unpulled, their
        # difference drifted to +-2pi or stayed 0 by chance, so demonstrations of alike scenes
        # were 2pi apart in joint space and a regressed policy commanded their mean.
        twist = np.zeros(6)
        twist[[3, 5]] = (1.0, -1.0)
        self._twist_weight = twist_pull**2 * np.outer(twist, twist)
        mujoco.mj_kinematics(model, self.data)
        self.base_pos = self.data.xpos[model.body(f"vx300s_{arm}").id].copy()  # fixed to the table
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def set_joints(self, q: np.ndarray) -> None:
        self.data.qpos[self.qpos_idx] = q

    def forward(self) -> tuple[np.ndarray, np.ndarray]:
        """Grip point position and gripper orientation at the current joints."""
        mujoco.mj_kinematics(self.model, self.data)
        rot = self.data.xmat[self.body].reshape(3, 3)
        return self.data.xpos[self.body] + rot @ GRIP_POINT, rot.copy()

    def solve(self, pos: np.ndarray, rot: np.ndarray, iterations: int, tol: float = 1e-4) -> np.ndarray:
        """Joint angles reaching (pos, rot), warm-started from the last solution."""
        q = self.data.qpos
        for _ in range(iterations):
            p, r = self.forward()
            # Orientation error as a rotation vector (small-angle): 0.5 * sum_i r_i x rot_i.
            err = np.concatenate([pos - p, 0.5 * np.cross(r.T, rot.T).sum(axis=0)])
            if np.linalg.norm(err) < tol:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jac(self.model, self.data, self._jacp, self._jacr, p, self.body)
            jac = np.vstack([self._jacp[:, self.dof_idx], self._jacr[:, self.dof_idx]])
            arm_q = q[self.qpos_idx]
            dq = np.linalg.solve(jac.T @ jac + self.damping**2 * np.eye(6) + self._twist_weight,
                                 jac.T @ err - self._twist_weight @ arm_q)
            q[self.qpos_idx] = np.clip(arm_q + dq, self.low, self.high)
        return q[self.qpos_idx].copy()


class ScriptedDemonstrator:
    """Call ``plan`` at the start of each episode, then ``next_command`` once per control tick."""

    def __init__(self, config: DemonstratorConfig | None = None, seed: int = 0,
                 model: mujoco.MjModel | None = None) -> None:
        self.config = config or DemonstratorConfig()
        self.config.validate()
        model = model or load_model()
        # The right arm's pick pitches its wrist through wrist_angle 0; the left arm needs its twist
        # free for its 90-degree roll and never crosses it.
        self._ik = {"right": ArmIK(model, "right", twist_pull=0.1), "left": ArmIK(model, "left")}
        self._rng = np.random.default_rng(seed)
        self._commands = np.zeros((0, NUM_JOINTS))
        self._tick = 0
        self.failure_mode: str | None = None

    @property
    def num_ticks(self) -> int:
        return len(self._commands)

    @property
    def done(self) -> bool:
        return self._tick >= len(self._commands)

    def plan(self, cube_pose: np.ndarray, joint_positions: np.ndarray, seed: int | None = None) -> None:
        """Plan a whole episode from the cube pose and the current 16 joint positions."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        cfg = self.config
        self.failure_mode = None
        if self._rng.random() < cfg.failure_prob:
            self.failure_mode = (str(self._rng.choice(FAILURE_MODES)) if cfg.failure_mode == ALL_FAILURE_MODES
                                 else cfg.failure_mode)
        jitter = self._rng.uniform(-cfg.meet_jitter, cfg.meet_jitter, size=2)
        self._meet_nominal = np.asarray(cfg.meet_point, dtype=np.float64)
        self._meet = self._meet_nominal + np.array([jitter[0], 0.0, jitter[1]])
        # Drawn after the meet jitter, so that grasp_jitter 0 leaves the earlier draws as they were.
        self._grasp_shift = self._rng.uniform(-cfg.grasp_jitter, cfg.grasp_jitter) if cfg.grasp_jitter else 0.0
        joint_positions = np.asarray(joint_positions, dtype=np.float64)
        starts = {}
        for i, arm in enumerate(ARMS):
            self._ik[arm].set_joints(joint_positions[8 * i : 8 * i + 6])
            starts[arm] = self._ik[arm].forward()
        self._left_start = starts["left"]
        waypoints = self._waypoints(np.asarray(cube_pose[:3], dtype=np.float64), starts)

        n_ticks = int(round(waypoints["left"][-1].t / cfg.control_dt)) + 1
        self._commands = np.zeros((n_ticks, NUM_JOINTS))
        for i, arm in enumerate(ARMS):
            self._ik[arm].set_joints(joint_positions[8 * i : 8 * i + 6])
            self._solve(arm, waypoints[arm], 0)
        self._look_tick = int(round(LOOK_T * cfg.time_scale / cfg.control_dt))
        self._tick = 0

    def _solve(self, arm: str, waypoints: list[Waypoint], first_tick: int) -> None:
        """Joint and finger commands of `arm` from `first_tick` on, IK warm-started where it is."""
        i, ik = ARMS.index(arm), self._ik[arm]
        for k in range(first_tick, len(self._commands)):
            pos, rot, grip = _interpolate(waypoints, k * self.config.control_dt)
            # Cold start needs many iterations; afterwards each tick is a small correction.
            self._commands[k, 8 * i : 8 * i + 6] = ik.solve(pos, rot, iterations=200 if k == 0 else 20)
            finger = FINGER_CLOSED + grip * (FINGER_OPEN - FINGER_CLOSED)
            self._commands[k, 8 * i + 6 : 8 * i + 8] = (finger, -finger)

    def next_command(self, cube_pose: np.ndarray | None = None) -> np.ndarray:
        """Command for this tick; after the plan ends the last command is held. `cube_pose` (the
        cube as the operator sees it now): at LOOK_T the left arm's reach is re-planned to it if it
        is within LOOK_RADIUS of the planned hand-over point; otherwise, and without it, the reach
        stays aimed at that point."""
        if not len(self._commands):
            raise RuntimeError("plan() must be called first")
        if self._tick == self._look_tick and cube_pose is not None:
            cube = np.asarray(cube_pose[:3], dtype=np.float64)
            if np.linalg.norm(cube - self._meet_nominal) <= LOOK_RADIUS:
                self._aim_left(cube)
        cmd = self._commands[min(self._tick, len(self._commands) - 1)].copy()
        self._tick += 1
        if self.config.noise_std > 0:
            arm_joints = np.r_[0:6, 8:14]
            cmd[arm_joints] += self._rng.normal(0.0, self.config.noise_std, size=arm_joints.size)
        return cmd

    def _aim_left(self, cube: np.ndarray) -> None:
        """Re-plan the left arm from this tick on, reaching for `cube` (its centre) instead of the
        planned hand-over point; the motion so far, and the right arm, are unchanged."""
        left_ik = self._ik["left"]
        left_ik.set_joints(self._commands[self._tick - 1, 0:6])
        self._solve("left", self._scaled(self._left_waypoints(self._meet_nominal, cube)), self._tick)

    def _scaled(self, waypoints: list[Waypoint]) -> list[Waypoint]:
        return [Waypoint(w.t * self.config.time_scale, w.pos, w.rot, w.grip) for w in waypoints]

    def _left_waypoints(self, expected: np.ndarray, cube: np.ndarray) -> list[Waypoint]:
        """The left gripper's path (unscaled times): it waits beside where it expects the cube
        (`expected`), then grasps `cube`'s -x half, rolled so its fingers close along world z."""
        l_rot = _frame(np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]))
        beside = expected + np.array([-0.012 - 0.1, 0.0, 0.0])
        grasp = cube + np.array([-0.012, 0.0, 0.0])  # the -x half of the cube
        if self.failure_mode == "left_miss":
            grasp = grasp + LEFT_MISS_OFFSET
        l_pos0, l_rot0 = self._left_start
        return [
            Waypoint(0.0, l_pos0, l_rot0, 0.0),
            Waypoint(1.0, l_pos0, l_rot0, 0.0),
            Waypoint(LOOK_T, beside, l_rot, 1.0),  # wait beside
            Waypoint(4.4, grasp, l_rot, 1.0),
            Waypoint(4.8, grasp, l_rot, 0.0),  # close
            Waypoint(5.6, grasp, l_rot, 0.0),
            Waypoint(6.2, grasp - np.array([0.05, 0.0, 0.0]), l_rot, 0.0),  # pull away
            Waypoint(6.4, grasp - np.array([0.05, 0.0, 0.0]), l_rot, 0.0),
        ]

    def _waypoints(self, cube: np.ndarray, starts: dict) -> dict[str, list[Waypoint]]:
        cfg = self.config
        # Right gripper: tilted down, approaching along the line from the arm's base (fingers
        # horizontal, across it), at the cube and at this episode's hand-over point.
        r_base = self._ik["right"].base_pos
        meet = self._meet
        r_grasp_rot, r_meet_rot = (_pick_frame(r_base, target, cfg.pick_pitch_deg) for target in (cube, meet))

        grasp = cube + np.array([0.0, 0.0, 0.005])  # a little high: the tilted tips clear the table
        toward_base = np.array([r_base[0] - cube[0], r_base[1] - cube[1], 0.0])
        toward_base /= np.linalg.norm(toward_base)
        mode = self.failure_mode
        # grasp_offset: its fixed mistake, short of the cube on the right arm's side, instead of the jitter.
        grasp = grasp + (GRASP_OFFSET if mode == "grasp_offset" else self._grasp_shift) * toward_base
        r_meet = meet + WRONG_HEIGHT_OFFSET if mode == "wrong_height" else meet
        release_t = 3.7 if mode == "early_release" else 5.2

        r_pos0, r_rot0 = starts["right"]
        right = [
            Waypoint(0.0, r_pos0, r_rot0, 0.0),
            Waypoint(0.3, r_pos0, r_rot0, 0.0),  # let recorders catch the first frames
            Waypoint(1.3, grasp - 0.08 * r_grasp_rot[:, 0], r_grasp_rot, 1.0),  # above the cube, open
            Waypoint(2.0, grasp, r_grasp_rot, 1.0),
            Waypoint(2.4, grasp, r_grasp_rot, 0.0),  # close
            Waypoint(2.6, grasp, r_grasp_rot, 0.0),
            Waypoint(LOOK_T, r_meet, r_meet_rot, 0.0),  # carry to the hand-over point
            Waypoint(release_t, r_meet, r_meet_rot, 0.0),
            Waypoint(release_t + 0.3, r_meet, r_meet_rot, 1.0),  # open
            Waypoint(release_t + 0.8, r_meet - 0.1 * r_meet_rot[:, 0], r_meet_rot, 1.0),  # back off
            Waypoint(6.4, r_meet - 0.1 * r_meet_rot[:, 0], r_meet_rot, 1.0),
        ]
        # Until it looks, the left arm expects the cube at the nominal hand-over point (where the
        # right arm should bring it, before this episode's jitter), as an operator would.
        left = self._left_waypoints(self._meet_nominal, self._meet_nominal)
        return {"right": self._scaled(right), "left": self._scaled(left)}


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    failure_mode: str | None
    max_reward: int
    success: bool  # SimWorld.success() at the last tick


def run_episode(world: SimWorld, demo: ScriptedDemonstrator, seed: int) -> EpisodeResult:
    """Reset the world with ``seed``, play one planned demonstration, report the outcome."""
    world.reset(seed)
    demo.plan(world.cube_pose(), world.joint_positions(), seed=seed)
    max_reward = 0
    while not demo.done:
        world.step(demo.next_command(world.cube_pose()))
        max_reward = max(max_reward, world.reward())
    return EpisodeResult(seed, demo.failure_mode, max_reward, world.success())


def main(argv: list[str] | None = None) -> None:
    """Measure the demonstrator's success rate: python -m lapo_ros.sim.demonstrator."""
    import argparse
    import logging

    from lapo_ros.sim.world import SimWorldConfig

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--episodes", type=int, default=20, help="episodes to play (default: %(default)s)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="episode i uses sim seed first_seed + i (default: %(default)s)")
    parser.add_argument("--noise-std", type=float, default=0.0,
                        help="std (rad) of the noise on the arm-joint commands (default: %(default)s)")
    parser.add_argument("--grasp-jitter", type=float, default=DemonstratorConfig.grasp_jitter,
                        help="m, the right grasp's per-episode shift along its approach, uniform in +-this "
                             "(default: %(default)s)")
    parser.add_argument("--failure-prob", type=float, default=0.0,
                        help="probability that an episode is botched on purpose (default: %(default)s)")
    parser.add_argument("--failure-mode", choices=(*FAILURE_MODES, ALL_FAILURE_MODES), default=ALL_FAILURE_MODES,
                        help="how a botched episode fails; all: one mode drawn per episode (default: %(default)s)")
    args = parser.parse_args(argv)
    config = DemonstratorConfig(noise_std=args.noise_std, failure_prob=args.failure_prob,
                                failure_mode=args.failure_mode, grasp_jitter=args.grasp_jitter)
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("scripted_demonstrator")

    world = SimWorld(SimWorldConfig(image_height=8, image_width=8))  # no rendering needed
    demo = ScriptedDemonstrator(config, model=world.model)
    results = [run_episode(world, demo, args.first_seed + i) for i in range(args.episodes)]
    for r in results:
        log.info("seed %d failure_mode=%s max_reward=%d success=%s", r.seed, r.failure_mode, r.max_reward, r.success)
    log.info("success rate %d/%d", sum(r.success for r in results), len(results))
    world.close()


if __name__ == "__main__":
    main()
