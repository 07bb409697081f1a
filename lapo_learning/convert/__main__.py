"""Convert datasets to and from lapo's episode files (no ROS install needed).

    python -m lapo_learning.convert from-rosbag2 BAG --config config/recorder.yaml --output DIR
    python -m lapo_learning.convert from-aloha SRC --output DIR
    python -m lapo_learning.convert to-lerobot DATASET --output DIR --repo_id NAME

`python -m lapo_learning.convert SUBCOMMAND --help` explains each one's flags.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lapo_learning.convert import ConvertError
from lapo_learning.convert.aloha import ALOHA_JOINT_NAMES, ALOHA_RATE_HZ, AlohaOptions, convert_aloha, \
    default_camera_map, parse_camera_map
from lapo_learning.convert.lerobot import VIDEO_CODECS, LeRobotOptions, export_lerobot
from lapo_learning.convert.rosbag2 import BagOptions, convert_bags
from lapo_learning.dataset_format import DatasetError
from lapo_learning.episode_writer import COMPRESSIONS, OUTCOMES, EpisodeWriteError
from lapo_learning.recording import ParameterError

log = logging.getLogger("lapo_learning.convert")


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated names, got {text!r}")
    return names


def _episode_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by the converters that write lapo episodes."""
    p.add_argument("--output", required=True, type=Path,
                   help="directory of the lapo episode files (episode_NNNN.hdf5, numbered after those already "
                        "there; created if missing)")
    p.add_argument("--outcome", choices=OUTCOMES, default="success",
                   help="how every converted episode ended, as the recorder's ~/stop marks it: success sets the "
                        "last step terminal and, without a reward in the source, its reward to 1 (the sparse "
                        "outcome reward); failure sets neither; timeout marks the last step a time-out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lapo_learning.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log_level", default="INFO", help="logging level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    bag = sub.add_parser("from-rosbag2", help="ROS 2 bags -> lapo episode files, as the recorder writes them",
                         description="Convert ROS 2 bags (sqlite3 or mcap, read with the pure-Python rosbags "
                                     "library) into lapo episode files exactly as the recorder node would have "
                                     "written them live from the same topics: the same parameter file, sampler, "
                                     "max_age, joint matching by name, image conversion and resizing, per-stream "
                                     "stamps and skip counts. The bag's log time is the recorder's clock.")
    bag.add_argument("bags", nargs="+", type=Path, metavar="BAG",
                     help="a rosbag2 directory (or its .mcap/.db3 file); several are converted in turn")
    bag.add_argument("--config", required=True, type=Path,
                     help="the recorder's parameter file (e.g. config/recorder.yaml): topics, types, joint "
                          "names, record_rate, max_age, image size, compression, max_episode_steps")
    _episode_flags(bag)
    bag.add_argument("--split_on_gap", type=float, default=None, metavar="SECONDS",
                     help="start a new episode after this many seconds without any configured message "
                          "(default: one bag = one episode)")
    bag.add_argument("--episode_marks", default=None, metavar="TOPIC",
                     help="take episodes from a std_msgs/Bool topic (true starts an episode, false ends it "
                          "with --outcome) or std_msgs/String topic (start, stop, success, failure, timeout, "
                          "discard), as the recorder's start/stop/discard services; nothing is recorded "
                          "outside them")

    aloha = sub.add_parser("from-aloha", help="ACT/ALOHA HDF5 episodes -> lapo episode files",
                           description="Convert ACT/ALOHA HDF5 episodes (/observations/qpos, /observations/images/"
                                       "<camera> raw or JPEG-encoded, /action) into lapo episode files. qvel and "
                                       "effort are not part of lapo's observation and are left out.")
    aloha.add_argument("source", type=Path, help="an ALOHA episode file, or a directory of them (*.hdf5, *.h5)")
    _episode_flags(aloha)
    aloha.add_argument("--compression", choices=COMPRESSIONS, default="lzf", help="HDF5 compression of the images")
    aloha.add_argument("--cameras", type=parse_camera_map, default=parse_camera_map(default_camera_map()),
                       help="ALOHA_CAMERA:LAPO_CAMERA pairs, comma-separated, one for each lapo camera "
                            f"(default {default_camera_map()}; ACT's sim files have only 'top', which may feed "
                            "several lapo cameras)")
    aloha.add_argument("--joint_names", type=_names, default=ALOHA_JOINT_NAMES,
                       help="comma-separated names of the qpos columns (default ALOHA's 14: six arm joints and "
                            "a gripper per arm, left arm first)")
    aloha.add_argument("--action_names", type=_names, default=None,
                       help="comma-separated names of the action columns (default: --joint_names)")
    aloha.add_argument("--rate_hz", type=float, default=ALOHA_RATE_HZ,
                       help="control rate of the recording (ALOHA and ACT's sim: 50 Hz)")
    aloha.add_argument("--image_size", type=int, nargs=2, metavar=("H", "W"), default=None,
                       help="resize the stored images to H x W with the recorder's resize (default: keep the "
                            "source's size; the trainer resizes at load time anyway)")

    lerobot = sub.add_parser("to-lerobot", help="a lapo dataset -> a LeRobotDataset v3.0 folder",
                             description="Export a lapo dataset (one file or a directory of episode files) as a "
                                         "LeRobotDataset v3.0 folder (parquet + mp4), for LeRobot's ACT, "
                                         "Diffusion Policy and pi0. Episodes marked incomplete are left out.")
    lerobot.add_argument("dataset", type=Path, help="lapo dataset: an HDF5 file or a directory of episode files")
    lerobot.add_argument("--output", required=True, type=Path, help="the LeRobot dataset folder to create (must not exist)")
    lerobot.add_argument("--repo_id", required=True,
                         help="the dataset's LeRobot name (user/name), for LeRobotDataset(repo_id, root=OUTPUT)")
    lerobot.add_argument("--task", default=LeRobotOptions.task,
                         help="the task's text, LeRobot's per-frame language instruction (pi0 reads it)")
    lerobot.add_argument("--robot_type", default=LeRobotOptions.robot_type, help="info.json robot_type")
    lerobot.add_argument("--fps", type=int, default=None,
                         help="frames per second (default: the dataset's recording rate, which must be whole)")
    lerobot.add_argument("--video_codec", choices=sorted(VIDEO_CODECS), default=LeRobotOptions.video_codec,
                         help="h264 (yuv420p), av1 (libsvtav1, LeRobot's default) or lossless (RGB h264, qp 0: "
                              "decodes to the stored pixels exactly, larger files)")
    lerobot.add_argument("--crf", type=int, default=LeRobotOptions.crf,
                         help="h264/av1 constant rate factor: lower is better quality and larger files")
    lerobot.add_argument("--gop", type=int, default=LeRobotOptions.gop,
                         help="frames between key frames (LeRobot's 2: training decodes frames at random times)")
    lerobot.add_argument("--include_incomplete", action="store_true",
                         help="also export episodes the recorder marked incomplete (interrupted recordings)")
    return parser


def run(args: argparse.Namespace) -> None:
    if args.command == "from-rosbag2":
        written = convert_bags(args.bags, args.output, BagOptions(
            config=args.config, outcome=args.outcome, split_on_gap=args.split_on_gap,
            episode_marks=args.episode_marks))
        log.info("%d episode files written to %s", len(written), args.output)
    elif args.command == "from-aloha":
        options = AlohaOptions(cameras=args.cameras, joint_names=args.joint_names, action_names=args.action_names,
                               rate_hz=args.rate_hz, outcome=args.outcome, compression=args.compression,
                               image_size=tuple(args.image_size) if args.image_size else None)
        written = convert_aloha(args.source, args.output, options)
        log.info("%d episode files written to %s", len(written), args.output)
    elif args.command == "to-lerobot":
        export_lerobot(args.dataset, args.output, LeRobotOptions(
            repo_id=args.repo_id, task=args.task, robot_type=args.robot_type, fps=args.fps,
            video_codec=args.video_codec, crf=args.crf, gop=args.gop, include_incomplete=args.include_incomplete))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (ConvertError, DatasetError, EpisodeWriteError, ParameterError, OSError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
