"""The observation schema shared by the recorder, the trainer and the policy node.

One definition of what an observation is (camera names, image size, joint order) and how raw
sensor data becomes model input (resize, normalisation). It is stored in every episode file the
recorder writes and inside every checkpoint, so training and deployment cannot silently disagree.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

# HDF5 dataset names of the cameras, in the order of `select_action(left, right, global, joint)`.
CAMERAS: tuple[str, ...] = ("left_image", "right_image", "global_image")
# Normalised joints/actions are clipped so that an outlier cannot saturate the networks.
NORM_CLIP = 10.0
# A dimension whose data never varies gets this std, so normalising it gives 0 instead of inf.
MIN_STD = 1e-6


class SchemaMismatch(ValueError):
    """Two schemas (data vs checkpoint, checkpoint vs robot config) disagree."""


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a uint8 HxWx3 image to `size` = (H, W) with bilinear filtering.

    The one resize used at record time, at dataset load time and in the policy node, so the model
    sees the same pixels in training and on the robot.
    """
    height, width = int(size[0]), int(size[1])
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 HxWx3 image, got dtype {image.dtype} shape {tuple(image.shape)}")
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


CropBox = tuple[float, float, float, float]  # (top, left, height, width), fractions of the image


def check_crop(camera: str, box: Sequence[float]) -> CropBox:
    """A crop box as a tuple of 4 floats inside the unit square, or ValueError naming the camera."""
    if len(box) != 4:
        raise ValueError(f"crop of {camera}: expected (top, left, height, width), got {list(box)}")
    top, left, height, width = (float(v) for v in box)
    if not (0.0 <= top < 1.0 and 0.0 <= left < 1.0 and height > 0.0 and width > 0.0
            and top + height <= 1.0 + 1e-9 and left + width <= 1.0 + 1e-9):
        raise ValueError(f"crop of {camera}: (top {top}, left {left}, height {height}, width {width}) must lie "
                         "inside the image, as fractions of its height and width")
    return top, left, height, width


def parse_crop(values: Sequence[str]) -> tuple[str, CropBox]:
    """One `--crop CAMERA TOP LEFT HEIGHT WIDTH` (strings) -> (camera, box); ValueError naming it."""
    if len(values) != 5:
        raise ValueError(f"--crop {' '.join(values)}: expected CAMERA TOP LEFT HEIGHT WIDTH")
    try:
        box = tuple(float(v) for v in values[1:])
    except ValueError:
        raise ValueError(f"--crop {' '.join(values)}: TOP LEFT HEIGHT WIDTH must be numbers") from None
    return values[0], check_crop(values[0], box)


def crop_image(image: np.ndarray, box: CropBox) -> np.ndarray:
    """The part of an HxWx3 image inside `box` (fractions of H and W, rounded to whole pixels).

    Fractions, not pixels, so a crop chosen on one recording size applies to any other.
    """
    h, w = image.shape[:2]
    top, left = min(round(box[0] * h), h - 1), min(round(box[1] * w), w - 1)
    bottom, right = max(top + 1, round((box[0] + box[2]) * h)), max(left + 1, round((box[1] + box[3]) * w))
    return image[top:min(bottom, h), left:min(right, w)]  # at least one pixel, never past the edge


@dataclass
class Normalizer:
    """Per-dimension z-scoring with clipping to +-NORM_CLIP."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float32)
        self.std = np.maximum(np.asarray(self.std, dtype=np.float32), MIN_STD)

    @classmethod
    def fit(cls, data: np.ndarray) -> "Normalizer":
        data = np.asarray(data, dtype=np.float64)
        return cls(mean=data.mean(axis=0), std=data.std(axis=0))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.mean) / self.std, -NORM_CLIP, NORM_CLIP).astype(np.float32)

    def unnormalize(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) * self.std + self.mean).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalizer":
        return cls(mean=np.asarray(d["mean"]), std=np.asarray(d["std"]))


@dataclass
class ObservationSchema:
    """What one observation is: cameras, model image size, joint and action order.

    `joint_names`/`action_names` may be generic (`joint_0`...) when the data did not carry names;
    `rate_hz` is the sampling rate of the recording (None when unknown), which the policy node
    uses as its default control rate. `crops` maps a camera to the box (fractions of the image)
    that the model sees of it; `preprocess` applies it and the resize, at dataset load time and in
    the policy alike.
    """

    image_size: tuple[int, int]
    joint_names: tuple[str, ...]
    action_names: tuple[str, ...]
    cameras: tuple[str, ...] = CAMERAS
    rate_hz: float | None = None
    crops: dict[str, CropBox] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.joint_names = tuple(str(n) for n in self.joint_names)
        self.action_names = tuple(str(n) for n in self.action_names)
        self.cameras = tuple(self.cameras)
        unknown = sorted(set(self.crops) - set(self.cameras))
        if unknown:
            raise ValueError(f"crops name cameras {unknown} that are not among {list(self.cameras)}")
        self.crops = {cam: check_crop(cam, box) for cam, box in self.crops.items()}
        if min(self.image_size) <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if not self.joint_names or not self.action_names:
            raise ValueError("a schema needs at least one joint and one action dimension")
        for label, names in (("joint_names", self.joint_names), ("action_names", self.action_names)):
            if len(set(names)) != len(names):
                raise ValueError(f"{label} has duplicates: {list(names)}")

    @property
    def joint_dim(self) -> int:
        return len(self.joint_names)

    def preprocess(self, camera: str, image: np.ndarray) -> np.ndarray:
        """A camera's uint8 HxWx3 image (any size) -> the model's input: its crop, resized to image_size."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 HxWx3 image, got dtype {image.dtype} shape {tuple(image.shape)}")
        box = self.crops.get(camera)
        return resize_image(image if box is None else crop_image(image, box), self.image_size)

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @staticmethod
    def default_names(prefix: str, n: int) -> tuple[str, ...]:
        return tuple(f"{prefix}_{i}" for i in range(n))

    def action_joint_index(self) -> tuple[int, ...]:
        """Index in the joint vector of each action's joint (same name), for relative actions.

        Generic names on both sides pair by position when the counts are equal.
        """
        if _generic(self.joint_names) and _generic(self.action_names):
            if self.joint_dim != self.action_dim:
                raise SchemaMismatch(f"relative actions need one joint per action: {self.action_dim} actions, "
                                     f"{self.joint_dim} joints, and no names to pair them")
            return tuple(range(self.action_dim))
        missing = [n for n in self.action_names if n not in self.joint_names]
        if missing:
            raise SchemaMismatch(f"relative actions need each action's joint in the observation: "
                                 f"{missing} not among joint_names {list(self.joint_names)}")
        return tuple(self.joint_names.index(n) for n in self.action_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        d["joint_names"] = list(self.joint_names)
        d["action_names"] = list(self.action_names)
        d["cameras"] = list(self.cameras)
        d["crops"] = {cam: list(box) for cam, box in self.crops.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ObservationSchema":
        return cls(
            image_size=tuple(d["image_size"]),
            joint_names=tuple(d["joint_names"]),
            action_names=tuple(d["action_names"]),
            cameras=tuple(d.get("cameras", CAMERAS)),
            rate_hz=d.get("rate_hz"),
            crops={cam: tuple(box) for cam, box in d.get("crops", {}).items()},
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "ObservationSchema":
        return cls.from_dict(json.loads(text))

    def mismatches(self, other: "ObservationSchema", *, check_image_size: bool = False) -> list[str]:
        """Human-readable differences that would make data of `other` unusable with `self`.

        Image size is only compared on request: images of any size are resized to the model's.
        Generic names (`joint_3`) match any name, since a dataset without names cannot be checked.
        """
        problems: list[str] = []
        if self.cameras != other.cameras:
            problems.append(f"cameras {list(self.cameras)} != {list(other.cameras)}")
        for label in ("joint_names", "action_names"):
            mine, theirs = getattr(self, label), getattr(other, label)
            if len(mine) != len(theirs):
                problems.append(f"{label}: {len(mine)} entries != {len(theirs)} entries")
            elif not (_generic(mine) or _generic(theirs)) and mine != theirs:
                diff = [f"{i}: {a!r} != {b!r}" for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]
                problems.append(f"{label} differ at " + ", ".join(diff))
        if check_image_size and self.image_size != other.image_size:
            problems.append(f"image_size {self.image_size} != {other.image_size}")
        return problems

    def require_compatible(self, other: "ObservationSchema", what: str, **kw: Any) -> None:
        problems = self.mismatches(other, **kw)
        if problems:
            raise SchemaMismatch(f"{what}: " + "; ".join(problems))


def _generic(names: Sequence[str]) -> bool:
    return all(n.startswith(("joint_", "action_")) and n.split("_")[-1].isdigit() for n in names)


def relative_to_joints(actions: np.ndarray, joints: np.ndarray, index: Sequence[int | None] | None) -> np.ndarray:
    """Actions [N,A] or action chunks [N,K,A] minus the positions [N,J] of their joints (`index` into
    the joint vector) at the chunk's first step; the actions unchanged when `index` is None, and
    those whose entry of `index` is None (kept absolute)."""
    actions = np.asarray(actions, dtype=np.float32)
    if index is None:
        return actions
    offset = joint_offsets(joints, index)
    return actions - (offset[:, None] if actions.ndim == 3 else offset)


def joint_offsets(joints: np.ndarray, index: Sequence[int | None]) -> np.ndarray:
    """[N,A]: per action, the position of its joint (`index` into joints [N,J]), or 0 where None."""
    joints = np.asarray(joints, dtype=np.float32)
    offset = np.zeros((len(joints), len(index)), dtype=np.float32)
    relative = [a for a, j in enumerate(index) if j is not None]
    offset[:, relative] = joints[:, [index[a] for a in relative]]
    return offset


@dataclass
class DatasetStatistics:
    """Normalisation fitted on the training split, stored in the checkpoint with the schema."""

    joint: Normalizer
    # Of the model's targets, K*A wide for chunks of K actions: raw actions, or action - joint (relative).
    action: Normalizer
    action_min: np.ndarray  # raw training actions' extremes (an outlier sets them: not for limits)
    action_max: np.ndarray
    reward_scale: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)
    # Relative actions: the model predicts each action minus the measured position of its joint
    # (these indices into the joint vector; a None entry keeps that action absolute); None: all absolute.
    action_joint_index: tuple[int | None, ...] | None = None
    # Robust range of the raw training actions (outliers.robust_range), the policy node's default
    # limits; None in checkpoints written before it existed.
    action_low: np.ndarray | None = None
    action_high: np.ndarray | None = None

    @property
    def action_dim(self) -> int:
        return len(self.action_min)

    def action_targets(self, chunks: np.ndarray, joints: np.ndarray) -> np.ndarray:
        """Raw action chunks [N,K,A] (K = 1: single actions) and the raw joints [N,J] measured at
        their first step -> normalised model targets [N,K*A]."""
        rel = relative_to_joints(chunks, joints, self.action_joint_index)
        return self.action.normalize(rel.reshape(len(rel), -1))

    def chunks_from_targets(self, targets: np.ndarray, joints: np.ndarray) -> np.ndarray:
        """Inverse of `action_targets`: normalised model outputs [N,K*A] at raw joints [N,J] -> raw
        action chunks [N,K,A]."""
        chunks = self.action.unnormalize(targets).reshape(len(targets), -1, self.action_dim)
        if self.action_joint_index is not None:
            chunks = chunks + joint_offsets(joints, self.action_joint_index)[:, None]
        return chunks

    def to_dict(self) -> dict[str, Any]:
        return {
            "joint": self.joint.to_dict(),
            "action": self.action.to_dict(),
            "action_min": np.asarray(self.action_min, dtype=np.float32).tolist(),
            "action_max": np.asarray(self.action_max, dtype=np.float32).tolist(),
            "reward_scale": float(self.reward_scale),
            "extra": self.extra,
            "action_joint_index": None if self.action_joint_index is None else list(self.action_joint_index),
            "action_low": _float_list(self.action_low),
            "action_high": _float_list(self.action_high),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetStatistics":
        return cls(
            joint=Normalizer.from_dict(d["joint"]),
            action=Normalizer.from_dict(d["action"]),
            action_min=np.asarray(d["action_min"], dtype=np.float32),
            action_max=np.asarray(d["action_max"], dtype=np.float32),
            reward_scale=float(d.get("reward_scale", 1.0)),
            extra=dict(d.get("extra", {})),
            action_joint_index=None if d.get("action_joint_index") is None else tuple(d["action_joint_index"]),
            action_low=_float_array(d.get("action_low")),
            action_high=_float_array(d.get("action_high")),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Every numeric array, by name (to check that a loaded checkpoint's are finite)."""
        named = {"joint.mean": self.joint.mean, "joint.std": self.joint.std, "action.mean": self.action.mean,
                 "action.std": self.action.std, "action_min": self.action_min, "action_max": self.action_max,
                 "action_low": self.action_low, "action_high": self.action_high}
        return {k: np.asarray(v) for k, v in named.items() if v is not None}


def _float_list(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else np.asarray(values, dtype=np.float32).tolist()


def _float_array(values: Sequence[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)
