"""The incremental HDF5 episode writer: layout, outcomes, crash safety, write errors, the queue."""
import re
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from lapo_learning import dataset_format as fmt
from lapo_learning.dataset import load_dataset
from lapo_learning.episode_writer import (BackgroundWriter, EpisodeConfig, EpisodeWriteError,
                                          EpisodeWriter)
from lapo_learning.schema import CAMERAS

NAMES = [f"j{i}" for i in range(4)]
STREAMS = list(CAMERAS) + ["joint", "action"]
REPO = Path(__file__).resolve().parents[1]


def config(**kw) -> EpisodeConfig:
    kw.setdefault("has_reward", False)
    return EpisodeConfig(joint_names=NAMES, action_names=NAMES, rate_hz=30.0, streams=STREAMS,
                         attrs={"topics": "{}"}, **kw)


def sample(k: int, size=(12, 10)):
    images = {c: np.full((*size, 3), (k + i) % 256, dtype=np.uint8) for i, c in enumerate(CAMERAS)}
    return dict(images=images, joint=np.full(4, k, np.float32), action=np.full(4, -k, np.float32),
                reward=None, timestamp=100.0 + k / 30, stamps={s: 100.0 + k / 30 - 0.01 for s in STREAMS})


def write(path: Path, n: int, outcome: str | None, **kw) -> EpisodeWriter:
    w = EpisodeWriter(path, config(**kw))
    for k in range(n):
        w.append(**sample(k))
    if outcome:
        w.close(outcome, {"skipped": '{"joint": 2}'})
    return w


def test_layout_and_success(tmp_path: Path) -> None:
    path = tmp_path / "ep.hdf5"
    write(path, 5, "success")
    assert fmt.validate_file(path) == []
    with h5py.File(path, "r") as f:
        assert fmt.is_complete(f) and f.attrs["outcome"] == "success" and f.attrs["n_samples"] == 5
        schema = fmt.read_schema(f)
        assert schema.image_size == (12, 10) and schema.joint_names == tuple(NAMES) and schema.rate_hz == 30.0
        np.testing.assert_array_equal(f["terminals"][()], [0, 0, 0, 0, 1])
        np.testing.assert_array_equal(f["timeouts"][()], [0] * 5)
        np.testing.assert_array_equal(f["rewards"][()], [0, 0, 0, 0, 1])  # sparse: no reward topic
        np.testing.assert_array_equal(f["observations/joint"][:, 0], np.arange(5))
        np.testing.assert_array_equal(f["observations/global_image"][:, 0, 0, 0], np.arange(5) + 2)
        np.testing.assert_allclose(f["timestamps"][()], 100 + np.arange(5) / 30)
        assert sorted(f["stamps"]) == sorted(STREAMS)
        assert f["observations/left_image"].chunks == (1, 12, 10, 3)
        assert f["observations/left_image"].compression == "lzf"
        assert f.attrs["skipped"] == '{"joint": 2}'


@pytest.mark.parametrize("outcome,terminal,timeout", [("failure", 0, 0), ("timeout", 0, 1)])
def test_failure_and_timeout_flags(tmp_path: Path, outcome: str, terminal: int, timeout: int) -> None:
    path = tmp_path / "ep.hdf5"
    write(path, 3, outcome)
    with h5py.File(path, "r") as f:
        assert f["terminals"][-1] == terminal and f["timeouts"][-1] == timeout
        assert f["rewards"][()].sum() == 0 and fmt.is_complete(f)


def test_reward_topic_values_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "ep.hdf5"
    w = EpisodeWriter(path, config(has_reward=True))
    for k in range(3):
        w.append(**{**sample(k), "reward": 0.25 * k})
    w.close("success")
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f["rewards"][()], [0, 0.25, 0.5])


def test_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "ep.hdf5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        EpisodeWriter(path, config())
    assert path.read_bytes() == b"precious"
    w = EpisodeWriter(tmp_path / "late.hdf5", config())
    (tmp_path / "late.hdf5").write_bytes(b"appeared meanwhile")
    with pytest.raises(FileExistsError):
        w.append(**sample(0))
    assert (tmp_path / "late.hdf5").read_bytes() == b"appeared meanwhile"


def test_empty_episode_leaves_no_file_and_abort_marks_incomplete(tmp_path: Path) -> None:
    assert EpisodeWriter(tmp_path / "empty.hdf5", config()).close("success") is None
    assert not (tmp_path / "empty.hdf5").exists()
    write(tmp_path / "a.hdf5", 4, "success")
    w = write(tmp_path / "b.hdf5", 3, None)
    w.abort("interrupted")
    with h5py.File(tmp_path / "b.hdf5", "r") as f:
        assert not fmt.is_complete(f) and f.attrs["outcome"] == "interrupted" and len(f["actions"]) == 3
    ds = load_dataset(tmp_path)  # the loader skips the incomplete episode
    assert len(ds) == 4 and ds.sources == [str(tmp_path / "a.hdf5")]


def test_raw_image_size_and_no_compression(tmp_path: Path) -> None:
    path = tmp_path / "ep.hdf5"
    w = EpisodeWriter(path, config(compression="none"))
    w.append(**sample(0, size=(48, 64)))
    w.close("success")
    with h5py.File(path, "r") as f:
        assert f["observations/right_image"].shape == (1, 48, 64, 3)
        assert f["observations/right_image"].compression is None
        assert fmt.read_schema(f).image_size == (48, 64)


CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {test_dir!r})
    from test_episode_writer import EpisodeWriter, config, sample
    w = EpisodeWriter({path!r}, config(flush_every=1))
    for k in range({n}):
        w.append(**sample(k))
    print("written", flush=True)
    {after}
""")


def run_child(path: Path, n: int, after: str, **popen) -> subprocess.Popen:
    code = CHILD.format(test_dir=str(Path(__file__).parent), path=str(path), n=n, after=after)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def test_sigkill_leaves_a_readable_incomplete_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.hdf5"
    child = run_child(path, 7, "time.sleep(60)")
    assert child.stdout.readline().strip() == "written"
    child.kill()
    child.wait(10)
    # The SWMR writer never closed the file: it opens as a SWMR reader (h5py's swmr=True).
    with h5py.File(path, "r", swmr=True) as f:
        assert not fmt.is_complete(f)
        assert {len(f[k]) for k in ("actions", "observations/joint", "observations/left_image", "rewards")} == {7}
        np.testing.assert_array_equal(f["observations/joint"][:, 0], np.arange(7))
        np.testing.assert_array_equal(f["observations/left_image"][:, 0, 0, 0], np.arange(7))


def rows(f: h5py.File) -> set[int]:
    """The row counts of every dataset in the file (one value when they all agree)."""
    counts: set[int] = set()
    f.visititems(lambda name, obj: counts.add(len(obj)) if isinstance(obj, h5py.Dataset) else None)
    return counts


def test_write_error_that_persists_does_not_crash(tmp_path: Path) -> None:
    """A real OS write error that no retry can fix (file size limit, EFBIG): the handles HDF5
    cannot flush are never closed (closing them segfaults), the process lives on and exits 0."""
    path = tmp_path / "full.hdf5"
    after = textwrap.dedent("""
        import resource, signal
        from lapo_learning.episode_writer import EpisodeWriteError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (w.path.stat().st_size + 30000,) * 2)
        try:
            for k in range(5, 10000):
                w.append(**sample(k, size=(12, 10)))
        except EpisodeWriteError as exc:
            print("ERROR", w.n, exc)
        assert w.abort("error") == w.path
        print("alive", flush=True)
    """)
    child = run_child(path, 5, after)
    out, err = child.communicate(timeout=60)
    lines = out.splitlines()
    assert child.returncode == 0, (child.returncode, out, err)
    assert lines[:1] == ["written"] and lines[1].startswith("ERROR") and lines[2] == "alive", (out, err)
    assert int(lines[1].split()[1]) >= 5 and f"{path}: writing sample" in out
    assert "it keeps the rows of its last flush, marked incomplete" in out
    with h5py.File(path, "r", swmr=True) as f:
        assert not fmt.is_complete(f) and len(f["actions"]) >= 5


FULL_DISK_CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {test_dir!r})
    import numpy as np
    from test_episode_writer import EpisodeWriter, EpisodeWriteError, config, sample
    w = EpisodeWriter({path!r}, config(flush_every={flush_every}))
    rng = np.random.default_rng(0)
    try:
        for k in range(100000):
            s = sample(k, size=(48, 64))  # random pixels: lzf cannot shrink them
            s["images"] = {{c: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for c in s["images"]}}
            w.append(**s)
    except EpisodeWriteError as exc:
        print("ERROR", w.n, exc, flush=True)
    print("aborted", w.abort("error"), flush=True)
""")


@pytest.mark.parametrize("flush_every", [1, 7])
def test_full_disk_stops_the_episode_cleanly(tmp_path: Path, flush_every: int) -> None:
    """A really full disk (ENOSPC on a 4 MB tmpfs): the episode is cut back to its last whole
    row, closed and marked, the error names the file, and the process does not crash."""
    from small_fs import small_filesystem

    with small_filesystem(tmp_path / "disk", "4m") as disk:
        path = disk / "ep.hdf5"
        code = FULL_DISK_CHILD.format(test_dir=str(Path(__file__).parent), path=str(path), flush_every=flush_every)
        child = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert child.returncode == 0, (child.returncode, child.stdout, child.stderr[-3000:])
        lines = child.stdout.splitlines()
        assert lines[0].startswith("ERROR"), child.stdout
        n = int(lines[0].split()[1])  # kept: the rows of the last good flush
        failed = int(re.search(r"writing sample (\d+) failed: the disk is full", lines[0]).group(1))
        assert f"{path}: writing sample {failed} failed" in lines[0] and 10 < n <= failed < n + flush_every
        assert f"its first {n} samples are kept (marked incomplete)" in lines[0]
        assert lines[1] == f"aborted {path}"
        assert fmt.validate_file(path) == []
        with h5py.File(path, "r") as f:  # closed cleanly: opens without SWMR
            assert rows(f) == {n}
            assert not fmt.is_complete(f) and f.attrs["outcome"] == "disk_full"
            assert "No space left on device" in f.attrs["error"]
            np.testing.assert_array_equal(f["observations/joint"][:, 0], np.arange(n))
        assert sorted(p.name for p in disk.iterdir()) == ["ep.hdf5"]  # the reserve is released


def test_changed_image_size_names_the_stream_and_keeps_rows_equal(tmp_path: Path) -> None:
    path = tmp_path / "ep.hdf5"
    w = write(path, 3, None)
    with pytest.raises(EpisodeWriteError, match=r"writing sample 3 failed: stream right_image has shape "
                       r"\(24, 20, 3\), the episode stores \(12, 10, 3\).*its first 3 samples are kept"):
        s = sample(3)
        s["images"]["right_image"] = np.zeros((24, 20, 3), np.uint8)
        w.append(**s)
    assert fmt.validate_file(path) == []
    with h5py.File(path, "r") as f:
        assert rows(f) == {3} and not fmt.is_complete(f) and f.attrs["outcome"] == "write_error"
        assert "stream right_image" in f.attrs["error"]


def test_gaps_longer_than_max_gap_are_marked(tmp_path: Path) -> None:
    path = tmp_path / "ep.hdf5"
    w = EpisodeWriter(path, config(max_gap=3 / 30))
    for k in (0, 1, 2, 4, 5, 20, 21):  # a 2-period step is no gap, a 15-period one is
        w.append(**sample(k))
    w.close("success")
    assert w.gaps == 1 and fmt.validate_file(path) == []
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["after_gap"][()], [0, 0, 0, 0, 0, 1, 0])
    ds = load_dataset(path)
    assert ds.n_episodes == 1
    np.testing.assert_array_equal(ds.next_index(), [1, 2, 3, 4, 4, 6, 6])
    assert not ds.usable_for_td()[4] and ds.usable_for_td()[6]  # 6: the terminal
    np.testing.assert_array_equal(ds.action_chunks(3, np.array([3]))[0, :, 0], [-4, -5, -5])


def test_low_disk_space_stops_the_episode_cleanly(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    w = EpisodeWriter(tmp_path / "ep.hdf5", config(flush_every=2, min_free_bytes=free + 10**12))
    w.append(**sample(0))
    with pytest.raises(EpisodeWriteError, match="MB free on the disk .* its 2 samples are kept"):
        w.append(**sample(1))
    with pytest.raises(RuntimeError, match="already closed"):
        w.append(**sample(2))
    assert fmt.validate_file(tmp_path / "ep.hdf5") == []
    with h5py.File(tmp_path / "ep.hdf5", "r") as f:
        assert not fmt.is_complete(f) and f.attrs["outcome"] == "disk_full" and len(f["actions"]) == 2


def test_background_writer_drops_and_counts_when_full(tmp_path: Path) -> None:
    release = threading.Event()
    events: list[tuple[str, dict]] = []

    def on_event(kind: str, info: dict) -> None:
        events.append((kind, info))
        if info.get("outcome") == "success" and not release.is_set():
            release.wait(30)  # stalls the writer thread: the queue fills up deterministically

    bw = BackgroundWriter(max_queue=4, on_event=on_event)
    bw.start_episode(tmp_path / "a.hdf5", config())
    assert bw.submit(**sample(0))
    bw.end_episode("success", {})
    bw.start_episode(tmp_path / "b.hdf5", config())
    while not events:
        time.sleep(0.01)
    accepted = [bw.submit(**sample(k)) for k in range(7)]
    assert accepted == [True] * 4 + [False] * 3 and bw.stats.dropped == 3
    release.set()
    bw.end_episode("failure", {"dropped": 3})
    assert bw.close(timeout=30)
    assert [(k, i["outcome"], i["samples"]) for k, i in events] == [("closed", "success", 1),
                                                                    ("closed", "failure", 4)]
    assert bw.stats.written == 5 and bw.stats.queued == 0 and bw.stats.max_lag > 0
    with h5py.File(tmp_path / "b.hdf5", "r") as f:
        assert len(f["actions"]) == 4 and f.attrs["dropped"] == 3


def test_background_writer_reports_errors_and_aborts_on_close(tmp_path: Path) -> None:
    events: list[tuple[str, dict]] = []
    bw = BackgroundWriter(max_queue=8, on_event=lambda k, i: events.append((k, i)))
    (tmp_path / "taken.hdf5").write_bytes(b"x")
    bw.start_episode(tmp_path / "taken.hdf5", config())  # refused: exists
    bw.start_episode(tmp_path / "open.hdf5", config())
    bw.submit(**sample(0))
    bw.discard_episode()
    bw.start_episode(tmp_path / "open2.hdf5", config())
    bw.submit(**sample(0))
    assert bw.close(timeout=30)  # aborts the open episode
    assert events[0][0] == "error" and "refusing to overwrite" in events[0][1]["message"]
    assert not (tmp_path / "open.hdf5").exists()  # discarded
    assert events[-1][1]["outcome"] == "interrupted" and not events[-1][1]["complete"]
    with h5py.File(tmp_path / "open2.hdf5", "r") as f:
        assert not fmt.is_complete(f) and len(f["actions"]) == 1
