"""`convert from-rosbag2`: bags written here with rosbags' writer (sqlite3 and mcap, raw and compressed
images, joint names in another order) from frame-counter data, converted and checked row by row
against the ground truth; and against what the recorder node writes from the same messages
published live over real rclpy/DDS."""
import io
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from lapo_learning import dataset_format as fmt
from lapo_learning.convert.__main__ import main
from lapo_learning.create_dataset import validate
from lapo_learning.schema import CAMERAS

from learning_fixtures import run_train
from ros_domain import domain_fixture

rosbags_typesys = pytest.importorskip("rosbags.typesys")
rosbag2 = pytest.importorskip("rosbags.rosbag2")

ros_domain = domain_fixture(61)  # converter tests: 61-69, apart from the other modules and developers

REPO = Path(__file__).resolve().parents[1]
SHIPPED = yaml.safe_load((REPO / "config" / "recorder.yaml").read_text())
JOINTS = SHIPPED["/**"]["ros__parameters"]["joint_names"]
TS = rosbags_typesys.get_typestore(rosbags_typesys.Stores.LATEST)
T = TS.types
RATE, MAX_AGE, STORED = 30.0, 0.1, (12, 16)
TOPICS = {"left_image": "/left_wrist/image_raw", "right_image": "/right_wrist/image_raw",
          "global_image": "/global/image_raw/compressed"}
MARKS = "/episode_marks"


def write_config(path: Path, reward: bool = False, **overrides) -> Path:
    """The shipped recorder.yaml with the test's topics, image size and limits."""
    config = yaml.safe_load((REPO / "config" / "recorder.yaml").read_text())
    p = config["/**"]["ros__parameters"]
    p["cameras"]["global_image"] = {"topic": TOPICS["global_image"], "type": "compressed"}
    p.update(image_height=STORED[0], image_width=STORED[1], max_age=MAX_AGE, record_rate=RATE,
             min_free_disk_mb=0.0, status_period=0.5)
    if reward:
        p["reward"] = {"topic": "/reward", "type": "float32"}
    p.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


def frame(k: int, cam: int, size=(24, 32)) -> np.ndarray:
    """A uniform frame (survives any resize) whose pixel encodes its counter k and the camera."""
    return np.broadcast_to(np.array([k % 250, k // 250, 80 * cam], np.uint8), (*size, 3)).copy()


def decode(pixel: np.ndarray) -> int:
    return int(pixel[0]) + 250 * int(pixel[1])


def _time(seconds: float):
    ns = round(seconds * 1e9)
    return T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9)


def stamp_seconds(stamp: float) -> float:
    """A stamp as the recorder reads it back from a header (sec + nanosec)."""
    t = _time(stamp)
    return t.sec + t.nanosec * 1e-9


def _header(stamp: float):
    return T["std_msgs/msg/Header"](stamp=_time(stamp), frame_id="")


def camera_msg(k: int, cam: int, stamp: float):
    rgb = frame(k, cam)
    if CAMERAS[cam] == "global_image":
        png = io.BytesIO()
        Image.fromarray(rgb).save(png, format="PNG")
        return "sensor_msgs/msg/CompressedImage", T["sensor_msgs/msg/CompressedImage"](
            header=_header(stamp), format="png", data=np.frombuffer(png.getvalue(), np.uint8))
    bgr = cam == 1  # one camera sends bgr8: converted to RGB like the recorder does
    return "sensor_msgs/msg/Image", T["sensor_msgs/msg/Image"](
        header=_header(stamp), height=rgb.shape[0], width=rgb.shape[1], encoding="bgr8" if bgr else "rgb8",
        is_bigendian=0, step=rgb.shape[1] * 3, data=(rgb[..., ::-1] if bgr else rgb).reshape(-1).copy())


def joint_msg(i: int, stamp: float):
    """Joint j of message i holds i / 1000 + j; the names come in another order than the config's,
    and that order changes half-way."""
    order = list(reversed(JOINTS)) if i % 200 < 100 else JOINTS[8:] + JOINTS[:8]
    return "sensor_msgs/msg/JointState", T["sensor_msgs/msg/JointState"](
        header=_header(stamp), name=order, position=np.array([i * 0.001 + JOINTS.index(n) for n in order]),
        velocity=np.zeros(0), effort=np.zeros(0))


def action_msg(a: int):
    return "std_msgs/msg/Float64MultiArray", T["std_msgs/msg/Float64MultiArray"](
        layout=T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
        data=np.array([a * 0.001 + j for j in range(16)]))


@dataclass
class Sent:
    """Every message of a timeline: topic -> [(log time, stamp or None, counter)]."""

    messages: dict[str, list[tuple[float, float | None, int]]] = field(default_factory=dict)

    def add(self, topic: str, log: float, stamp: float | None, ident: int) -> None:
        self.messages.setdefault(topic, []).append((log, stamp, ident))

    def newest(self, topic: str, t: float) -> tuple[float, float | None, int] | None:
        before = [m for m in self.messages.get(topic, []) if m[0] < t]
        return max(before, key=lambda m: m[0]) if before else None


STREAM_TOPICS = {**TOPICS, "joint": "/joint_states", "action": "/forward_position_controller/commands",
                 "reward": "/reward"}


def schedule(duration: float, paused: tuple[float, float] | None = None, reward: bool = False):
    """(offset s, topic, factory(stamp) -> (msgtype, msg), counter, stamped) in time order."""
    events = []
    for c, cam in enumerate(CAMERAS):
        for k in range(int(duration * 30)):
            if cam == "global_image" and paused and paused[0] <= k / 30 < paused[1]:
                continue
            events.append((k / 30, TOPICS[cam], lambda s, k=k, c=c: camera_msg(k, c, s), k, True))
    events += [(i / 100, "/joint_states", lambda s, i=i: joint_msg(i, s), i, True) for i in range(int(duration * 100))]
    events += [(a / 50, STREAM_TOPICS["action"], lambda s, a=a: action_msg(a), a, False)
               for a in range(int(duration * 50))]
    if reward:
        events += [(r / 30, "/reward", lambda s, r=r: ("std_msgs/msg/Float32", T["std_msgs/msg/Float32"](data=float(r))),
                    r, False) for r in range(int(duration * 30))]
    return sorted(events, key=lambda e: e[0])


class BagWriter:
    def __init__(self, path: Path, storage: str, compressed: bool = False) -> None:
        plugin = rosbag2.StoragePlugin.MCAP if storage == "mcap" else rosbag2.StoragePlugin.SQLITE3
        self.writer = rosbag2.Writer(path, version=9, storage_plugin=plugin)
        if compressed:
            self.writer.set_compression(rosbag2.CompressionMode.MESSAGE, rosbag2.CompressionFormat.ZSTD)
        self.writer.open()
        self.connections: dict[str, object] = {}
        self.lock = threading.Lock()  # the live test writes from two threads

    def write(self, topic: str, msgtype: str, msg, log_ns: int) -> bytes:
        raw = bytes(TS.serialize_cdr(msg, msgtype))
        with self.lock:
            if topic not in self.connections:
                self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=TS)
            self.writer.write(self.connections[topic], log_ns, raw)
        return raw

    def close(self) -> None:
        self.writer.close()


def write_bag(path: Path, storage: str, compressed: bool, t0: float = 1000.0, duration: float = 2.0,
              paused=None, reward: bool = False, marks: list[tuple[float, str]] = ()) -> Sent:
    """An offline bag: each message logged 1-5 ms after its stamp (random, so no log time falls on a tick)."""
    rng = np.random.default_rng(0)
    sent, bag = Sent(), BagWriter(path, storage, compressed)
    logged = []
    for offset, topic, make, ident, stamped in schedule(duration, paused, reward):
        stamp = t0 + offset
        log_ns = round((stamp + rng.uniform(0.001, 0.005)) * 1e9)
        logged.append((log_ns, topic, make(stamp), ident, stamp if stamped else None))
    for at, text in marks:
        logged.append((round((t0 + at) * 1e9), MARKS, ("std_msgs/msg/String", T["std_msgs/msg/String"](data=text)), 0, None))
    for log_ns, topic, (msgtype, msg), ident, stamp in sorted(logged, key=lambda e: e[0]):
        bag.write(topic, msgtype, msg, log_ns)
        if topic != MARKS:
            sent.add(topic, log_ns * 1e-9, None if stamp is None else stamp_seconds(stamp), ident)
    bag.close()
    return sent


def read(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in ("actions", "observations/joint", "rewards", "terminals", "timestamps", "after_gap")}
        data.update({c: f[fmt.image_key(c)][()] for c in CAMERAS})
        data["stamps"] = {k: v[()] for k, v in f["stamps"].items()}
        data["attrs"] = dict(f.attrs)
    return data


def check_rows(data: dict, sent: Sent, streams: list[str]) -> None:
    """Every row holds, for each stream, its newest message before the sample time, as the recorder pairs them."""
    assert len(data["timestamps"]) > 0
    for r, t in enumerate(data["timestamps"]):
        for s in streams:
            log, stamp, ident = sent.newest(STREAM_TOPICS[s], t)
            assert data["stamps"][s][r] == (stamp if stamp is not None else log), (s, r)
            assert abs(t - data["stamps"][s][r]) <= MAX_AGE
            if s in CAMERAS:
                image = data[s][r]
                assert image.shape == (*STORED, 3) and (image == image[0, 0]).all()
                assert decode(image[0, 0]) == ident and image[0, 0, 2] == 80 * CAMERAS.index(s), (s, r)
            elif s == "joint":
                np.testing.assert_array_equal(data["observations/joint"][r], (ident * 0.001 + np.arange(16)).astype(np.float32))
            elif s == "action":
                np.testing.assert_array_equal(data["actions"][r], (ident * 0.001 + np.arange(16)).astype(np.float32))
            elif s == "reward":
                assert data["rewards"][r] == ident


def convert(bags, out: Path, config: Path, *flags: str) -> int:
    return main(["from-rosbag2", *map(str, bags), "--config", str(config), "--output", str(out), *flags])


@pytest.mark.parametrize("storage, compressed", [("sqlite3", False), ("mcap", False), ("sqlite3", True)])
def test_converted_bag_matches_the_ground_truth(tmp_path, storage, compressed):
    config = write_config(tmp_path / "recorder.yaml")
    sent = write_bag(tmp_path / "bag", storage, compressed, paused=(0.8, 1.2))
    out = tmp_path / "lapo"
    assert convert([tmp_path / "bag"], out, config) == 0
    assert [p.name for p in out.glob("*.hdf5")] == ["episode_0001.hdf5"]
    data = read(out / "episode_0001.hdf5")
    streams = [*CAMERAS, "joint", "action"]
    check_rows(data, sent, streams)
    # The sampler's ticks: every 1/RATE s from the first message; those with a stale stream are skipped.
    first = min(m[0][0] for m in sent.messages.values())
    last = max(m[-1][0] for m in sent.messages.values())
    ticks = np.round((data["timestamps"] - first) * RATE)
    np.testing.assert_allclose(data["timestamps"], first + ticks / RATE, atol=1e-9)
    missing = sorted(set(range(1, int((last - first) * RATE) + 1)) - set(ticks.astype(int)))
    stale = {s: sum(1 for n in missing if (m := sent.newest(STREAM_TOPICS[s], first + n / RATE)) is None
                    or first + n / RATE - (m[1] if m[1] is not None else m[0]) > MAX_AGE) for s in streams}
    attrs = data["attrs"]
    assert json.loads(attrs["skipped"]) == stale and stale["global_image"] >= 10  # the 0.4 s pause
    assert data["after_gap"].sum() == 1  # the first row after the pause: no transition across it
    assert attrs["complete"] and attrs["outcome"] == "success" and attrs["episode"] == 1
    assert json.loads(attrs["topics"]) == {s: STREAM_TOPICS[s] for s in streams}
    assert attrs["reward_source"] == "sparse_outcome" and data["rewards"][-1] == 1 and data["terminals"][-1]
    assert validate(out) == 0
    if storage == "mcap":
        run = run_train(out, tmp_path / "results", "bag", 2, "--eval_freq", "2", "--algo", "bc", "--no_tensorboard")
        assert (run / "model_final_bc.pth").exists()


def test_reward_topic_split_on_gap_and_episode_marks(tmp_path):
    config = write_config(tmp_path / "recorder.yaml", reward=True)
    sent = write_bag(tmp_path / "bag", "mcap", False, reward=True, paused=None,
                     marks=[(0.2, "start"), (0.9, "failure"), (1.1, "start"), (1.5, "discard"), (1.6, "start"),
                            (1.9, "success")])
    out = tmp_path / "marks"
    assert convert([tmp_path / "bag"], out, config, "--episode_marks", MARKS) == 0
    files = sorted(out.glob("*.hdf5"))
    # the discarded episode's file is gone; its number is not reused (as the recorder numbers them)
    assert [p.name for p in files] == ["episode_0001.hdf5", "episode_0003.hdf5"]
    first, second = read(files[0]), read(files[1])
    for data in (first, second):
        check_rows(data, sent, [*CAMERAS, "joint", "action", "reward"])
        assert data["attrs"]["reward_source"] == "topic"
    assert first["attrs"]["outcome"] == "failure" and not first["terminals"].any()
    assert second["attrs"]["outcome"] == "success" and second["terminals"][-1]
    assert 1000.2 < first["timestamps"][0] < 1000.25 and first["timestamps"][-1] < 1000.9
    assert 1001.6 < second["timestamps"][0] and second["timestamps"][-1] < 1001.9

    # Two bags a second apart, converted together: --split_on_gap cuts at the pause between them,
    # and a second run appends after the episodes already there.
    write_bag(tmp_path / "late", "sqlite3", False, t0=1010.0, duration=1.0, reward=True)
    out = tmp_path / "split"
    assert convert([tmp_path / "bag", tmp_path / "late"], out, config, "--split_on_gap", "0.5") == 0
    assert len(list(out.glob("*.hdf5"))) == 2
    assert convert([tmp_path / "late"], out, config, "--outcome", "timeout") == 0
    with h5py.File(out / "episode_0003.hdf5", "r") as f:
        assert f.attrs["outcome"] == "timeout" and f["timeouts"][-1] and f.attrs["episode"] == 3


def test_max_episode_steps_ends_episodes_as_time_outs(tmp_path):
    config = write_config(tmp_path / "recorder.yaml", max_episode_steps=20)
    write_bag(tmp_path / "bag", "mcap", False, duration=1.5)
    out = tmp_path / "lapo"
    assert convert([tmp_path / "bag"], out, config) == 0
    lengths = [read(p)["timestamps"].shape[0] for p in sorted(out.glob("*.hdf5"))]
    assert lengths[:2] == [20, 20] and 0 < lengths[2] <= 20
    assert [read(p)["attrs"]["outcome"] for p in sorted(out.glob("*.hdf5"))] == ["timeout", "timeout", "success"]


def test_bad_bags_and_configs_are_refused_clearly(tmp_path, caplog):
    config = write_config(tmp_path / "recorder.yaml")
    write_bag(tmp_path / "bag", "sqlite3", False, duration=0.5)
    out = tmp_path / "out"

    other = write_config(tmp_path / "other.yaml", joint_states_topic="/arm/joint_states")
    assert convert([tmp_path / "bag"], out, other) == 1
    assert "no topic /arm/joint_states" in caplog.text and "/joint_states (sensor_msgs/msg/JointState)" in caplog.text

    wrong = write_config(tmp_path / "wrong.yaml")
    params = yaml.safe_load(wrong.read_text())
    params["/**"]["ros__parameters"]["cameras"]["left_image"]["type"] = "compressed"
    wrong.write_text(yaml.safe_dump(params))
    assert convert([tmp_path / "bag"], out, wrong) == 1
    assert ("topic /left_wrist/image_raw has type sensor_msgs/msg/Image" in caplog.text
            and "cameras.left_image.type = compressed" in caplog.text)

    typed = write_config(tmp_path / "typed.yaml", record_rate=30)
    assert convert([tmp_path / "bag"], out, typed) == 1
    assert "parameter 'record_rate' is 30, expected a float" in caplog.text and "typed.yaml" in caplog.text

    assert convert([tmp_path / "bag"], out, config, "--episode_marks", "/joint_states") == 1
    assert "--episode_marks topic /joint_states has type sensor_msgs/msg/JointState" in caplog.text

    # A joint the config does not know: the error names the topic, the episode is kept incomplete.
    unknown = write_config(tmp_path / "unknown.yaml", joint_names=JOINTS[:15] + ["elbow_9"])
    assert convert([tmp_path / "bag"], out, unknown) == 1
    assert "topic /joint_states: JointState lacks configured joints ['elbow_9']" in caplog.text
    assert not list(out.glob("*.hdf5")) or all(not read(p)["attrs"]["complete"] for p in out.glob("*.hdf5"))
    assert convert([tmp_path / "nope"], out, config) == 1 and "no such bag" in caplog.text


# --- live: the recorder node and the converter, from the same messages ------------------------
def _launch_recorder(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lapo_ros.recorder", "--ros-args", "--params-file", str(config),
                             "-p", f"output_dir:={out}"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_converter_writes_what_the_recorder_writes_live(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image as ImageMsg, JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import SetBool, Trigger

    config = write_config(tmp_path / "recorder.yaml")
    live_out = tmp_path / "live"
    proc = _launch_recorder(config, live_out)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("bag_player", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    classes = {"sensor_msgs/msg/Image": ImageMsg, "sensor_msgs/msg/CompressedImage": CompressedImage,
               "sensor_msgs/msg/JointState": JointState, "std_msgs/msg/Float64MultiArray": Float64MultiArray}
    publishers: dict[str, object] = {}
    status: list[dict] = []
    node.create_subscription(DiagnosticArray, "/recorder/status",
                             lambda m: status.append({kv.key: kv.value for kv in m.status[0].values}), 10)
    bag = BagWriter(tmp_path / "bag", "mcap")
    sent, stop = Sent(), threading.Event()

    def play() -> None:
        """Publish the schedule in real time (stamps = now) and log every message in the bag as
        `ros2 bag record` would: the same bytes, at the time they were sent."""
        start = time.time()
        for offset, topic, make, ident, stamped in schedule(60.0):
            if stop.is_set():
                return
            delay = start + offset - time.time()
            if delay > 0:
                time.sleep(delay)
            now = time.time()
            msgtype, msg = make(now)
            if topic not in publishers:
                publishers[topic] = node.create_publisher(classes[msgtype], topic, qos_profile_sensor_data)
            raw = bag.write(topic, msgtype, msg, round(now * 1e9))
            publishers[topic].publish(raw)
            sent.add(topic, round(now * 1e9) * 1e-9, stamp_seconds(now) if stamped else None, ident)

    def call(client, request):
        assert client.wait_for_service(timeout_sec=30.0)
        future = client.call_async(request)
        deadline = time.time() + 10
        while not future.done():
            assert time.time() < deadline
            time.sleep(0.01)
        return future.result()

    player = threading.Thread(target=play, daemon=True)
    try:
        player.start()
        deadline = time.time() + 30
        while not (status and all(int(v) > 0 for v in json.loads(status[-1]["received"]).values())):
            assert time.time() < deadline, f"the recorder receives nothing: {status[-1:]}"
            time.sleep(0.1)
        mark = lambda text: bag.write(MARKS, "std_msgs/msg/String", T["std_msgs/msg/String"](data=text),
                                      round(time.time() * 1e9))
        mark("start")
        assert call(node.create_client(Trigger, "/recorder/start"), Trigger.Request()).success
        time.sleep(2.0)
        assert call(node.create_client(SetBool, "/recorder/stop"), SetBool.Request(data=True)).success
        mark("success")
        time.sleep(0.2)
    finally:
        stop.set()
        player.join(timeout=5)
        proc.send_signal(2)
        log, _ = proc.communicate(timeout=30)
        executor.shutdown()
        rclpy.try_shutdown(context=context)
        bag.close()
    assert proc.returncode == 0, log
    converted_out = tmp_path / "converted"
    assert convert([tmp_path / "bag"], converted_out, config, "--episode_marks", MARKS) == 0
    live, converted = read(live_out / "episode_0001.hdf5"), read(converted_out / "episode_0001.hdf5")

    with h5py.File(live_out / "episode_0001.hdf5", "r") as a, h5py.File(converted_out / "episode_0001.hdf5", "r") as b:
        keys = lambda f: sorted(k for k in f.keys() if k != "observations") + sorted(f["observations"].keys())
        assert keys(a) == keys(b) and sorted(a["stamps"]) == sorted(b["stamps"])
        for k in ("observations/joint", "actions", *map(fmt.image_key, CAMERAS)):
            assert a[k].dtype == b[k].dtype and a[k].shape[1:] == b[k].shape[1:]
        for attr in ("lapo_schema", "topics", "rate_hz", "reward_source", "max_age", "action_type", "outcome",
                     "complete", "joint_names", "max_gap_periods"):
            assert a.attrs[attr] == b.attrs[attr], attr
    check_rows(converted, sent, [*CAMERAS, "joint", "action"])  # exact: the bag's log times
    # The live recorder's rows: the same pairing up to DDS delivery (its stamps are arrival times).
    # Its episode starts when the start service is handled, later than the bag's start mark by the
    # call's latency (a few ticks on a loaded machine), so the counts are compared over its own span.
    first, last = live["timestamps"][0] - 0.5 / RATE, live["timestamps"][-1] + 0.5 / RATE
    # That span lies inside the marked episode (started after the start mark, stopped before the stop mark).
    # Each ticks on a 30 Hz grid of its own phase: the converted episode's last tick is the last one before
    # the stop mark, up to a period before it, so the live one's (also before the mark) is less than a
    # period after it (half a period failed once on CI: 17.7 ms).
    assert converted["timestamps"][0] - 1 / RATE <= first
    assert live["timestamps"][-1] < converted["timestamps"][-1] + 1 / RATE
    in_span = int(((converted["timestamps"] >= first) & (converted["timestamps"] <= last)).sum())
    assert abs(in_span - len(live["timestamps"])) <= 2, (in_span, len(live["timestamps"]))
    for data in (live, converted):
        for c, cam in enumerate(CAMERAS):
            counters = [decode(img[0, 0]) for img in data[cam]]
            assert all(np.diff(counters) >= 0)
        for r, t in enumerate(data["timestamps"]):
            assert 0 <= t - data["stamps"]["joint"][r] <= MAX_AGE
    # The same frame gives the same stored pixels, live or converted.
    for cam in CAMERAS:
        live_frames = {decode(img[0, 0]): img for img in live[cam]}
        both = [(live_frames[decode(img[0, 0])], img) for img in converted[cam] if decode(img[0, 0]) in live_frames]
        # Which frames the live recorder got depends on DDS delivery under the machine's load; the
        # claim is about the pixels of the frames both have, so only a floor on their number.
        assert len(both) >= min(10, len(converted[cam])), (len(both), len(converted[cam]))
        for x, y in both:
            np.testing.assert_array_equal(x, y)
