"""ACT/ALOHA HDF5 episodes -> lapo episode files (`convert from-aloha`).

The layout ACT's and ALOHA's recorders write, one file per episode::

    /observations/qpos                 [T, 14] float   joint positions (6 arm joints + gripper per arm)
    /observations/qvel, /effort        [T, 14]         (not part of lapo's observation: ignored)
    /observations/images/<camera>      [T, H, W, 3] uint8 raw, or [T, L] uint8 JPEG bytes
                                       (zero-padded, `compress` attribute) as ALOHA's real-robot
                                       recorder stores them with cv2.imencode
    /action                            [T, 14] float   leader-arm joint targets
    attrs: sim (bool), compress (bool)

ALOHA files carry no reward: by default every episode is a successful demonstration (the
recorder's sparse outcome reward, 1 on the last step); a `/reward` dataset, where a file has one,
is used as the per-step reward instead.
"""
from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from PIL import Image

from lapo_learning.convert import ConvertError
from lapo_learning.convert.episodes import EpisodeOutput, Row
from lapo_learning.episode_writer import EpisodeConfig
from lapo_learning.schema import CAMERAS, resize_image

log = logging.getLogger(__name__)

ALOHA_JOINT_NAMES: tuple[str, ...] = tuple(
    f"{side}_{joint}" for side in ("left", "right")
    for joint in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"))
# ALOHA's camera names for lapo's cameras (its fourth, cam_low, has no lapo counterpart).
ALOHA_CAMERAS: dict[str, str] = {"left_image": "cam_left_wrist", "right_image": "cam_right_wrist",
                                 "global_image": "cam_high"}
ALOHA_RATE_HZ = 50.0  # ALOHA's and ACT's sim control rate (DT = 0.02 s)
QPOS_KEY, ACTION_KEY, IMAGES_GROUP = "observations/qpos", "action", "observations/images"
REWARD_KEYS = ("reward", "rewards")
BLOCK = 64  # frames read at a time: a raw 480x640 episode never sits in memory whole


@dataclass(frozen=True)
class AlohaOptions:
    cameras: dict[str, str]  # lapo camera -> ALOHA camera
    joint_names: tuple[str, ...] = ALOHA_JOINT_NAMES
    action_names: tuple[str, ...] | None = None  # None: joint_names
    rate_hz: float = ALOHA_RATE_HZ
    outcome: str = "success"
    image_size: tuple[int, int] | None = None  # None keeps the stored size
    compression: str = "lzf"


def parse_camera_map(text: str) -> dict[str, str]:
    """`cam_left_wrist:left_image,...` -> {lapo camera: ALOHA camera}; every lapo camera exactly once
    (one ALOHA camera may feed several, e.g. ACT's sim files that only have `top`)."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = item.partition(":")
        if not sep or not source or target not in CAMERAS:
            raise ConvertError(f"--cameras: {item!r} is not ALOHA_CAMERA:LAPO_CAMERA with LAPO_CAMERA one of "
                               f"{list(CAMERAS)}")
        if target in mapping:
            raise ConvertError(f"--cameras: {target} is mapped twice ({mapping[target]} and {source})")
        mapping[target] = source
    missing = [c for c in CAMERAS if c not in mapping]
    if missing:
        raise ConvertError(f"--cameras: no ALOHA camera for {missing}; lapo episodes need all of {list(CAMERAS)}")
    return mapping


def default_camera_map() -> str:
    return ",".join(f"{aloha}:{lapo}" for lapo, aloha in ALOHA_CAMERAS.items())


def aloha_files(source: Path) -> list[Path]:
    """The episode file, or a directory's *.hdf5/*.h5 files in natural order (episode_2 before episode_10)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ConvertError(f"{source}: no such file or directory")
    files = [p for p in source.iterdir() if p.suffix in (".hdf5", ".h5") and p.is_file()]
    if not files:
        raise ConvertError(f"{source}: directory holds no .hdf5/.h5 ALOHA episode files")
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


def decode_jpeg(data: np.ndarray, where: str) -> np.ndarray:
    """One ALOHA JPEG frame (zero padding after the image is ignored) as the HxWx3 array ALOHA's
    recorder encoded: cv2.imencode takes its array for BGR, so the channels PIL decodes are
    reversed back (what cv2.imdecode, used by ACT and LeRobot's converter, returns)."""
    try:
        with Image.open(io.BytesIO(np.asarray(data, dtype=np.uint8).tobytes())) as img:
            return np.ascontiguousarray(np.asarray(img.convert("RGB"))[..., ::-1])
    except (OSError, SyntaxError) as exc:
        raise ConvertError(f"{where}: cannot decode the JPEG-encoded frame ({exc})") from exc


class AlohaEpisode:
    """One ALOHA file opened and checked; `rows()` yields its samples in lapo's form."""

    def __init__(self, path: Path, options: AlohaOptions) -> None:
        self.path, self.options = path, options
        if not h5py.is_hdf5(path):
            raise ConvertError(f"{path}: not an HDF5 file")
        self.file = h5py.File(path, "r")
        try:
            self._check()
        except BaseException:
            self.file.close()
            raise

    def __enter__(self) -> "AlohaEpisode":
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def _dataset(self, key: str, what: str) -> h5py.Dataset:
        ds = self.file.get(key)
        if not isinstance(ds, h5py.Dataset):
            raise ConvertError(f"{self.path}: no /{key} dataset ({what}); the file has {self._keys()}")
        return ds

    def _keys(self) -> list[str]:
        keys: list[str] = []
        self.file.visititems(lambda name, obj: keys.append("/" + name) if isinstance(obj, h5py.Dataset) else None)
        return keys

    def _check(self) -> None:
        f, opts = self.file, self.options
        self.qpos = self._dataset(QPOS_KEY, "joint positions [T, J]")
        self.action = self._dataset(ACTION_KEY, "actions [T, A]")
        self.n = self.qpos.shape[0] if self.qpos.ndim == 2 else -1
        action_names = opts.action_names or opts.joint_names
        for ds, names, label in ((self.qpos, opts.joint_names, "--joint_names"),
                                 (self.action, action_names, "--action_names" if opts.action_names else "--joint_names")):
            if ds.ndim != 2 or not np.issubdtype(ds.dtype, np.number):
                raise ConvertError(f"{self.path}: /{ds.name.lstrip('/')} is {ds.dtype} {ds.shape}, expected a float [T, D] array")
            if ds.shape[1] != len(names):
                raise ConvertError(f"{self.path}: /{ds.name.lstrip('/')} has {ds.shape[1]} columns but {label} names "
                                   f"{len(names)} ({list(names)}); give the file's names with {label}")
        if self.action.shape[0] != self.n:
            raise ConvertError(f"{self.path}: /{ACTION_KEY} has {self.action.shape[0]} rows, /{QPOS_KEY} {self.n}")
        if self.n == 0:
            raise ConvertError(f"{self.path}: the episode has no steps (/{QPOS_KEY} is empty)")
        for ds in (self.qpos, self.action):
            bad = ~np.isfinite(ds[()])
            if bad.any():
                raise ConvertError(f"{self.path}: /{ds.name.lstrip('/')} holds {int(bad.sum())} NaN/inf values "
                                   f"(first rows {np.unique(np.nonzero(bad)[0])[:5].tolist()})")
        group = f.get(IMAGES_GROUP)
        if not isinstance(group, h5py.Group) or not len(group):
            raise ConvertError(f"{self.path}: no camera images (expected /{IMAGES_GROUP}/<camera> datasets, raw "
                               f"[T, H, W, 3] uint8 or JPEG bytes [T, L]); lapo episodes need images. The file has "
                               f"{self._keys()}")
        self.images: dict[str, h5py.Dataset] = {}
        for lapo_cam, aloha_cam in opts.cameras.items():
            ds = group.get(aloha_cam)
            if not isinstance(ds, h5py.Dataset):
                raise ConvertError(f"{self.path}: no camera {aloha_cam!r} (for {lapo_cam}) in /{IMAGES_GROUP}; "
                                   f"the file has cameras {sorted(group)} (choose with --cameras)")
            raw = ds.ndim == 4 and ds.shape[-1] == 3 and ds.dtype == np.uint8
            jpeg = ((ds.ndim == 2 and ds.dtype == np.uint8)
                    or (ds.ndim == 1 and h5py.check_vlen_dtype(ds.dtype) is not None))
            if not (raw or jpeg):
                raise ConvertError(f"{self.path}: /{IMAGES_GROUP}/{aloha_cam} is {ds.dtype} {ds.shape}, expected "
                                   "raw [T, H, W, 3] uint8 or JPEG-encoded [T, L] uint8")
            if ds.shape[0] != self.n:
                raise ConvertError(f"{self.path}: /{IMAGES_GROUP}/{aloha_cam} has {ds.shape[0]} frames, "
                                   f"/{QPOS_KEY} {self.n} rows")
            self.images[lapo_cam] = ds
        self.reward = next((f[k] for k in REWARD_KEYS if isinstance(f.get(k), h5py.Dataset)), None)
        if self.reward is not None and self.reward.shape != (self.n,):
            raise ConvertError(f"{self.path}: /{self.reward.name.lstrip('/')} has shape {self.reward.shape}, "
                               f"expected [{self.n}] (one reward per step)")

    def config(self) -> EpisodeConfig:
        opts = self.options
        attrs = {"source": str(self.path), "source_format": "aloha_hdf5",
                 "aloha_cameras": json.dumps(opts.cameras)}
        if "sim" in self.file.attrs:
            attrs["aloha_sim"] = bool(self.file.attrs["sim"])
        return EpisodeConfig(joint_names=opts.joint_names, action_names=opts.action_names or opts.joint_names,
                             rate_hz=opts.rate_hz, streams=(), has_reward=self.reward is not None,
                             compression=opts.compression, flush_every=BLOCK, attrs=attrs)

    def _frames(self, cam: str, start: int, stop: int) -> list[np.ndarray]:
        ds = self.images[cam]
        block = ds[start:stop]
        if ds.ndim == 4:
            frames = list(block)
        else:
            frames = [decode_jpeg(b, f"{self.path}: /{IMAGES_GROUP}/{self.options.cameras[cam]} frame {start + i}")
                      for i, b in enumerate(block)]
        size = self.options.image_size
        return [resize_image(np.ascontiguousarray(fr), size) for fr in frames] if size else frames

    def rows(self) -> Iterator[Row]:
        period = 1.0 / self.options.rate_hz
        for start in range(0, self.n, BLOCK):
            stop = min(start + BLOCK, self.n)
            images = {cam: self._frames(cam, start, stop) for cam in CAMERAS}
            qpos, action = self.qpos[start:stop], self.action[start:stop]
            reward = self.reward[start:stop] if self.reward is not None else None
            for i in range(stop - start):
                yield Row(images={cam: images[cam][i] for cam in CAMERAS}, joint=qpos[i], action=action[i],
                          reward=None if reward is None else float(reward[i]), timestamp=(start + i) * period,
                          stamps={})


def convert_aloha(source: Path, output: Path, options: AlohaOptions) -> list[Path]:
    """Every ALOHA episode file of `source` (a file or a directory) as a lapo episode in `output`.

    All files are checked before the first is converted, so a bad file stops the conversion
    before anything is written."""
    files = aloha_files(source)
    for path in files:
        with AlohaEpisode(path, options):
            pass
    out = EpisodeOutput(output)
    try:
        for path in files:
            with AlohaEpisode(path, options) as episode:
                out.write(episode.config(), episode.rows(), options.outcome)
    finally:
        written = out.close()
    return written
