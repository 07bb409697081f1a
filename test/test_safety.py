"""The policy node's safety filter, limits, tracking watchdog, loop statistics and health, without ROS."""
import numpy as np
import pytest

from lapo_learning.schema import DatasetStatistics, Normalizer
from lapo_ros.policy_diagnostics import ERROR, OK, WARN, LoopStatistics, TickGap, loop_health
from lapo_ros.safety import SafetyConfig, SafetyFilter, limits_from_training, resolve_limits

TICK = 1.0 / 30


def make_filter(max_delta: float = 0.1, n: int = 3, max_error: float = 100.0, timeout: float = 0.5) -> SafetyFilter:
    return SafetyFilter(SafetyConfig(lower=-np.ones(n), upper=np.ones(n), max_delta_per_tick=max_delta,
                                     tracking_max_error=max_error, tracking_timeout=timeout))


def test_first_tick_is_rate_limited_from_measured_then_from_last_command():
    f = make_filter(max_delta=0.1)
    r = f.apply(np.array([0.5, -0.5, 0.05]), measured=[0.0, 0.0, 0.0], now=0.0)
    np.testing.assert_allclose(r.command, [0.1, -0.1, 0.05])
    assert r.n_rate_limited == 2 and r.n_clamped == 0
    # The second tick steps from the last command, not from the (unchanged) measurement.
    r = f.apply(np.array([0.5, -0.5, 0.05]), measured=[0.0, 0.0, 0.0], now=TICK)
    np.testing.assert_allclose(r.command, [0.2, -0.2, 0.05])
    f.reset()
    r = f.apply(np.array([0.5, -0.5, 0.05]), measured=[0.4, 0.0, 0.0], now=2 * TICK)
    np.testing.assert_allclose(r.command, [0.5, -0.1, 0.05])


def test_adversarial_outputs_never_break_limits_or_per_tick_change():
    rng = np.random.default_rng(0)
    lower, upper, delta = np.array([-1.0, 0.0, -3.0]), np.array([1.0, 0.5, -2.0]), 0.05
    f = SafetyFilter(SafetyConfig(lower, upper, delta, tracking_max_error=100.0, tracking_timeout=0.5))
    measured = np.array([0.0, 0.25, -2.5])
    previous = measured
    rejected = 0
    for i in range(500):
        action = rng.choice([1e9, -1e9, np.nan, np.inf, 0.3, -0.3], size=3)
        r = f.apply(action, measured, now=i * TICK)
        if r.command is None:
            assert r.rejected_nonfinite and not np.isfinite(action).all()
            rejected += 1
            previous = measured  # a rejected tick restarts from the measured position
            continue
        assert np.isfinite(action).all()
        assert (r.command >= lower - 1e-12).all() and (r.command <= upper + 1e-12).all()
        assert np.abs(r.command - previous).max() <= delta + 1e-12
        previous = r.command
    assert rejected > 0


def test_clamp_counts_and_nonfinite_rejection_restarts_from_measured():
    f = make_filter(max_delta=0.1)
    r = f.apply(np.array([5.0, -5.0, 0.0]), measured=np.zeros(3), now=0.0)
    np.testing.assert_allclose(r.command, [0.1, -0.1, 0.0])
    assert r.n_clamped == 2 and r.n_rate_limited == 2
    r = f.apply(np.array([5.0, -5.0, 0.0]), measured=np.zeros(3), now=TICK)
    np.testing.assert_allclose(r.command, [0.2, -0.2, 0.0])
    r = f.apply(np.array([np.nan, 0.0, 0.0]), measured=np.zeros(3), now=2 * TICK)
    assert r.command is None and r.rejected_nonfinite
    # Output paused: the next command steps from where the arm is measured, not from [0.2, -0.2, 0].
    r = f.apply(np.array([5.0, -5.0, 0.0]), measured=[0.5, 0.5, 0.5], now=3 * TICK)
    np.testing.assert_allclose(r.command, [0.6, 0.4, 0.4])


def test_measured_outside_limits_is_brought_back_gradually():
    f = make_filter(max_delta=0.1, n=1)
    r = f.apply(np.array([0.0]), measured=[1.5], now=0.0)
    np.testing.assert_allclose(r.command, [1.4])


def test_bad_configuration_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="lower > upper"):
        SafetyConfig(np.array([1.0]), np.array([0.0]), 0.1, 0.3, 0.5)
    with pytest.raises(ValueError, match="max_delta_per_tick"):
        SafetyConfig(np.zeros(1), np.ones(1), 0.0, 0.3, 0.5)
    with pytest.raises(ValueError, match="tracking_max_error"):
        SafetyConfig(np.zeros(1), np.ones(1), 0.1, float("nan"), 0.5)
    with pytest.raises(ValueError, match="tracking_timeout"):
        SafetyConfig(np.zeros(1), np.ones(1), 0.1, 0.3, -1.0)
    with pytest.raises(ValueError, match="one entry per command joint"):
        SafetyConfig(np.zeros(2), np.ones(3), 0.1, 0.3, 0.5)
    with pytest.raises(ValueError, match="policy action has 4 entries"):
        make_filter().apply(np.zeros(3 + 1), np.zeros(3), now=0.0)
    with pytest.raises(ValueError, match="measured joint positions"):
        make_filter().apply(np.zeros(3), [0.0, np.nan, 0.0], now=0.0)


def test_limits_from_training_widen_by_margin():
    lo, hi = limits_from_training(np.array([-1.0, 0.0]), np.array([1.0, 0.0]), 0.1)
    np.testing.assert_allclose(lo, [-1.2, 0.0])
    np.testing.assert_allclose(hi, [1.2, 0.0])
    with pytest.raises(ValueError):
        limits_from_training(np.zeros(1), np.ones(1), -0.1)


def test_tracking_watchdog_trips_when_the_arm_does_not_follow_and_waits_for_rearm():
    f = make_filter(max_delta=0.05, n=2, max_error=0.3, timeout=0.5)
    measured = np.zeros(2)  # the arm does not move
    published, t, result = [], 0.0, None
    for tick in range(60):
        t = tick * TICK
        result = f.apply(np.array([1e30, 0.0]), measured, now=t)
        if result.command is None:
            break
        published.append(result.command)
    fault = result.tracking_fault
    assert fault is not None and fault.joints == (0,) and not result.rejected_nonfinite
    # Tick 6 published 0.35, beyond 0.3 from the arm from tick 7 on: tripped once that lasted > 0.5 s.
    assert 7 * TICK + 0.5 < t <= 7 * TICK + 0.5 + TICK
    assert fault.errors[0] == pytest.approx(1.0) and fault.duration > 0.5
    assert np.max(published) <= 1.0  # never beyond the limit meanwhile
    assert "tracking_max_error 0.3" in fault.describe(["left_waist", "left_elbow"], 0.3)
    assert "left_waist" in fault.describe(["left_waist", "left_elbow"], 0.3)
    # Tripped: nothing goes out, even once the arm is back, and a pause (reset) does not re-arm it.
    f.reset()
    assert f.apply(np.zeros(2), np.zeros(2), now=t + 1.0).command is None
    # Re-armed by the operator: the next command starts from the measured position.
    f.rearm()
    np.testing.assert_allclose(f.apply(np.array([1.0, 0.0]), [0.2, 0.0], now=t + 2.0).command, [0.25, 0.0])


def test_tracking_watchdog_tolerates_normal_lag_and_short_excursions():
    f = make_filter(max_delta=0.05, n=1, max_error=0.3, timeout=0.5)
    command = np.zeros(1)
    for tick in range(300):  # the arm one tick behind a command ramping back and forth at the maximum rate
        target = np.array([1.0 if (tick // 40) % 2 == 0 else -1.0])
        result = f.apply(target, measured=command - np.sign(target) * 0.05, now=tick * TICK)
        assert result.command is not None, f"tripped at tick {tick}"
        command = result.command
    # 0.4 s beyond the bound (a bump), then following again: the count restarts, no trip.
    start = 300 * TICK
    for i in range(12):
        assert f.apply(command, command + 0.5, now=start + i * TICK).command is not None
    for i in range(12, 40):
        assert f.apply(command, command, now=start + i * TICK).command is not None
    assert f.fault is None


def stats_with(action_min, action_max, action_low=None, action_high=None) -> DatasetStatistics:
    n = len(action_min)
    return DatasetStatistics(joint=Normalizer(np.zeros(n), np.ones(n)), action=Normalizer(np.zeros(n), np.ones(n)),
                             action_min=np.asarray(action_min), action_max=np.asarray(action_max),
                             action_low=None if action_low is None else np.asarray(action_low),
                             action_high=None if action_high is None else np.asarray(action_high))


def test_limits_come_from_configuration_else_robust_training_range():
    names = ["a", "b"]
    poisoned = stats_with([-1.0, -5e28], [1.0, 1e30], action_low=[-1.0, -0.5], action_high=[1.0, 0.5])
    limits = resolve_limits(names, (), (), poisoned, margin=0.1)
    assert limits.from_training and "percentiles" in limits.source and "limit_margin 0.1" in limits.source
    np.testing.assert_allclose(limits.lower, [-1.2, -0.6])
    np.testing.assert_allclose(limits.upper, [1.2, 0.6])
    assert limits.describe(names) == "a [-1.2, 1.2], b [-0.6, 0.6]"
    configured = resolve_limits(names, (-3.0, -2.0), (3.0, 2.0), poisoned, margin=0.1)
    assert not configured.from_training and "configured" in configured.source
    np.testing.assert_allclose(configured.upper, [3.0, 2.0])
    with pytest.raises(ValueError, match="'joint_upper_limits' has 0 entries, expected 2"):
        resolve_limits(names, (-3.0, -2.0), (), poisoned, margin=0.1)
    # A checkpoint written before the robust range: the raw extremes, said so, and refused when absurd.
    old = resolve_limits(names, (), (), stats_with([-1.0, 0.0], [1.0, 2.0]), margin=0.0)
    assert "min/max" in old.source and "predates" in old.source
    np.testing.assert_allclose(old.upper, [1.0, 2.0])
    with pytest.raises(ValueError, match=r"implausible for \['b'\].*joint_lower_limits"):
        resolve_limits(names, (), (), stats_with([-1.0, -5e28], [1.0, 1e30]), margin=0.05)


def test_loop_health_levels():
    counts = dict.fromkeys(LoopStatistics.COUNTERS, 0)
    assert loop_health(True, None, {**counts, "published": 30}, 3.0, 33.3) == (OK, "running")
    assert loop_health(False, None, counts, 3.0, 33.3) == (OK, "disabled")
    assert loop_health(False, "tracking watchdog: x", counts, 3.0, 33.3) == (ERROR, "tracking watchdog: x")
    level, message = loop_health(True, None, {**counts, "published": 20, "nonfinite_rejections": 10}, 3.0, 33.3)
    assert level == WARN and "nonfinite_rejections=10" in message
    level, message = loop_health(True, None, {**counts, "nonfinite_joints": 30}, 3.0, 33.3)
    assert level == ERROR and "nonfinite_joints=30" in message
    assert loop_health(True, None, {**counts, "stale_skips": 30}, 3.0, 33.3)[0] == WARN
    assert loop_health(True, None, {**counts, "published": 30, "late_ticks": 1}, 3.0, 33.3)[0] == WARN
    assert loop_health(True, None, {**counts, "published": 30}, 40.0, 33.3)[0] == WARN


def test_loop_statistics():
    stats = LoopStatistics(nominal_rate_hz=10.0, window=100, rate_window_s=5.0)
    assert np.isnan(stats.latency_percentiles_ms()[0]) and stats.achieved_rate_hz(1.0) == 0.0
    stats.start(-0.05)
    for i in range(100):
        stats.add_latency(0.001 * (i + 1))  # 1..100 ms
        stats.add_publish(i * 0.1 + (0.02 if i == 50 else 0.0))
    p50, p99 = stats.latency_percentiles_ms()
    assert p50 == pytest.approx(50.5) and p99 == pytest.approx(99.01)
    assert stats.achieved_rate_hz(9.95) == pytest.approx(10.0)
    assert stats.achieved_rate_hz(0.95) == pytest.approx(10.0)  # partial window since start
    assert stats.achieved_rate_hz(12.45) == pytest.approx(5.0)  # publishing stopped 2.5 s ago
    assert stats.achieved_rate_hz(20.0) == 0.0
    assert stats.period_jitter_p99_ms() == pytest.approx(20.0, abs=0.5)
    stats.count("stale_skips", 3)
    assert stats.summary(9.95).counts["stale_skips"] == 3 and stats.counts["published"] == 100
    with pytest.raises(KeyError):
        stats.count("nope")
    assert "p99=99.0 ms" in stats.log_line(9.95)


def test_tick_gap_flags_a_tick_after_a_missed_one():
    gap = TickGap(0.1)
    assert not gap.late(0.0)  # the first tick has nothing to be late after
    assert not gap.late(0.1) and not gap.late(0.25)  # jitter, even 1.5 periods, is not a missed tick
    assert gap.late(0.46)  # more than two periods: at least one tick never fired
    assert not gap.late(0.56)
    gap.reset()  # enabling again: the pause before is intended
    assert not gap.late(5.0)
    with pytest.raises(ValueError):
        TickGap(0.0)
