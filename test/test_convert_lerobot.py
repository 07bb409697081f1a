"""`convert to-lerobot`: a lapo dataset as a LeRobotDataset v3.0 folder, read back with pyarrow and PyAV."""
import json
from pathlib import Path

import numpy as np
import pytest

from lapo_learning.convert import lerobot as lr
from lapo_learning.convert.__main__ import main
from lapo_learning.episode_writer import EpisodeConfig, EpisodeWriter
from lapo_learning.schema import CAMERAS

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
av = pytest.importorskip("av")

NAMES = [f"j{i}" for i in range(4)]
FPS = 30
SIZE = (24, 32)
KEYS = {"left_image": "observation.images.cam_left_wrist", "right_image": "observation.images.cam_right_wrist",
        "global_image": "observation.images.cam_high"}


def frame(k: int, cam: int) -> np.ndarray:
    """A frame that tells its counter k apart from its neighbours' even after lossy coding."""
    rows = np.arange(SIZE[0], dtype=np.int64)[:, None, None]
    colour = np.array([(37 * k) % 200, (91 * k + 60 * cam) % 200, 40 * cam], np.int64)
    return np.broadcast_to(colour + rows, (*SIZE, 3)).astype(np.uint8)


def write_episode(path: Path, n: int, first: int, outcome: str | None, gap_after: int | None = None) -> None:
    """Joints and actions hold the global frame counter; a gap after row `gap_after` (time jump)."""
    config = EpisodeConfig(joint_names=NAMES, action_names=NAMES, rate_hz=FPS, streams=(), has_reward=False,
                           max_gap=3 / FPS)
    w = EpisodeWriter(path, config)
    for i in range(n):
        k = first + i
        late = 1.0 if gap_after is not None and i > gap_after else 0.0
        w.append({c: frame(k, j) for j, c in enumerate(CAMERAS)}, np.full(4, k, np.float32) + np.arange(4) / 10,
                 np.full(4, -k, np.float32), None, 50.0 + i / FPS + late, {})
    if outcome:
        w.close(outcome)
    else:
        w.abort("interrupted")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lapo")
    write_episode(d / "episode_0001.hdf5", 12, 0, "success")
    write_episode(d / "episode_0002.hdf5", 5, 100, None)  # interrupted: left out
    write_episode(d / "episode_0003.hdf5", 10, 200, "failure", gap_after=3)  # two LeRobot episodes
    return d


# The frames of the LeRobot episodes: (first counter, length, last step terminal).
EXPECTED = [(0, 12, True), (200, 4, False), (204, 6, False)]


def export(source: Path, out: Path, *flags: str) -> Path:
    assert main(["to-lerobot", str(source), "--output", str(out), "--repo_id", "lapo/test",
                 "--task", "hand the cube over", *flags]) == 0
    return out


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory) -> Path:
    return export(source, tmp_path_factory.mktemp("out") / "lerobot")


def decode(path: Path) -> tuple[list[float], np.ndarray]:
    with av.open(str(path)) as container:
        frames = list(container.decode(container.streams.video[0]))
    return [f.time for f in frames], np.stack([f.to_ndarray(format="rgb24") for f in frames])


def test_frames_joints_actions_and_indices_match_the_source(exported):
    info = json.loads((exported / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == FPS
    assert info["total_episodes"] == 3 and info["total_frames"] == 22 and info["total_tasks"] == 1
    assert info["features"]["observation.state"]["names"] == NAMES
    for key in KEYS.values():
        feature = info["features"][key]
        assert feature["dtype"] == "video" and feature["shape"] == [*SIZE, 3]
        assert feature["info"]["video.fps"] == FPS and feature["info"]["video.codec"] == "h264"
    data = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    assert set(data.column_names) == {k for k, f in info["features"].items() if f["dtype"] != "video"}
    counters = np.concatenate([np.arange(first, first + n) for first, n, _ in EXPECTED])
    state = np.array(data["observation.state"].to_pylist(), np.float32)
    np.testing.assert_array_equal(state, (counters[:, None] + np.arange(4) / 10).astype(np.float32))
    np.testing.assert_array_equal(np.array(data["action"].to_pylist()), -counters[:, None] * np.ones(4))
    np.testing.assert_array_equal(data["index"].to_numpy(), np.arange(22))
    episode = np.repeat(np.arange(3), [n for _, n, _ in EXPECTED])
    np.testing.assert_array_equal(data["episode_index"].to_numpy(), episode)
    frame_index = np.concatenate([np.arange(n) for _, n, _ in EXPECTED])
    np.testing.assert_array_equal(data["frame_index"].to_numpy(), frame_index)
    np.testing.assert_allclose(data["timestamp"].to_numpy(), frame_index / FPS, rtol=1e-6)
    done = np.concatenate([[False] * (n - 1) + [last] for _, n, last in EXPECTED])
    np.testing.assert_array_equal(data["next.done"].to_numpy(), done)
    np.testing.assert_array_equal(data["next.reward"].to_numpy(), done.astype(np.float32))  # sparse success

    episodes = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in episodes] == [n for _, n, _ in EXPECTED]
    assert [e["tasks"] for e in episodes] == [["hand the cube over"]] * 3
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 12), (12, 16), (16, 22)]
    assert [Path(e["lapo/source_file"]).name for e in episodes] == ["episode_0001.hdf5"] + ["episode_0003.hdf5"] * 2
    assert [e["lapo/source_from_row"] for e in episodes] == [0, 0, 4]
    for j, (cam, key) in enumerate(KEYS.items()):
        times, frames = decode(exported / f"videos/{key}/chunk-000/file-000.mp4")
        np.testing.assert_allclose(times, np.arange(22) / FPS, atol=1e-6)
        for e, (first, n, _) in zip(episodes, EXPECTED):
            assert e[f"videos/{key}/to_timestamp"] - e[f"videos/{key}/from_timestamp"] == pytest.approx(n / FPS)
            start = round(e[f"videos/{key}/from_timestamp"] * FPS)
            source = np.stack([frame(first + i, j) for i in range(n)]).astype(int)
            got = frames[start:start + n].astype(int)
            error = np.abs(got[:, None] - source[None]).mean(axis=(2, 3, 4))  # decoded x source frames
            assert np.all(error.argmin(axis=1) == np.arange(n)), f"{cam}: frames out of place"
            assert error.diagonal().max() < 3.0, f"{cam}: beyond h264's tolerance"


def test_stats_tasks_and_lossless_video(source, exported, tmp_path):
    stats = json.loads((exported / "meta/stats.json").read_text())
    counters = np.concatenate([np.arange(first, first + n) for first, n, _ in EXPECTED])
    state = counters[:, None] + np.arange(4) / 10
    np.testing.assert_allclose(stats["observation.state"]["mean"], state.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["observation.state"]["std"], state.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["observation.state"]["min"], state.min(axis=0), rtol=1e-6)
    assert stats["observation.state"]["count"] == [22]
    assert np.shape(stats[KEYS["global_image"]]["mean"]) == (3, 1, 1)
    assert all(0 <= v[0][0] <= 1 for v in stats[KEYS["global_image"]]["max"])
    tasks = pq.read_table(exported / "meta/tasks.parquet")
    assert tasks.to_pylist() == [{"task_index": 0, "task": "hand the cube over"}]
    assert tasks.schema.pandas_metadata["index_columns"] == ["task"]  # LeRobot: pandas, indexed by task

    lossless = export(source, tmp_path / "lossless", "--video_codec", "lossless")
    for j, key in enumerate(KEYS.values()):
        _, frames = decode(lossless / f"videos/{key}/chunk-000/file-000.mp4")
        expected = np.stack([frame(first + i, j) for first, n, _ in EXPECTED for i in range(n)])
        np.testing.assert_array_equal(frames, expected)


def test_refuses_bad_input_and_leaves_nothing_half_written(source, exported, tmp_path, monkeypatch, caplog):
    before = sorted(p.relative_to(exported) for p in exported.rglob("*"))
    assert main(["to-lerobot", str(source), "--output", str(exported), "--repo_id", "x/y"]) == 1
    assert "exists" in caplog.text
    assert sorted(p.relative_to(exported) for p in exported.rglob("*")) == before

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "episode_0001.hdf5").write_bytes(b"not hdf5")
    assert main(["to-lerobot", str(bad), "--output", str(tmp_path / "o"), "--repo_id", "x/y"]) == 1
    assert "episode_0001.hdf5" in caplog.text and not (tmp_path / "o").exists()

    calls = []

    def failing_add(self, image):  # the disk fills up in the middle of the second episode
        calls.append(1)
        if len(calls) == 40:
            raise OSError(28, "No space left on device")
        original(self, image)

    original = lr.VideoFiles.add
    monkeypatch.setattr(lr.VideoFiles, "add", failing_add)
    out = tmp_path / "interrupted"
    assert main(["to-lerobot", str(source), "--output", str(out), "--repo_id", "x/y"]) == 1
    assert len(calls) == 40 and "No space left" in caplog.text
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".interrupted")]


def test_lerobot_loads_the_export(exported):
    lerobot = pytest.importorskip(
        "lerobot.datasets.lerobot_dataset",
        reason="lerobot is not installed: it pins an older torch than lapo's, so it is not in lapo's venv")
    ds = lerobot.LeRobotDataset("lapo/test", root=exported)
    assert ds.num_episodes == 3 and ds.num_frames == 22 and ds.fps == FPS
    item = ds[13]  # second LeRobot episode, frame 1: counter 201
    np.testing.assert_allclose(item["observation.state"].numpy(), 201 + np.arange(4) / 10, rtol=1e-6)
    assert int(item["episode_index"]) == 1 and int(item["frame_index"]) == 1
    image = item[KEYS["global_image"]].numpy()  # C, H, W in [0, 1]
    np.testing.assert_allclose(image.transpose(1, 2, 0) * 255, frame(201, 2), atol=4)
