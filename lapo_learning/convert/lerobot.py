"""A lapo dataset -> a LeRobotDataset v3.0 folder (`convert to-lerobot`), written with pyarrow and PyAV.

    meta/info.json, meta/stats.json, meta/tasks.parquet, meta/episodes/chunk-000/file-000.parquet
    data/chunk-000/file-000.parquet                  one row per frame
    videos/observation.images.<camera>/chunk-000/file-000.mp4

Frames: `observation.state` (the joints, named), `action`, `next.reward`, `next.done` (lapo's
terminal), `timestamp` = frame_index / fps, `frame_index`, `episode_index`, `index`, `task_index`.
The cameras take ALOHA's names (left_image -> cam_left_wrist, right_image -> cam_right_wrist,
global_image -> cam_high), at the size stored in the lapo files. A lapo episode with a recording
gap (`after_gap`) becomes one LeRobot episode per unbroken stretch: LeRobot's timeline is
frame_index / fps, and its action chunks must not span the pause. `lapo/source_file` and
`lapo/source_from_row` in the episodes table say where each episode came from.

Videos are encoded like LeRobot's own recorder does (a key frame every `gop` frames for fast
random access): h264 (default, yuv420p), av1 (libsvtav1, LeRobot's default codec) or lossless
(RGB h264 at qp 0: decodes to the stored pixels exactly). The folder is built beside the output
under a temporary name and renamed into place when complete.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from lapo_learning import dataset_format as fmt
from lapo_learning.convert import ConvertError, require
from lapo_learning.convert.aloha import ALOHA_CAMERAS
from lapo_learning.dataset import segment_ends
from lapo_learning.schema import CAMERAS

log = logging.getLogger(__name__)

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory (LeRobot's default)
DATA_FILE_MB = 100  # a data/episodes parquet file is closed past this size (LeRobot's default)
VIDEO_FILE_MB = 500  # a video file is closed past this size (LeRobot's default)
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
TASKS_PATH = "meta/tasks.parquet"
STATE_KEY, ACTION_KEY = "observation.state", "action"
CAMERA_KEYS = {cam: f"observation.images.{ALOHA_CAMERAS[cam]}" for cam in CAMERAS}
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STATS_FRAMES = 100  # frames per episode sampled for the image statistics (LeRobot samples ~100)
STATS_PIXELS = 150  # sampled frames are strided down to about this many pixels per side
BLOCK = 64  # frames read from HDF5 at a time
# --video_codec -> (encoder, pixel format, options besides the key-frame interval)
VIDEO_CODECS: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("libx264", "yuv420p", {"preset": "medium"}),
    "av1": ("libsvtav1", "yuv420p", {"preset": "8"}),
    "lossless": ("libx264rgb", "rgb24", {"qp": "0", "preset": "medium"}),
}


DATASET_CARD = """---
tags: [LeRobot, lapo]
task_categories: [robotics]
configs:
- config_name: default
  data_files: data/*/*.parquet
---
# {repo_id}

A LeRobotDataset v3.0 exported by lapo (`python -m lapo_learning.convert to-lerobot`) from `{source}`:
{episodes} episodes, {frames} frames at {fps} fps.

```python
from lerobot.datasets.lerobot_dataset import LeRobotDataset
dataset = LeRobotDataset("{repo_id}", root="<this folder>")
```
"""


@dataclass(frozen=True)
class LeRobotOptions:
    repo_id: str
    task: str = "perform the demonstrated task"
    robot_type: str | None = "aloha"
    fps: int | None = None  # None: the dataset's recording rate
    video_codec: str = "h264"
    crf: int = 23  # h264/av1 quality (lower = better, larger files)
    gop: int = 2  # frames between key frames
    include_incomplete: bool = False


@dataclass
class Segment:
    """Rows [start, stop) of one lapo file: one LeRobot episode."""

    path: Path
    start: int
    stop: int


def _chunk_file(i: int) -> dict[str, int]:
    return {"chunk_index": i // CHUNKS_SIZE, "file_index": i % CHUNKS_SIZE}


def _feature_stats(values: np.ndarray, axis: Any) -> dict[str, np.ndarray]:
    stats = {"min": values.min(axis=axis), "max": values.max(axis=axis), "mean": values.mean(axis=axis),
             "std": values.std(axis=axis), "count": np.array([len(values)])}
    stats.update({k: np.quantile(values, q, axis=axis) for k, q in QUANTILES.items()})
    return stats


def column_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot's statistics of a [N] or [N, D] column (a [N] column gives arrays of shape (1,))."""
    values = np.asarray(values, dtype=np.float64)
    return _feature_stats(values.reshape(len(values), -1), axis=0)


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of [N, H, W, 3] uint8 frames in [0, 1], shaped (3, 1, 1) as LeRobot's."""
    step = max(1, max(frames.shape[1:3]) // STATS_PIXELS)
    pixels = frames[:, ::step, ::step].reshape(-1, 3).astype(np.float64) / 255.0
    stats = {k: v.reshape(3, 1, 1) for k, v in _feature_stats(pixels, axis=0).items() if k != "count"}
    stats["count"] = np.array([len(frames)])
    return stats


def aggregate_stats(episodes: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Dataset statistics from per-episode ones, as LeRobot aggregates them: exact min, max, mean
    and std; quantiles as the frame-weighted mean of the episodes' quantiles."""
    counts = np.array([float(s["count"][0]) for s in episodes])
    total = counts.sum()

    def weighted(key: str) -> np.ndarray:
        stacked = np.stack([s[key] for s in episodes])
        return np.tensordot(counts, stacked, axes=1) / total

    mean = weighted("mean")
    variance = sum(c * (s["std"] ** 2 + (s["mean"] - mean) ** 2) for c, s in zip(counts, episodes)) / total
    out = {"min": np.min([s["min"] for s in episodes], axis=0), "max": np.max([s["max"] for s in episodes], axis=0),
           "mean": mean, "std": np.sqrt(variance), "count": np.array([int(total)])}
    out.update({k: weighted(k) for k in QUANTILES})
    return out


def source_segments(dataset: Path, include_incomplete: bool) -> tuple[list[Segment], fmt.DatasetCheck]:
    """The dataset checked as the loader checks it, cut into episodes and at recording gaps."""
    check = fmt.check_dataset(dataset, include_incomplete)
    for c in check.incomplete:
        log.warning("skipping %s: %s", c.path, check.skip_reason(c))
    if check.invalid:
        raise fmt.DatasetError("invalid dataset files (fix or remove them; `create_dataset --validate` "
                               "lists the same):\n  " + "\n  ".join(check.problem_lines()))
    if check.reference is None:
        raise fmt.DatasetError(f"{dataset}: no complete episode to export")
    segments = []
    for c in check.usable:
        with fmt.open_episode(c.path) as f:
            gaps = f[fmt.AFTER_GAP_KEY][()].astype(bool) if fmt.AFTER_GAP_KEY in f else None
            ends = segment_ends(fmt.episode_ends(f), gaps)
        segments += [Segment(c.path, int(a), int(b)) for a, b in zip(np.concatenate([[0], ends[:-1]]), ends)]
    return segments, check


class VideoFiles:
    """The mp4 files of one camera: frames appended episode after episode, a new file past VIDEO_FILE_MB."""

    def __init__(self, av: Any, root: Path, key: str, size: tuple[int, int], fps: int, options: LeRobotOptions):
        self.av, self.root, self.key, self.fps = av, root, key, fps
        self.height, self.width = size
        encoder, pix_fmt, extra = VIDEO_CODECS[options.video_codec]
        if pix_fmt == "yuv420p" and (self.height % 2 or self.width % 2):
            pix_fmt = "yuv444p"  # 4:2:0 needs even sizes
        self.encoder, self.pix_fmt = encoder, pix_fmt
        self.codec_options = {"g": str(options.gop), **extra}
        if options.video_codec != "lossless":
            self.codec_options["crf"] = str(options.crf)
        self.index = -1  # file number (chunk * CHUNKS_SIZE + file)
        self.container: Any = None
        self.stream: Any = None
        self.frames = 0  # frames in the open file
        self.bytes = 0
        self.info: dict[str, Any] | None = None

    def _open(self) -> None:
        self.index += 1
        path = self.root / VIDEO_PATH.format(video_key=self.key, **_chunk_file(self.index))
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = self.av.open(str(path), "w")
        self.stream = self.container.add_stream(self.encoder, rate=self.fps, options=self.codec_options)
        self.stream.width, self.stream.height, self.stream.pix_fmt = self.width, self.height, self.pix_fmt
        self.stream.codec_context.time_base = Fraction(1, self.fps)
        self.frames = self.bytes = 0

    def _mux(self, packets: Any) -> None:
        for packet in packets:
            self.bytes += packet.size
            self.container.mux(packet)

    def start_episode(self) -> dict[str, Any]:
        """Where the next episode's frames go: the file's indices and its start time."""
        if self.container is None or self.bytes >= VIDEO_FILE_MB * 2**20:
            self.close()
            self._open()
        loc = _chunk_file(self.index)
        return {f"videos/{self.key}/chunk_index": loc["chunk_index"], f"videos/{self.key}/file_index": loc["file_index"],
                f"videos/{self.key}/from_timestamp": self.frames / self.fps}

    def add(self, frame: np.ndarray) -> None:
        video_frame = self.av.VideoFrame.from_ndarray(frame, format="rgb24")
        video_frame.pts = self.frames  # in 1/fps: frame i is shown at exactly i / fps
        self._mux(self.stream.encode(video_frame))
        self.frames += 1

    def end_time(self) -> float:
        return self.frames / self.fps

    def close(self) -> None:
        if self.container is None:
            return
        self._mux(self.stream.encode())  # flush the encoder's delayed frames
        if self.info is None:
            self.info = {"video.height": self.height, "video.width": self.width,
                         "video.codec": self.stream.codec_context.codec.canonical_name,
                         "video.pix_fmt": self.pix_fmt, "video.is_depth_map": False, "video.fps": self.fps,
                         "video.channels": 3, "has_audio": False}
        self.container.close()
        self.container = None


class DataFiles:
    """The frame table in parquet files, a new file past DATA_FILE_MB."""

    def __init__(self, pa: Any, pq: Any, root: Path, schema: Any) -> None:
        self.pa, self.pq, self.root, self.schema = pa, pq, root, schema
        self.index = -1
        self.writer: Any = None
        self.rows = self.bytes = 0

    def add(self, table: Any) -> dict[str, int]:
        if self.writer is None or self.bytes >= DATA_FILE_MB * 2**20:
            self.close()
            self.index += 1
            path = self.root / DATA_PATH.format(**_chunk_file(self.index))
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = self.pq.ParquetWriter(str(path), self.schema)
            self.rows = self.bytes = 0
        self.writer.write_table(table)
        self.rows += table.num_rows
        self.bytes += table.nbytes
        loc = _chunk_file(self.index)
        return {"data/chunk_index": loc["chunk_index"], "data/file_index": loc["file_index"]}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


@dataclass
class ExportState:
    frames: int = 0
    episodes: list[dict[str, Any]] = field(default_factory=list)
    stats: list[dict[str, dict[str, np.ndarray]]] = field(default_factory=list)


def _recorded_fps(check: fmt.DatasetCheck, override: int | None) -> int:
    rates = {c.schema.rate_hz for c in check.usable}
    if override is not None:
        if override <= 0:
            raise ConvertError(f"--fps must be > 0, got {override}")
        if rates - {None, float(override)}:
            log.warning("--fps %d differs from the recording rate %s Hz: LeRobot's timestamps will use %d",
                        override, sorted(r for r in rates if r), override)
        return override
    if None in rates or len(rates) != 1:
        raise ConvertError(f"the dataset's recording rate is {'unknown' if None in rates else sorted(rates)} "
                           "(attrs/rate_hz): give the frame rate with --fps")
    rate = rates.pop()
    if abs(rate - round(rate)) > 1e-6:
        raise ConvertError(f"the recording rate {rate} Hz is not a whole number, which LeRobot's fps must be: "
                           "give one with --fps")
    return int(round(rate))


def _image_sizes(segments: list[Segment]) -> dict[str, tuple[int, int]]:
    sizes: dict[str, dict[tuple[int, int], Path]] = {c: {} for c in CAMERAS}
    for seg in segments:
        with fmt.open_episode(seg.path) as f:
            for cam in CAMERAS:
                sizes[cam].setdefault(tuple(f[fmt.image_key(cam)].shape[1:3]), seg.path)
    for cam, found in sizes.items():
        if len(found) > 1:
            raise ConvertError(f"{cam}: the files store images of different sizes ("
                               + ", ".join(f"{h}x{w} in {p}" for (h, w), p in found.items())
                               + "); a LeRobot video feature has one size")
    return {cam: next(iter(found)) for cam, found in sizes.items()}


def _frame_schema(pa: Any, joint_dim: int, action_dim: int) -> Any:
    return pa.schema([
        (STATE_KEY, pa.list_(pa.float32(), joint_dim)), (ACTION_KEY, pa.list_(pa.float32(), action_dim)),
        ("next.reward", pa.float32()), ("next.done", pa.bool_()), ("timestamp", pa.float32()),
        ("frame_index", pa.int64()), ("episode_index", pa.int64()), ("index", pa.int64()), ("task_index", pa.int64()),
    ])


def _features(schema: Any, sizes: dict[str, tuple[int, int]], videos: dict[str, VideoFiles]) -> dict[str, Any]:
    scalar = {"shape": [1], "names": None}
    features: dict[str, Any] = {
        CAMERA_KEYS[cam]: {"dtype": "video", "shape": [*sizes[cam], 3], "names": ["height", "width", "channels"],
                           "info": videos[cam].info} for cam in CAMERAS}
    features[STATE_KEY] = {"dtype": "float32", "shape": [schema.joint_dim], "names": list(schema.joint_names)}
    features[ACTION_KEY] = {"dtype": "float32", "shape": [schema.action_dim], "names": list(schema.action_names)}
    features["next.reward"] = {"dtype": "float32", **scalar}
    features["next.done"] = {"dtype": "bool", **scalar}
    features["timestamp"] = {"dtype": "float32", **scalar}
    for key in ("frame_index", "episode_index", "index", "task_index"):
        features[key] = {"dtype": "int64", **scalar}
    return features


def _read_blocks(ds: h5py.Dataset, start: int, stop: int) -> Iterator[np.ndarray]:
    for a in range(start, stop, BLOCK):
        yield ds[a:min(a + BLOCK, stop)]


def _export_segment(seg: Segment, state: ExportState, videos: dict[str, VideoFiles], data: DataFiles,
                    pa: Any, fps: int) -> None:
    n = seg.stop - seg.start
    episode_index = len(state.episodes)
    row: dict[str, Any] = {"episode_index": episode_index, "tasks": None, "length": n}
    stats: dict[str, dict[str, np.ndarray]] = {}
    with fmt.open_episode(seg.path) as f:
        rows = slice(seg.start, seg.stop)
        joint = f[fmt.JOINT_PATH][rows].astype(np.float32)
        action = f[fmt.ACTIONS_KEY][rows].astype(np.float32)
        reward = f[fmt.REWARDS_KEY][rows].astype(np.float32)
        done = f[fmt.TERMINALS_KEY][rows].astype(bool)
        sampled = set(np.linspace(0, n - 1, min(n, STATS_FRAMES)).round().astype(int).tolist())
        for cam in CAMERAS:
            video = videos[cam]
            row.update(video.start_episode())
            picked = []
            offset = 0
            for block in _read_blocks(f[fmt.image_key(cam)], seg.start, seg.stop):
                for i, frame in enumerate(block):
                    video.add(frame)
                    if offset + i in sampled:
                        picked.append(frame)
                offset += len(block)
            row[f"videos/{video.key}/to_timestamp"] = video.end_time()
            stats[CAMERA_KEYS[cam]] = image_stats(np.stack(picked))
    frame_index = np.arange(n, dtype=np.int64)
    timestamp = (frame_index / fps).astype(np.float32)
    index = state.frames + frame_index
    columns = {
        STATE_KEY: joint, ACTION_KEY: action, "next.reward": reward, "next.done": done, "timestamp": timestamp,
        "frame_index": frame_index, "episode_index": np.full(n, episode_index, np.int64), "index": index,
        "task_index": np.zeros(n, np.int64)}
    table = pa.table({key: pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]) if v.ndim == 2
                      else pa.array(v) for key, v in columns.items()}, schema=data.schema)
    row.update(data.add(table))
    for key, values in columns.items():
        stats[key] = column_stats(values)
    row.update({"dataset_from_index": state.frames, "dataset_to_index": state.frames + n,
                "lapo/source_file": str(seg.path), "lapo/source_from_row": seg.start})
    state.frames += n
    state.episodes.append(row)
    state.stats.append(stats)


def _json_ready(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {key: {k: np.asarray(v).tolist() for k, v in feature.items()} for key, feature in stats.items()}


def _write_meta(pa: Any, pq: Any, root: Path, state: ExportState, info: dict[str, Any], task: str) -> None:
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    keys = state.stats[0].keys()
    dataset_stats = {key: aggregate_stats([s[key] for s in state.stats]) for key in keys}
    (meta / "stats.json").write_text(json.dumps(_json_ready(dataset_stats), indent=4))
    # pandas' index metadata: LeRobot reads this table with pandas.read_parquet, indexed by the task.
    tasks = pa.table({"task_index": pa.array([0], pa.int64()), "task": pa.array([task])})
    pandas_meta = {"index_columns": ["task"], "column_indexes": [],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    tasks = tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    pq.write_table(tasks, str(root / TASKS_PATH))
    episode_rows = []
    for row, stats in zip(state.episodes, state.stats):
        row = dict(row, tasks=[task], **{"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        for key, feature in _json_ready(stats).items():
            row.update({f"stats/{key}/{k}": v for k, v in feature.items()})
        episode_rows.append(row)
    path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episode_rows), str(path))


def export_lerobot(dataset: Path, output: Path, options: LeRobotOptions) -> Path:
    """Write `dataset` (a lapo file or directory) as a LeRobotDataset v3.0 folder at `output`."""
    pa = require("pyarrow", "to-lerobot")
    pq = require("pyarrow.parquet", "to-lerobot")
    av = require("av", "to-lerobot")
    if options.video_codec not in VIDEO_CODECS:
        raise ConvertError(f"--video_codec must be one of {sorted(VIDEO_CODECS)}, got {options.video_codec!r}")
    if options.gop < 1:
        raise ConvertError(f"--gop must be >= 1, got {options.gop}")
    if output.exists():
        raise FileExistsError(f"{output}: exists; refusing to overwrite it (remove it or pick another --output)")
    segments, check = source_segments(dataset, options.include_incomplete)
    schema = check.reference.schema
    fps = _recorded_fps(check, options.fps)
    sizes = _image_sizes(segments)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    state = ExportState()
    videos = {cam: VideoFiles(av, partial, CAMERA_KEYS[cam], sizes[cam], fps, options) for cam in CAMERAS}
    data = DataFiles(pa, pq, partial, _frame_schema(pa, schema.joint_dim, schema.action_dim))
    try:
        partial.mkdir(parents=True)
        for seg in segments:
            _export_segment(seg, state, videos, data, pa, fps)
        for video in videos.values():
            video.close()
        data.close()
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": options.robot_type,
                "total_episodes": len(state.episodes), "total_frames": state.frames, "total_tasks": 1,
                "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_MB,
                "video_files_size_in_mb": VIDEO_FILE_MB, "fps": fps,
                "splits": {"train": f"0:{len(state.episodes)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
                "features": _features(schema, sizes, videos)}
        _write_meta(pa, pq, partial, state, info, options.task)
        (partial / "README.md").write_text(DATASET_CARD.format(repo_id=options.repo_id, source=dataset, fps=fps,
                                                                episodes=len(state.episodes), frames=state.frames))
        partial.rename(output)
    except BaseException:
        for video in videos.values():
            if video.container is not None:
                video.container.close()
        data.close()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("wrote %s: %d episodes, %d frames at %d fps (from %d lapo files)", output, len(state.episodes),
             state.frames, fps, len(check.usable))
    return output
