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


def test_speedup_over_reference():
    reference = np.linspace(10.0, 1.0, 100)  # reaches 5.5 at step 51 (index 50)
    value, lower = metrics.speedup(reference, 5.5, steps=100)
    assert value == pytest.approx(0.51) and not lower
    value, lower = metrics.speedup(reference, 0.5, steps=50)  # the reference never gets to 0.5
    assert value == pytest.approx(2.0) and lower
    assert metrics.speedup(reference, math.nan, steps=10) == (0.0, False)


def test_performance_profile_hand_made():
    costs = {"t1": {"a": 1.0, "b": 2.0}, "t2": {"a": 3.0, "b": 1.0}, "t3": {"a": 1.0, "b": math.inf}}
    profile = metrics.performance_profile(costs, [1.0, 2.0, 3.0, 100.0])
    assert profile["a"].tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0])
    assert profile["b"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])


def test_time_ratio():
    assert metrics.time_ratio([2.0, 4.0], [1.0, 2.0]) == pytest.approx(2.0)
    assert math.isnan(metrics.time_ratio([], [1.0]))
