"""Episode files for the dataset tests: valid ones, and the broken kinds a real disk or writer leaves."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lapo_learning import dataset_format as fmt
from lapo_learning.schema import CAMERAS, ObservationSchema


def write_episode(path: Path, n: int, *, joints: int = 16, size=(48, 64), terminal: bool = False,
                  timeout: bool = False, complete: Any = None, offset: float = 0.0) -> None:
    """A valid seed-layout episode; `complete` is stored as given (None: no flag)."""
    with h5py.File(path, "w") as f:
        for cam in CAMERAS:
            f[fmt.image_key(cam)] = np.full((n, *size, 3), 7, np.uint8)
        # small steps, like a real joint's (the outlier check flags jumps of many radians per row)
        f[fmt.JOINT_PATH] = np.arange(n * joints, dtype=np.float32).reshape(n, joints) * 0.01 + offset
        f[fmt.ACTIONS_KEY] = np.ones((n, joints), np.float32)
        f[fmt.REWARDS_KEY] = np.zeros(n, np.float32)
        term = np.zeros(n, bool)
        term[-1] = terminal
        f[fmt.TERMINALS_KEY] = term
        to = np.zeros(n, bool)
        to[-1] = timeout
        f[fmt.TIMEOUTS_KEY] = to
        if complete is not None:
            f.attrs[fmt.COMPLETE_ATTR] = complete


def write_empty_partial(path: Path, complete: bool | None = False, joints: int = 16) -> None:
    """What a recording killed before its first sample leaves: the recorder's resizable datasets
    with 0 rows, and `complete=False` (None: no flag at all)."""
    with h5py.File(path, "w") as f:
        for cam in CAMERAS:
            f.create_dataset(fmt.image_key(cam), shape=(0, 48, 64, 3), maxshape=(None, 48, 64, 3),
                             dtype=np.uint8, chunks=(1, 48, 64, 3))
        for key in (fmt.JOINT_PATH, fmt.ACTIONS_KEY):
            f.create_dataset(key, shape=(0, joints), maxshape=(None, joints), dtype=np.float32, chunks=(256, joints))
        for key, dtype in ((fmt.REWARDS_KEY, np.float32), (fmt.TERMINALS_KEY, np.bool_), (fmt.TIMEOUTS_KEY, np.bool_)):
            f.create_dataset(key, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(256,))
        if complete is not None:
            f.attrs[fmt.COMPLETE_ATTR] = complete


def write_presized(path: Path, declared: int, written: int, *, chunked: bool, joints: int = 16,
                   size=(4, 4)) -> None:
    """A file whose datasets were created with `declared` rows of which only the first `written`
    were written (a writer that sizes its datasets up front and dies, or stops early).

    `chunked`: resizable chunked datasets (one image per chunk, 256 rows of joints per chunk, as
    the recorder writes); else h5py's default contiguous storage."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        def create(key: str, shape: tuple[int, ...], dtype: Any, chunk_rows: int) -> h5py.Dataset:
            layout = {"chunks": (chunk_rows, *shape[1:]), "maxshape": (None, *shape[1:])} if chunked else {}
            return f.create_dataset(key, shape=shape, dtype=dtype, **layout)

        for cam in CAMERAS:
            create(fmt.image_key(cam), (declared, *size, 3), np.uint8, 1)[:written] = (
                rng.integers(1, 256, (written, *size, 3), dtype=np.uint8))
        moving = np.linspace(-0.5, 0.5, written, dtype=np.float32)[:, None] * np.ones(joints, np.float32)
        create(fmt.JOINT_PATH, (declared, joints), np.float32, 256)[:written] = moving
        create(fmt.ACTIONS_KEY, (declared, joints), np.float32, 256)[:written] = moving + 0.01
        create(fmt.REWARDS_KEY, (declared,), np.float32, 256)[:written] = 0.0
        create(fmt.TERMINALS_KEY, (declared,), np.bool_, 256)
        f.attrs[fmt.SCHEMA_ATTR] = ObservationSchema(
            image_size=size, joint_names=ObservationSchema.default_names("joint", joints),
            action_names=ObservationSchema.default_names("action", joints)).to_json()


def truncate(path: Path) -> None:
    """Cut the file in half, as a full disk or an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def corrupt_image_chunk(path: Path, camera: str = CAMERAS[0], row: int = 1) -> None:
    """Overwrite one compressed image chunk with garbage: the file opens and its layout reads as
    valid; only reading that image fails (bit rot, a bad sector)."""
    with h5py.File(path, "r") as f:
        info = f[fmt.image_key(camera)].id.get_chunk_info_by_coord((row, 0, 0, 0))
    with path.open("r+b") as raw:
        raw.seek(info.byte_offset)
        raw.write(b"\xff" * info.size)


def write_compressed_episode(path: Path, n: int, size=(48, 64), joints: int = 16) -> None:
    """A valid episode with lzf-compressed images, one per chunk (the recorder's storage)."""
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] + np.full((n, *size, 3), 40, np.uint8)
    with h5py.File(path, "w") as f:
        for cam in CAMERAS:
            f.create_dataset(fmt.image_key(cam), data=images, chunks=(1, *size, 3), compression="lzf")
        f[fmt.JOINT_PATH] = np.linspace(-0.5, 0.5, n * joints, dtype=np.float32).reshape(n, joints)
        f[fmt.ACTIONS_KEY] = f[fmt.JOINT_PATH][()] + 0.01
        f[fmt.REWARDS_KEY] = np.zeros(n, np.float32)
        f[fmt.TERMINALS_KEY] = np.zeros(n, bool)
