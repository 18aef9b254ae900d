import math

import numpy as np
import pytest

from l2o.bench import metrics


def test_mean_std_skips_non_finite():
    mean, std, n = metrics.mean_std([1.0, 3.0, None, math.nan, math.inf])
    assert (mean, n) == (2.0, 2)
    assert std == pytest.approx(math.sqrt(2.0))
    assert metrics.mean_std([5.0]) == (5.0, 0.0, 1)
    m, s, n = metrics.mean_std([None])
    assert math.isnan(m) and n == 0


def test_smooth_is_trailing_mean():
    out = metrics.smooth([4.0, 2.0, 0.0, 2.0], window=2)
    assert out.tolist() == [4.0, 3.0, 1.0, 1.0]
    assert metrics.smooth([1.0, 2.0, 3.0], window=10).tolist() == [1.0, 1.5, 2.0]
    with pytest.raises(ValueError, match="window"):
        metrics.smooth([1.0], window=0)


def test_steps_to_target():
    curve = [10.0, 8.0, 5.0, 5.5, 3.0]
    assert metrics.steps_to_target(curve, 5.0) == 3
    assert metrics.steps_to_target(curve, 10.0) == 1
    assert metrics.steps_to_target(curve, 2.0) is None
    assert metrics.steps_to_target([math.nan, 1.0], 2.0) == 2


def test_baseline_target_uses_median_of_best():
    best, target = metrics.baseline_target({"sgd": [3.0, 1.0, 2.0], "adam": [1.5, 1.6, 9.0], "bad": [math.nan] * 3})
    assert (best, target) == ("adam", 1.6)


def test_reach_step_is_where_the_curve_settles_below():
    curve = [10.0, 8.0, 4.0, 6.0, 3.0]
    assert metrics.reach_step(curve, 5.0) == pytest.approx(4 + 1 / 3)  # the dip at step 3 does not count
    assert metrics.reach_step(curve, 9.0) == pytest.approx(1.5)
    assert metrics.reach_step(curve, 11.0) == 1.0
    assert metrics.reach_step(curve, 3.0) == 5.0  # its own final loss: at the end
    assert metrics.reach_step(curve, 2.0) is None
    assert metrics.reach_step(curve, 5.0, steps=[0, 10, 20, 30, 40]) == pytest.approx(33 + 1 / 3)
    assert metrics.reach_step([math.nan, 1.0], 2.0) == 2.0
    with pytest.raises(ValueError, match="steps has 2 entries"):
        metrics.reach_step(curve, 5.0, steps=[1, 2])


def test_speedup_of_the_reference_over_itself_is_exactly_one():
    rng = np.random.default_rng(0)
    # Ten noisy seeds that flatten out: the seed-mean curve is not monotone near its end.
    seeds = [np.exp(-np.arange(300) / 40.0) + 0.05 * rng.standard_normal(300) ** 2 for _ in range(10)]
    seeds = [metrics.smooth(c, 30) for c in seeds]
    reference = metrics.mean_curve(seeds)
    assert (np.diff(reference[-100:]) > 0).any()  # the old first-crossing rule gave < 1 here
    value, lower = metrics.speedup(reference, float(metrics.mean_curve(seeds)[-1]), steps=300)
    assert value == 1.0 and not lower
    assert metrics.steps_to_target(reference, reference[-1]) < 300


def test_speedup_twice_as_fast_half_as_fast_and_never_reached():
    reference = np.linspace(10.0, 1.0, 100)  # 10 - (t - 1) * 9 / 99 at step t
    twice = reference[1::2]  # 50 steps, each worth two reference steps
    value, lower = metrics.speedup(reference, float(twice[-1]), steps=twice.size)
    assert value == pytest.approx(2.0) and not lower
    half = np.repeat(reference[:50], 2)  # 100 steps to get where the reference is at step 50
    value, lower = metrics.speedup(reference, float(half[-1]), steps=half.size)
    assert value == pytest.approx(0.5) and not lower
    value, lower = metrics.speedup(reference, 5.5, steps=100)  # 5.5 lies halfway between steps 50 and 51
    assert value == pytest.approx(0.505) and not lower
    value, lower = metrics.speedup(reference, 0.5, steps=50)  # the reference never gets to 0.5
    assert value == pytest.approx(2.0) and lower
    value, lower = metrics.speedup([5.0, 3.0, 4.0], 3.5, steps=3)  # below only by a dip: not reached
    assert value == pytest.approx(1.0) and lower
    assert metrics.speedup(reference, math.nan, steps=10) == (0.0, False)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        metrics.speedup(reference, 1.0, steps=0)


def test_mean_curve_truncates_to_the_shortest():
    assert metrics.mean_curve([[1.0, 2.0, 3.0], [3.0, 4.0]]).tolist() == [2.0, 3.0]
    assert metrics.mean_curve([]).size == 0


def test_performance_profile_hand_made():
    costs = {"t1": {"a": 1.0, "b": 2.0}, "t2": {"a": 3.0, "b": 1.0}, "t3": {"a": 1.0, "b": math.inf}}
    profile = metrics.performance_profile(costs, [1.0, 2.0, 3.0, 100.0])
    assert profile["a"].tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0])
    assert profile["b"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])


def test_time_ratio():
    assert metrics.time_ratio([2.0, 4.0], [1.0, 2.0]) == pytest.approx(2.0)
    assert metrics.time_ratio([90.0, 2.0, 3.0], [1.0, 5.0, None]) == pytest.approx(2.0)  # fastest runs
    assert math.isnan(metrics.time_ratio([], [1.0]))
