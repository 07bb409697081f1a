"""Recorder throughput: three 640x480 rgb8 cameras at 30 Hz + joint states at 200 Hz, recorded at 30 Hz.

Starts a publisher process and the recorder node (`python -m lapo_ros.recorder`, auto_start) for
--duration seconds, then stops the recorder with SIGINT and prints: samples written vs expected,
skipped per stream, dropped samples, the recorder process's CPU time (user+system, from wait4)
and the writer's worst lag behind the sampler. Target: zero dropped, under one core.

    python bench/recorder_throughput.py --duration 30
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("ROS_DOMAIN_ID", "49")  # the recorder's benchmark, apart from the tests (41-48)

CAMERA_TOPICS = ("/left_wrist/image_raw", "/right_wrist/image_raw", "/global/image_raw")
JOINTS = [f"{side}_{j}" for side in ("left", "right") for j in (
    "waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "left_finger", "right_finger")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of recording")
    p.add_argument("--rate", type=float, default=30.0, help="record_rate of the recorder (Hz)")
    p.add_argument("--camera_rate", type=float, default=30.0, help="publish rate of each camera (Hz)")
    p.add_argument("--joint_rate", type=float, default=200.0, help="publish rate of /joint_states (Hz)")
    p.add_argument("--width", type=int, default=640, help="camera image width")
    p.add_argument("--height", type=int, default=480, help="camera image height")
    p.add_argument("--image_size", type=int, nargs=2, default=(84, 84), metavar=("H", "W"),
                   help="stored image size (0 0 = raw camera size)")
    p.add_argument("--compression", default="lzf", choices=("lzf", "gzip", "none"), help="image compression")
    p.add_argument("--output_dir", type=Path, default=None, help="keep the episodes here (default: a temp dir)")
    p.add_argument("--default_transport", action="store_true",
                   help="do not load bench/fastdds_large_images.xml (Fast DDS's default shared-memory "
                        "segment is too small for raw 640x480 frames: most of them are lost)")
    p.add_argument("--publisher", action="store_true", help=argparse.SUPPRESS)  # internal: the publisher role
    return p.parse_args(argv)


def run_publisher(args: argparse.Namespace) -> None:
    """Publishes until SIGINT; images are prebuilt (only the stamp changes) to keep this light."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from lapo_ros.image_msgs import rgb_to_image_msg

    rclpy.init()
    node = rclpy.create_node("bench_robot")
    rng = np.random.default_rng(0)
    frames = [[rgb_to_image_msg(rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8))
               for _ in range(4)] for _ in CAMERA_TOPICS]
    pubs = [node.create_publisher(Image, t, qos_profile_sensor_data) for t in CAMERA_TOPICS]
    joint_pub = node.create_publisher(JointState, "/joint_states", 10)
    action_pub = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)
    counter = [0]

    def cameras() -> None:
        stamp = node.get_clock().now().to_msg()
        counter[0] += 1
        for pub, msgs in zip(pubs, frames):
            msg = msgs[counter[0] % len(msgs)]
            msg.header.stamp = stamp
            pub.publish(msg)

    def joints() -> None:
        t = time.time()
        msg = JointState(name=JOINTS, position=[np.sin(t + j) for j in range(len(JOINTS))])
        msg.header.stamp = node.get_clock().now().to_msg()
        joint_pub.publish(msg)

    def actions() -> None:
        action_pub.publish(Float64MultiArray(data=[np.cos(time.time() + j) for j in range(len(JOINTS))]))

    node.create_timer(1.0 / args.camera_rate, cameras)
    node.create_timer(1.0 / args.joint_rate, joints)
    node.create_timer(1.0 / args.rate, actions)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def collect_status(stop: threading.Event, statuses: list[dict]) -> None:
    """Subscribes to /recorder/status in this process (its own DDS participant)."""
    import rclpy
    import rclpy.executors
    from diagnostic_msgs.msg import DiagnosticArray

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bench_status", context=context)
    node.create_subscription(DiagnosticArray, "/recorder/status",
                             lambda m: statuses.append({kv.key: kv.value for kv in m.status[0].values}), 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.1)
    node.destroy_node()
    rclpy.try_shutdown(context=context)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.publisher:
        run_publisher(args)
        return 0
    if not args.default_transport:  # inherited by the publisher, the recorder and this process
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "bench" / "fastdds_large_images.xml")
    out = args.output_dir or Path(tempfile.mkdtemp(prefix="lapo_recorder_bench_"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    publisher = subprocess.Popen([sys.executable, __file__, "--publisher", *(argv or sys.argv[1:])],
                                 env=env, cwd=REPO)
    statuses: list[dict] = []
    stop = threading.Event()
    status_thread = threading.Thread(target=collect_status, args=(stop, statuses), daemon=True)
    status_thread.start()
    time.sleep(2.0)  # publisher up and discovered before the recorder starts sampling
    recorder = subprocess.Popen(
        [sys.executable, "-m", "lapo_ros.recorder", "--ros-args",
         "--params-file", str(REPO / "config" / "recorder.yaml"),
         "-p", f"output_dir:={out}", "-p", "auto_start:=true", "-p", f"record_rate:={args.rate}",
         "-p", "reward.topic:=''", "-p", f"compression:={args.compression}", "-p", "status_period:=1.0",
         "-p", f"image_height:={args.image_size[0]}", "-p", f"image_width:={args.image_size[1]}"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log_lines: list[str] = []
    threading.Thread(target=lambda: log_lines.extend(recorder.stdout), daemon=True).start()
    try:
        time.sleep(args.duration)
    finally:
        recorder.send_signal(signal.SIGINT)
        _, status, usage = os.wait4(recorder.pid, 0)
        recorder.returncode = os.waitstatus_to_exitcode(status)
        publisher.send_signal(signal.SIGINT)
        publisher.wait(30)
        stop.set()
        status_thread.join(10)

    files = sorted(out.glob("*.hdf5"))
    written = 0
    for path in files:
        with h5py.File(path, "r") as f:
            written += len(f["actions"])
    recording = [s for s in statuses if s.get("recording") == "True"]
    last = recording[-1] if recording else {}
    rates = [float(s["rate_hz"]) for s in recording[1:]]  # the first period includes start-up
    cpu = usage.ru_utime + usage.ru_stime
    lag = max((float(s["writer_lag_s"]) for s in recording), default=float("nan"))
    size = sum(p.stat().st_size for p in files) / 1e6
    print(f"recorder exit code        {recorder.returncode}")
    print(f"recorded for              {args.duration:.0f} s: {len(CAMERA_TOPICS)} x {args.width}x{args.height} rgb8 "
          f"@ {args.camera_rate:g} Hz, joints @ {args.joint_rate:g} Hz, sampled @ {args.rate:g} Hz, "
          f"stored {args.image_size[0]}x{args.image_size[1]} {args.compression}, "
          f"transport {'default' if args.default_transport else 'bench/fastdds_large_images.xml'}")
    print(f"samples written           {written} (rate x duration = {args.rate * args.duration:.0f}, "
          f"includes start-up until every stream arrived)")
    print(f"achieved rate (status)    mean {np.mean(rates) if rates else float('nan'):.2f} Hz, "
          f"min {min(rates, default=float('nan')):.2f} Hz")
    print(f"skipped per stream        {last.get('skipped', '?')}")
    print(f"messages received         {last.get('received', '?')} (published: cameras "
          f"{args.camera_rate * args.duration:.0f} each, joints {args.joint_rate * args.duration:.0f})")
    print(f"dropped (writer behind)   {last.get('dropped', '?')}")
    print(f"recorder CPU time         {cpu:.1f} s = {100 * cpu / (args.duration + 2):.0f} % of one core "
          f"(user {usage.ru_utime:.1f} s, system {usage.ru_stime:.1f} s, incl. start-up)")
    print(f"writer lag (worst)        {lag * 1000:.1f} ms")
    print(f"episode files             {len(files)} in {out}, {size:.1f} MB")
    if recorder.returncode != 0:
        print("".join(log_lines[-20:]))
    return recorder.returncode


if __name__ == "__main__":
    sys.exit(main())
