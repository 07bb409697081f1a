"""Simulated bimanual ViperX (ALOHA) transfer-cube world on MuJoCo. No ROS import.

The scene is the one shipped by the PyPI package ``gym-aloha``
(``gym_aloha/assets/bimanual_viperx_transfer_cube.xml``): two 6-DoF arms with two slide-joint
fingers each (16 position actuators) and a free 4 cm red cube. We drive it with raw ``mujoco``
(no gym / dm_control layer) because the ROS node needs per-step control of time and rendering.

Task (as in ACT, Zhao et al. 2023): the cube is placed at random on the right half of the table,
the right arm picks it up and hands it over to the left arm.

Stage rewards (``SimWorld.reward``), the highest stage that holds now:
    0  nothing
    1  touched:            the cube touches a right-gripper finger
    2  lifted:             ... and the cube does not touch the table
    3  attempted transfer: the cube touches a left-gripper finger
    4  successful transfer: ... and the cube does not touch the table
ACT checks one finger per gripper and one geom order per contact; we accept either finger and
either order, which only removes false negatives.
``SimWorld.success`` is stricter than reward 4: the hand-over is complete, i.e. the left gripper
holds the cube in the air and the right gripper no longer touches it. That state also flickers for
20-60 ms while a dropped cube brushes the left fingers on its way down, so an episode succeeds when
it has held for a while: ``SimWorld.success_held`` is how long it has held without a break
(checked after every step), and the sim robot node and the in-process evaluator count an episode
a success once that reaches their ``success_hold``.
"""
from __future__ import annotations

import os

# Headless by default: without a display the default GLFW backend fails. Respect a user choice
# (e.g. MUJOCO_GL=egl on a GPU machine). Must happen before mujoco is imported.
os.environ.setdefault("MUJOCO_GL", "osmesa")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

CAMERAS: tuple[str, ...] = ("left_wrist", "right_wrist", "top")
ARMS: tuple[str, ...] = ("left", "right")
NUM_JOINTS = 16
MAX_REWARD = 4

CUBE_HALF_SIZE = 0.02
# ACT's cube placement ranges (gym_aloha.utils.sample_box_pose); z puts it resting on the table.
CUBE_X_RANGE = (0.0, 0.2)
CUBE_Y_RANGE = (0.4, 0.6)


def scene_xml_path() -> Path:
    """Path of the transfer-cube scene inside the installed ``gym_aloha`` package."""
    import importlib.util

    spec = importlib.util.find_spec("gym_aloha")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("gym-aloha is not installed: pip install gym-aloha")
    path = Path(spec.origin).parent / "assets" / "bimanual_viperx_transfer_cube.xml"
    if not path.is_file():
        raise FileNotFoundError(f"transfer-cube scene not found at {path}")
    return path


def load_model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(scene_xml_path()))


@dataclass(frozen=True)
class SimWorldConfig:
    image_height: int = 96
    image_width: int = 128
    control_dt: float = 0.02  # 50 Hz, ALOHA's control rate
    seed: int = 0

    def validate(self, physics_dt: float) -> None:
        if self.image_height < 8 or self.image_width < 8:
            raise ValueError(f"image size must be >= 8x8, got {self.image_height}x{self.image_width}")
        substeps = self.control_dt / physics_dt
        if self.control_dt <= 0 or abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
            raise ValueError(
                f"control_dt={self.control_dt} must be a positive multiple of the physics "
                f"timestep {physics_dt}"
            )


class SimWorld:
    """One MuJoCo model + data + offscreen renderer; everything runs on the caller's thread."""

    def __init__(self, config: SimWorldConfig | None = None) -> None:
        self.config = config or SimWorldConfig()
        self.model = load_model()
        self.config.validate(self.model.opt.timestep)
        self.data = mujoco.MjData(self.model)
        self.substeps = round(self.config.control_dt / self.model.opt.timestep)
        self._rng = np.random.default_rng(self.config.seed)
        self._success_since: float | None = None  # physics time the hand-over completed, while it holds

        # Actuator i drives joint trnid[i]; keep that order as the public joint order.
        joint_ids = [int(self.model.actuator_trnid[i, 0]) for i in range(self.model.nu)]
        if len(joint_ids) != NUM_JOINTS:
            raise RuntimeError(f"expected {NUM_JOINTS} actuators, scene has {len(joint_ids)}")
        self._qpos_idx = np.array([self.model.jnt_qposadr[j] for j in joint_ids])
        # "vx300s_left/waist" -> "left_waist": ROS joint names should not contain '/'.
        self._joint_names = [
            self.model.joint(j).name.removeprefix("vx300s_").replace("/", "_") for j in joint_ids
        ]
        self._ctrl_low = self.model.actuator_ctrlrange[:, 0].copy()
        self._ctrl_high = self.model.actuator_ctrlrange[:, 1].copy()
        self._cube_qpos = self.model.jnt_qposadr[self.model.joint("red_box_joint").id]

        geom = lambda name: self.model.geom(name).id  # noqa: E731
        self._cube_geom = geom("red_box")
        self._table_geom = geom("table")
        self._finger_geoms = {
            arm: {geom(f"vx300s_{arm}/10_{f}_gripper_finger") for f in ("left", "right")} for arm in ARMS
        }

        vis = self.model.vis
        vis.global_.offwidth = max(vis.global_.offwidth, self.config.image_width)
        vis.global_.offheight = max(vis.global_.offheight, self.config.image_height)
        self._renderer: mujoco.Renderer | None = None  # made on first render: physics-only users need no GL
        self.reset()

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> None:
        """Home pose (the scene's keyframe), cube at a random pose on the right half of the table."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        mujoco.mj_resetDataKeyframe(self.model, self.data, 0)
        cube = self.data.qpos[self._cube_qpos : self._cube_qpos + 7]
        cube[0] = self._rng.uniform(*CUBE_X_RANGE)
        cube[1] = self._rng.uniform(*CUBE_Y_RANGE)
        cube[2] = CUBE_HALF_SIZE  # resting on the table (top at z=0), no drop
        cube[3:] = (1.0, 0.0, 0.0, 0.0)
        self.data.ctrl[:] = self.data.qpos[self._qpos_idx]  # hold the home pose
        mujoco.mj_forward(self.model, self.data)
        self._success_since = None

    def step(self, joint_command: np.ndarray, substeps: int | None = None) -> None:
        """Apply 16 position targets (joint_names order) and advance one control period, or
        `substeps` physics timesteps (a command that arrives within a control period)."""
        cmd = np.asarray(joint_command, dtype=np.float64)
        if cmd.shape != (NUM_JOINTS,):
            raise ValueError(f"joint_command must have shape ({NUM_JOINTS},), got {cmd.shape}")
        if not np.all(np.isfinite(cmd)):
            raise ValueError("joint_command contains non-finite values")
        nstep = self.substeps if substeps is None else substeps
        if nstep < 1:
            raise ValueError(f"substeps must be >= 1, got {nstep}")
        self.data.ctrl[:] = np.clip(cmd, self._ctrl_low, self._ctrl_high)
        mujoco.mj_step(self.model, self.data, nstep=nstep)
        if not self.success():
            self._success_since = None
        elif self._success_since is None:
            self._success_since = self.time

    # ------------------------------------------------------------------ state
    @property
    def time(self) -> float:
        """Physics time since the last reset, seconds."""
        return float(self.data.time)

    def joint_names(self) -> list[str]:
        return list(self._joint_names)

    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._qpos_idx].copy()

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Command limits (actuator ctrlrange) in joint_names order."""
        return self._ctrl_low.copy(), self._ctrl_high.copy()

    def cube_pose(self) -> np.ndarray:
        """Cube position (x, y, z) and quaternion (w, x, y, z) in the world frame."""
        return self.data.qpos[self._cube_qpos : self._cube_qpos + 7].copy()

    def render(self, camera: str) -> np.ndarray:
        """RGB image (H, W, 3) uint8 from one of CAMERAS."""
        if camera not in CAMERAS:
            raise ValueError(f"unknown camera {camera!r}, expected one of {CAMERAS}")
        if self._renderer is None:
            self._renderer = self._make_renderer()
        self._renderer.update_scene(self.data, camera)
        return self._renderer.render()

    def _make_renderer(self) -> mujoco.Renderer:
        # No multisample anti-aliasing: under OSMesa it costs 45% of a frame (three 144x192 cameras:
        # 31 -> 17 ms), and policies trained on anti-aliased frames did as well without (README).
        self.model.vis.quality.offsamples = 0
        try:
            renderer = mujoco.Renderer(self.model, self.config.image_height, self.config.image_width)
        except mujoco.FatalError as exc:
            raise RuntimeError(
                f"cannot create a MuJoCo renderer (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}); "
                "MUJOCO_GL must be set before mujoco is first imported, and osmesa needs libosmesa6"
            ) from exc
        # The scene asks for 4096 px shadow maps; under OSMesa they cost ~4x the whole render.
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        return renderer

    # ------------------------------------------------------------------ task
    def _cube_contacts(self) -> set[int]:
        touching = set()
        for i in range(self.data.ncon):
            g1, g2 = int(self.data.contact.geom1[i]), int(self.data.contact.geom2[i])
            if g1 == self._cube_geom:
                touching.add(g2)
            elif g2 == self._cube_geom:
                touching.add(g1)
        return touching

    def reward(self) -> int:
        """ACT's stage reward 0..4 (see module docstring)."""
        touching = self._cube_contacts()
        right = bool(touching & self._finger_geoms["right"])
        left = bool(touching & self._finger_geoms["left"])
        on_table = self._table_geom in touching
        if left:
            return 3 if on_table else 4
        if right:
            return 1 if on_table else 2
        return 0

    def success(self) -> bool:
        """Hand-over complete: cube held by the left gripper only, off the table."""
        touching = self._cube_contacts()
        return (
            bool(touching & self._finger_geoms["left"])
            and not touching & self._finger_geoms["right"]
            and self._table_geom not in touching
        )

    def success_held(self) -> float:
        """Seconds the hand-over has been complete without a break, as seen after each step (0
        from the first step it holds, -1 while it does not)."""
        return -1.0 if self._success_since is None else self.time - self._success_since

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
