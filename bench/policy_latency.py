"""Policy node latency: inference p50/p99 and publish-period jitter p99 at 30 and 50 Hz.

    python bench/policy_latency.py [--seconds 10] [--rates 30 50] [--encoders cnn_3conv_1fc_0 resnet18]

For each image encoder a checkpoint is trained for a few steps on a small sample dataset (random
weights are fine for latency). The real `PolicyNode` (config/policy.yaml, safety on) runs in this
process; a publisher in a separate process sends three camera images (--camera_size, rgb8, 30 Hz)
and /joint_states (100 Hz) over DDS. Figures come from the node's own `LoopStatistics`, the same
numbers it reports on ~/diagnostics (wall clock, so they include waiting for a CPU on a busy
machine). `select_action` alone is also timed in CPU time, which other processes do not inflate,
back to back and after a pause of one control period: the paused figure shows how much of the
node's latency is the cost of cold caches after the idle time between ticks
(`bench/inference_latency.py`, which also runs on a GPU without ROS). Target: inference p99 under
20% of the control period for cnn_3conv_1fc_0 on CPU.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROS_DOMAIN_ID", "58")  # away from the test suites' domains

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402

from bench.inference_latency import as_json, make_checkpoints, measure_all, report  # noqa: E402
from lapo_learning.schema import CAMERAS  # noqa: E402
from lapo_ros.image_msgs import rgb_to_image_msg  # noqa: E402
from lapo_ros.node_runner import run_node  # noqa: E402
from lapo_ros.policy import PolicyNode  # noqa: E402
from lapo_ros.policy_diagnostics import LoopStatistics  # noqa: E402

log = logging.getLogger("bench.policy_latency")
CONFIG = REPO / "config" / "policy.yaml"
PREFIX = "/bench"
CAMERA_RATE_HZ = 30.0
JOINT_RATE_HZ = 100.0


def joint_names() -> list[str]:
    return yaml.safe_load(CONFIG.read_text())["/**"]["ros__parameters"]["joint_names"]


class Publisher(Node):
    """Camera images and joint states, as a robot driver would publish them."""

    def __init__(self, camera_size: tuple[int, int]) -> None:
        super().__init__("bench_inputs")
        rng = np.random.default_rng(0)
        self.frames = {cam: rng.integers(0, 256, (*camera_size, 3), dtype=np.uint8) for cam in CAMERAS}
        self.names = joint_names()
        self.cams = {cam: self.create_publisher(Image, f"{PREFIX}/{cam}", 5) for cam in CAMERAS}
        self.joints = self.create_publisher(JointState, f"{PREFIX}/joint_states", 5)
        self.create_timer(1.0 / CAMERA_RATE_HZ, self.publish_images)
        self.create_timer(1.0 / JOINT_RATE_HZ, self.publish_joints)

    def publish_images(self) -> None:
        stamp = self.get_clock().now().to_msg()
        for cam, pub in self.cams.items():
            pub.publish(rgb_to_image_msg(self.frames[cam], stamp=stamp))

    def publish_joints(self) -> None:
        msg = JointState(name=self.names, position=[0.0] * len(self.names))
        msg.header.stamp = self.get_clock().now().to_msg()
        self.joints.publish(msg)


def run_publisher(camera_size: tuple[int, int]) -> None:
    """Publishes until SIGINT, with the nodes' own clean lifecycle."""
    run_node(lambda: Publisher(camera_size), "bench_inputs", ())


def measure(checkpoint: Path, rate: float, seconds: float, warmup: float, threads: int) -> dict[str, float]:
    params = {
        f"cameras.{cam}.topic": f"{PREFIX}/{cam}" for cam in CAMERAS
    } | {"joint_states_topic": f"{PREFIX}/joint_states", "action.topic": f"{PREFIX}/commands",
         "checkpoint": str(checkpoint), "control_rate": rate, "autostart": True, "torch_threads": threads,
         "diagnostics_period": 1000.0,
         "tracking_max_error": 1e9}  # the publisher's joints never follow the commands: no watchdog stop
    node = PolicyNode([Parameter(k, value=v) for k, v in params.items()])
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    def spin_for(seconds: float, until=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            executor.spin_once(timeout_sec=0.05)

    try:
        spin_for(60.0, until=lambda: node.stats.counts["published"] > 0)  # the publisher process starts
        if node.stats.counts["published"] == 0:
            raise RuntimeError("the node published nothing in 60 s: are the inputs arriving?")
        spin_for(warmup)
        # Fresh statistics for the measured interval (warm-up ticks include lazy initialisation).
        node.stats = LoopStatistics(rate, window=int(rate * seconds * 2))
        node.stats.start(node.get_clock().now().nanoseconds * 1e-9)
        spin_for(seconds)
        s = node.stats.summary(node.get_clock().now().nanoseconds * 1e-9)
    finally:
        executor.shutdown()
        node.destroy_node()
    period_ms = 1e3 / rate
    return {"rate_hz": rate, "latency_p50_ms": s.latency_p50_ms, "latency_p99_ms": s.latency_p99_ms,
            "p99_share_of_period": s.latency_p99_ms / period_ms, "jitter_p99_ms": s.period_jitter_p99_ms,
            "achieved_rate_hz": s.achieved_rate_hz, "published": s.counts["published"],
            "stale_skips": s.counts["stale_skips"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", nargs="+", default=["cnn_3conv_1fc_0", "resnet18"],
                   choices=["cnn_3conv_1fc_0", "resnet18"], help="image encoders to measure")
    p.add_argument("--rates", nargs="+", type=float, default=[30.0, 50.0], help="control rates (Hz)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per encoder and rate")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds run before measuring")
    p.add_argument("--camera_size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"),
                   help="published camera image size (resized to 84x84 by the inputs, then by the model)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)  # child process mode
    args = p.parse_args()
    if args.publisher:
        run_publisher(tuple(args.camera_size))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = make_checkpoints(args.encoders, Path(tmp))
        publisher = subprocess.Popen([sys.executable, __file__, "--publisher", "--camera_size",
                                      *map(str, args.camera_size)], cwd=REPO)
        rclpy.init(args=["--ros-args", "--params-file", str(CONFIG)])  # the shipped config, as deployed
        results = []
        if args.threads:
            torch.set_num_threads(args.threads)
        isolated = measure_all(checkpoints, args.rates, "cpu")
        try:
            for enc, ckpt in checkpoints.items():
                for rate in args.rates:
                    log.info("measuring %s at %g Hz for %g s ...", enc, rate, args.seconds)
                    results.append({"encoder": enc, **measure(ckpt, rate, args.seconds, args.warmup, args.threads)})
        finally:
            rclpy.try_shutdown()
            publisher.send_signal(2)
            publisher.wait(10)

    log.info("\nCPU, torch threads %s, camera %dx%d rgb8, load average %.1f (%d cores)",
             args.threads or "default", *args.camera_size, os.getloadavg()[0], os.cpu_count())
    log.info("| encoder | rate Hz | inference p50 ms | p99 ms | p99 / period | jitter p99 ms | achieved Hz | stale skips |")
    log.info("|---|---|---|---|---|---|---|---|")
    for r in results:
        log.info("| %s | %g | %.2f | %.2f | %.0f%% | %.2f | %.1f | %d |", r["encoder"], r["rate_hz"],
                 r["latency_p50_ms"], r["latency_p99_ms"], 100 * r["p99_share_of_period"], r["jitter_p99_ms"],
                 r["achieved_rate_hz"], r["stale_skips"])
    small = [r for r in results if r["encoder"] == "cnn_3conv_1fc_0"]
    if small:
        ok = all(r["p99_share_of_period"] < 0.2 for r in small)
        log.info("target (cnn_3conv_1fc_0 p99 < 20%% of the period): %s", "met" if ok else "NOT met")
    log.info("")
    report(isolated, "cpu")
    if args.json:
        args.json.write_text(json.dumps({"node": results, "isolated_cpu_ms": as_json(isolated)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
