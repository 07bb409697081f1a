"""Newest-per-stream sampling: staleness, skip counts, lazy conversion (no ROS involved)."""
import numpy as np
import pytest

from lapo_learning.schema import CAMERAS
from lapo_learning.stream_sampler import ACTION_STREAM, JOINT_STREAM, REWARD_STREAM, StreamCache, StreamSampler


def make(max_age: float = 0.1, with_action: bool = True, with_reward: bool = False, reject_nonfinite: bool = False):
    calls: list[str] = []

    def convert(name):
        def run(raw):
            calls.append(name)
            return np.asarray(raw)
        return run

    names = list(CAMERAS) + [JOINT_STREAM] + ([ACTION_STREAM] if with_action else [])
    caches = {n: StreamCache(n, convert(n)) for n in names}
    if with_reward:
        caches[REWARD_STREAM] = StreamCache(REWARD_STREAM, float)
    return StreamSampler(caches, max_age, reject_nonfinite), caches, calls


def feed(caches, t: float, value=1.0, skip=()) -> None:
    for name, cache in caches.items():
        if name not in skip:
            cache.update(value, t, t + 0.001)


def test_fresh_streams_give_a_sample_with_stamps() -> None:
    sampler, caches, _ = make(with_reward=True)
    feed(caches, 10.0, 2.0)
    s = sampler.sample(10.05)
    assert s is not None and s.time == 10.05
    assert set(s.images) == set(CAMERAS) and float(s.joint) == 2.0 and float(s.action) == 2.0
    assert s.reward == 2.0
    assert s.stamps == {n: 10.0 for n in caches}
    assert sum(sampler.skipped.values()) == 0 and sampler.sampled == 1


def test_stale_or_missing_streams_skip_and_are_counted_per_stream() -> None:
    sampler, caches, calls = make(max_age=0.1)
    assert sampler.sample(1.0) is None  # nothing received yet: every stream counted
    assert all(sampler.skipped[n] == 1 for n in caches)
    feed(caches, 1.0)
    caches["global_image"].update(0, 0.85, 0.85)
    assert sampler.stale_streams(1.0) == ["global_image"]
    assert sampler.sample(1.0) is None
    assert sampler.skipped["global_image"] == 2 and sampler.skipped["left_image"] == 1
    assert sampler.skipped_samples == 2
    assert calls == []  # skipped samples convert nothing
    caches["global_image"].update(0, 0.95, 0.95)
    assert sampler.sample(1.0) is not None


def test_future_stamp_beyond_max_age_is_stale() -> None:
    sampler, caches, _ = make()
    feed(caches, 5.0)
    assert sampler.sample(4.5) is None and sampler.skipped[JOINT_STREAM] == 1


def test_zero_stamp_uses_arrival_time() -> None:
    cache = StreamCache("joint")
    cache.update("msg", 0.0, 3.5)
    assert cache.stamp() == 3.5
    cache.update("msg", None, 4.0)
    assert cache.newest() == ("msg", 4.0)


def test_each_message_is_converted_once_even_if_sampled_twice() -> None:
    sampler, caches, calls = make()
    feed(caches, 1.0)
    assert sampler.sample(1.01) is not None and sampler.sample(1.02) is not None
    assert sorted(calls) == sorted(caches)  # one conversion per stream
    feed(caches, 1.03)
    sampler.sample(1.04)
    assert len(calls) == 2 * len(caches)


def test_conversion_errors_propagate() -> None:
    sampler, caches, _ = make()
    feed(caches, 1.0)
    caches["left_image"] = StreamCache("left_image", lambda raw: (_ for _ in ()).throw(ValueError("bad encoding")))
    sampler = StreamSampler(caches, 0.1)
    caches["left_image"].update(0, 1.0, 1.0)
    with pytest.raises(ValueError, match="bad encoding"):
        sampler.sample(1.0)


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="needs streams"):
        StreamSampler({"joint": StreamCache("joint")}, 0.1)
    _, caches, _ = make()
    with pytest.raises(ValueError, match="max_age must be > 0"):
        StreamSampler(caches, 0.0)


@pytest.mark.parametrize("stream", [JOINT_STREAM, ACTION_STREAM, REWARD_STREAM])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_values_skip_the_sample_and_are_counted_per_stream(stream: str, bad: float) -> None:
    sampler, caches, _ = make(with_reward=True, reject_nonfinite=True)
    feed(caches, 1.0)
    caches[stream].update(np.array([0.5, bad]) if stream != REWARD_STREAM else bad, 1.0, 1.0)
    assert sampler.sample(1.0) is None
    assert sampler.nonfinite == {stream: 1} and sum(sampler.skipped.values()) == 0
    assert sampler.skipped_samples == 1 and sampler.sampled == 0
    caches[stream].update(np.array([0.5, 0.25]) if stream != REWARD_STREAM else 0.25, 1.01, 1.01)
    assert sampler.sample(1.02) is not None


def test_nonfinite_values_pass_without_reject_nonfinite() -> None:
    """The policy node's sampler: its safety filter rejects non-finite joints itself."""
    sampler, caches, _ = make()
    feed(caches, 1.0, np.nan)
    assert sampler.sample(1.0) is not None and not sampler.nonfinite


def test_problem_says_why_a_stream_blocks() -> None:
    sampler, caches, _ = make(max_age=0.1)
    assert sampler.problem(JOINT_STREAM, 1.0) == "no message received"
    feed(caches, 1.0)
    assert sampler.problem(JOINT_STREAM, 1.05) is None
    assert sampler.problem(JOINT_STREAM, 3.5) == "newest message 2.50 s old (max_age 0.1 s)"
    assert sampler.problem(JOINT_STREAM, 0.5) == "stamped 0.50 s ahead of this node's clock (max_age 0.1 s)"


def test_newer_than_waits_uncounted_for_observations_after_it() -> None:
    """The recorder passes its episode's start: the robot's state from before it (a sim reset while
    paused, a frame still in flight) never opens an episode, and waiting for it is not a skip. The
    action and reward stay in force from before (a controller holds its last command)."""
    sampler, caches, _ = make(with_reward=True)
    feed(caches, 1.0)
    assert sampler.sample(1.02, newer_than=1.0) is None
    caches["left_image"].update(2.0, 1.02, 1.02)
    caches[JOINT_STREAM].update(2.0, 1.02, 1.02)
    assert sampler.sample(1.02, newer_than=1.0) is None  # two cameras still from before the start
    for cam in CAMERAS:
        caches[cam].update(2.0, 1.02, 1.02)
    s = sampler.sample(1.03, newer_than=1.0)
    assert s is not None and float(s.joint) == 2.0 and s.stamps[ACTION_STREAM] == 1.0
    assert sum(sampler.skipped.values()) == 0 and sampler.skipped_samples == 0 and sampler.sampled == 1
    assert sampler.sample(1.2, newer_than=1.0) is None and sampler.skipped_samples == 1  # stale still counts
