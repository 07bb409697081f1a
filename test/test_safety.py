"""The policy node's safety filter and loop statistics, without ROS."""
import numpy as np
import pytest

from lapo_ros.policy_diagnostics import LoopStatistics
from lapo_ros.safety import SafetyConfig, SafetyFilter, limits_from_training


def make_filter(max_delta: float = 0.1, n: int = 3) -> SafetyFilter:
    return SafetyFilter(SafetyConfig(lower=-np.ones(n), upper=np.ones(n), max_delta_per_tick=max_delta))


def test_first_tick_is_rate_limited_from_measured_then_from_last_command():
    f = make_filter(max_delta=0.1)
    r = f.apply(np.array([0.5, -0.5, 0.05]), measured=[0.0, 0.0, 0.0])
    np.testing.assert_allclose(r.command, [0.1, -0.1, 0.05])
    assert r.n_rate_limited == 2 and r.n_clamped == 0
    # The second tick steps from the last command, not from the (unchanged) measurement.
    r = f.apply(np.array([0.5, -0.5, 0.05]), measured=[0.0, 0.0, 0.0])
    np.testing.assert_allclose(r.command, [0.2, -0.2, 0.05])
    f.reset()
    r = f.apply(np.array([0.5, -0.5, 0.05]), measured=[0.4, 0.0, 0.0])
    np.testing.assert_allclose(r.command, [0.5, -0.1, 0.05])


def test_adversarial_outputs_never_break_limits_or_per_tick_change():
    rng = np.random.default_rng(0)
    lower, upper, delta = np.array([-1.0, 0.0, -3.0]), np.array([1.0, 0.5, -2.0]), 0.05
    f = SafetyFilter(SafetyConfig(lower, upper, delta))
    measured = np.array([0.0, 0.25, -2.5])
    previous = measured
    rejected = 0
    for _ in range(500):
        action = rng.choice([1e9, -1e9, np.nan, np.inf, 0.3, -0.3], size=3)
        r = f.apply(action, measured)
        if r.command is None:
            assert r.rejected_nonfinite and not np.isfinite(action).all()
            rejected += 1
            continue
        assert np.isfinite(action).all()
        assert (r.command >= lower - 1e-12).all() and (r.command <= upper + 1e-12).all()
        assert np.abs(r.command - previous).max() <= delta + 1e-12
        previous = r.command
    assert rejected > 0


def test_clamp_counts_and_nonfinite_rejection_keeps_reference():
    f = make_filter(max_delta=10.0)
    r = f.apply(np.array([5.0, -5.0, 0.0]), measured=np.zeros(3))
    np.testing.assert_allclose(r.command, [1.0, -1.0, 0.0])
    assert r.n_clamped == 2 and r.n_rate_limited == 0
    r = f.apply(np.array([np.nan, 0.0, 0.0]), measured=np.zeros(3))
    assert r.command is None and r.rejected_nonfinite
    # The rejected tick did not move the reference: a small delta still steps from [1, -1, 0].
    f.config.max_delta_per_tick = 0.5
    r = f.apply(np.array([0.0, 0.0, 0.0]), measured=np.zeros(3))
    np.testing.assert_allclose(r.command, [0.5, -0.5, 0.0])


def test_measured_outside_limits_is_brought_back_gradually():
    f = make_filter(max_delta=0.1, n=1)
    r = f.apply(np.array([0.0]), measured=[1.5])
    np.testing.assert_allclose(r.command, [1.4])


def test_bad_configuration_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="lower > upper"):
        SafetyConfig(np.array([1.0]), np.array([0.0]), 0.1)
    with pytest.raises(ValueError, match="max_delta_per_tick"):
        SafetyConfig(np.zeros(1), np.ones(1), 0.0)
    with pytest.raises(ValueError, match="one entry per command joint"):
        SafetyConfig(np.zeros(2), np.ones(3), 0.1)
    with pytest.raises(ValueError, match="policy action has 4 entries"):
        make_filter().apply(np.zeros(3 + 1), np.zeros(3))
    with pytest.raises(ValueError, match="measured joint positions"):
        make_filter().apply(np.zeros(3), [0.0, np.nan, 0.0])


def test_limits_from_training_widen_by_margin():
    lo, hi = limits_from_training(np.array([-1.0, 0.0]), np.array([1.0, 0.0]), 0.1)
    np.testing.assert_allclose(lo, [-1.2, 0.0])
    np.testing.assert_allclose(hi, [1.2, 0.0])
    with pytest.raises(ValueError):
        limits_from_training(np.zeros(1), np.ones(1), -0.1)


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
