"""Conversion speed of `convert from-rosbag2`: a bag of three 640x480 rgb8 cameras at 30 Hz, joint
states at 200 Hz and commands at 30 Hz, converted with the shipped config/recorder.yaml (30 Hz,
84x84 stored images, lzf).

Writes the bag (not timed), converts it in this process and prints the camera frames converted per
second and the ratio of the bag's duration to the conversion's wall time (how many times faster
than the live recorder, which takes the bag's duration). Target: at least 5x real time.

    python bench/convert_throughput.py --duration 60
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lapo_learning.convert.rosbag2 import BagOptions, convert_bags  # noqa: E402
from lapo_learning.recording import DEFAULT_CAMERA_TOPICS  # noqa: E402

CONFIG = REPO / "config" / "recorder.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of recording in the bag")
    p.add_argument("--width", type=int, default=640, help="camera image width")
    p.add_argument("--height", type=int, default=480, help="camera image height")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="rosbag2 storage of the bag")
    p.add_argument("--workdir", type=Path, default=None,
                   help="where the bag and the episodes go (default: a temporary directory, removed after)")
    return p.parse_args(argv)


def write_bag(path: Path, args: argparse.Namespace) -> int:
    """The bag; returns its number of messages. Frames cycle through a few prebuilt images."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    import yaml

    ts = get_typestore(Stores.LATEST)
    types = ts.types
    joints = yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]["joint_names"]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8).reshape(-1) for _ in range(4)]

    def header(t: float):
        ns = round(t * 1e9)
        return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](
            sec=ns // 10**9, nanosec=ns % 10**9), frame_id="")

    events: list[tuple[float, str, str, object]] = []
    t0 = 1_700_000_000.0
    for k in range(int(args.duration * 30)):
        t = t0 + k / 30
        for c, topic in enumerate(DEFAULT_CAMERA_TOPICS.values()):
            events.append((t + 0.002 + 0.001 * c, topic, "sensor_msgs/msg/Image", lambda t=t, k=k, c=c: types[
                "sensor_msgs/msg/Image"](header=header(t), height=args.height, width=args.width, encoding="rgb8",
                                         is_bigendian=0, step=3 * args.width, data=images[(k + c) % 4])))
        events.append((t + 0.001, "/forward_position_controller/commands", "std_msgs/msg/Float64MultiArray",
                       lambda k=k: types["std_msgs/msg/Float64MultiArray"](
                           layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                           data=np.full(16, 0.001 * k))))
    for i in range(int(args.duration * 200)):
        t = t0 + i / 200
        events.append((t + 0.0005, "/joint_states", "sensor_msgs/msg/JointState", lambda t=t, i=i: types[
            "sensor_msgs/msg/JointState"](header=header(t), name=list(reversed(joints)),
                                          position=np.full(16, 0.001 * i), velocity=np.zeros(0), effort=np.zeros(0))))
    events.sort(key=lambda e: e[0])
    plugin = StoragePlugin.MCAP if args.storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for t, topic, msgtype, make in events:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(connections[topic], round(t * 1e9), bytes(ts.serialize_cdr(make(), msgtype)))
    return len(events)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lapo_convert_bench_"))
    try:
        bag, out = workdir / "bag", workdir / "episodes"
        t = time.perf_counter()
        n_messages = write_bag(bag, args)
        size = sum(p.stat().st_size for p in bag.rglob("*") if p.is_file())
        print(f"bag: {args.duration:g} s, {n_messages} messages, {size / 1e9:.2f} GB ({args.storage}), "
              f"written in {time.perf_counter() - t:.1f} s")
        wall, cpu = time.perf_counter(), time.process_time()
        written = convert_bags([bag], out, BagOptions(config=CONFIG))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        with h5py.File(written[0], "r") as f:
            samples = len(f["actions"])
            skipped = f.attrs["skipped"]
        frames = 3 * samples
        print(f"converted: {samples} samples (expected ~{int(args.duration * 30)}), skipped {skipped}")
        print(f"conversion: {wall:.2f} s wall, {cpu:.2f} s CPU; {frames / wall:.0f} camera frames/s; "
              f"{args.duration / wall:.1f}x real time (target >= 5x)")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
