"""YellowFin beyond the common suite: the SingleStep solver, the paper's statistics and smoothed
updates, numerical guards, and closed-loop momentum measurement and control."""

import collections
import math

import pytest
import torch

from l2o.optim.yellowfin import YellowFin, cubic_root, measure_total_momentum, single_step


@pytest.mark.parametrize("p", [1e-9, 1e-4, 0.01, 0.3, 1.0, 2.5, 40.0, 1e4, 1e9, 1e30, 1e200])
def test_cubic_root_solves_the_stationarity_equation(p):
    x = cubic_root(p)
    assert 0.0 <= x <= 1.0
    lhs, rhs = p * x, (1 - x) ** 3
    # x is accurate to rounding; near x = 1 that limits the relative accuracy of (1 - x)^3
    assert abs(lhs - rhs) <= 1e-12 * max(lhs, rhs) + 3 * (1 - x) ** 2 * 2e-16
    assert cubic_root(0.0) == 1.0 and cubic_root(math.inf) == 0.0


def test_single_step_is_the_constrained_minimum():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        h_min, ratio, variance, distance = (10 ** (torch.rand(4, generator=gen, dtype=torch.float64) * 4 - 2)).tolist()
        h_max = h_min * (1 + ratio)
        mu, alpha = single_step(h_min, h_max, variance, distance)
        # brute force over sqrt(mu) on the feasible interval
        floor = (math.sqrt(h_max / h_min) - 1) / (math.sqrt(h_max / h_min) + 1)
        xs = torch.linspace(floor, 1.0, 20001, dtype=torch.float64)
        objective = xs ** 2 * distance ** 2 + (1 - xs) ** 4 * variance / h_min ** 2
        best = float(xs[objective.argmin()])
        assert math.sqrt(mu) == pytest.approx(best, abs=1e-4)
        assert alpha == pytest.approx((1 - math.sqrt(mu)) ** 2 / h_min, rel=1e-12)
    assert single_step(0.0, 1.0, 1.0, 1.0) is None
    assert single_step(1.0, math.nan, 1.0, 1.0) is None


def test_first_step_applies_the_smoothed_values_of_the_paper():
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], lr=0.7, beta=0.99, init_lr=1e-3, init_momentum=0.2)
    g = torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64)
    x.grad = g.clone()
    optimizer.step()
    # One gradient: C = 0 and h_max = h_min = ||g||^2, so SingleStep gives mu* = 0, alpha* = 1/||g||^2.
    alpha = 0.99 * 1e-3 + 0.01 / float(g @ g)
    state = optimizer.tuner_state()
    assert state["lr"] == pytest.approx(alpha, rel=1e-14)
    assert state["momentum"] == pytest.approx(0.99 * 0.2, rel=1e-14)
    torch.testing.assert_close(x.detach(), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) - 0.7 * alpha * g)


def _reference_statistics(grads, beta, width):
    """Algorithms 2-4 of the paper with zero-debiased moving averages, written out directly."""
    h_max = h_min = sq = norm = dist = 0.0
    avg = torch.zeros_like(grads[0])
    for t, g in enumerate(grads, start=1):
        h = float(g @ g)
        window = [float(v @ v) for v in grads[max(0, t - width):t]]
        h_max = beta * h_max + (1 - beta) * max(window)
        h_min = beta * h_min + (1 - beta) * min(window)
        avg = beta * avg + (1 - beta) * g
        sq = beta * sq + (1 - beta) * h
        norm = beta * norm + (1 - beta) * math.sqrt(h)
        dist = beta * dist + (1 - beta) * norm / sq
    debias = 1 - beta ** len(grads)
    return {"h_max": h_max / debias, "h_min": h_min / debias,
            "variance": sq / debias - float(avg @ avg) / debias ** 2, "distance": dist / debias}


def test_statistics_match_the_paper_algorithms():
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(6, generator=gen, dtype=torch.float64) * (1 + t % 7) for t in range(40)]
    x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], beta=0.95, curv_win_width=5)
    for g in grads:
        x.grad = g.clone()
        optimizer.step()
    state = optimizer.tuner_state()
    for key, value in _reference_statistics(grads, 0.95, 5).items():
        assert state[key] == pytest.approx(value, rel=1e-10), key


def test_zero_and_non_finite_gradients_keep_the_tuner_finite():
    x = torch.ones(4, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], beta=0.9)
    for _ in range(30):
        x.grad = torch.zeros(4, dtype=torch.float64)
        optimizer.step()
    assert torch.equal(x.detach(), torch.ones(4, dtype=torch.float64))
    for step in range(30):
        x.grad = x.detach() * (1 + step % 3)
        optimizer.step()
    assert torch.isfinite(x).all()
    assert all(math.isfinite(v) for k, v in optimizer.tuner_state().items() if k != "total_momentum")
    before = optimizer.tuner_state()
    x.grad = torch.full((4,), math.inf, dtype=torch.float64)
    with torch.no_grad():
        optimizer.step()
    after = optimizer.tuner_state()
    for key in ("lr", "momentum", "h_min", "h_max", "variance", "distance"):
        assert after[key] == before[key], key  # a non-finite gradient does not poison the averages


def test_clipping_bounds_the_gradient_the_tuner_and_the_step_see():
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], beta=0.9, init_lr=1e-2, clip_norm=0.5)
    g = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)  # norm 5, clipped to 0.5
    x.grad = g.clone()
    optimizer.step()
    alpha = 0.9 * 1e-2 + 0.1 / 0.25
    assert optimizer.tuner_state()["lr"] == pytest.approx(alpha, rel=1e-14)
    torch.testing.assert_close(x.detach(), -alpha * g / 10)


def test_measure_total_momentum_recovers_a_known_momentum():
    gen = torch.Generator().manual_seed(2)
    previous = torch.randn(1000, generator=gen, dtype=torch.float64)
    previous[::10] = 0.0  # coordinates that did not move carry no information
    grad = torch.randn(1000, generator=gen, dtype=torch.float64)
    displacement = 0.63 * previous - 0.05 * grad
    assert measure_total_momentum(displacement, previous, grad, 0.05) == pytest.approx(0.63, abs=1e-12)
    assert measure_total_momentum(displacement, torch.zeros(1000, dtype=torch.float64), grad, 0.05) is None


def test_closed_loop_with_fresh_gradients_measures_the_applied_momentum():
    gen = torch.Generator().manual_seed(3)
    curvature = torch.logspace(-1, 0, 20, dtype=torch.float64)
    x = torch.ones(20, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], beta=0.9, closed_loop=True, staleness=0, feedback_gain=0.1, init_momentum=0.5)
    for step in range(60):
        applied = optimizer.tuner_state()["applied_momentum"]
        x.grad = curvature * x.detach() + 0.01 * torch.randn(20, generator=gen, dtype=torch.float64)
        optimizer.step()
        state = optimizer.tuner_state()
        if step >= 1:  # from the second step on, two displacements exist
            assert state["total_momentum"] == pytest.approx(applied, abs=1e-9)
            expected = applied + 0.1 * (state["momentum"] - applied)
            assert state["applied_momentum"] == pytest.approx(min(max(expected, -0.999), 0.999), abs=1e-12)


def _stale_run(closed_loop, tau=8, steps=2500, seed=0):
    gen = torch.Generator().manual_seed(seed)
    curvature = torch.logspace(-1.5, 0, 50, dtype=torch.float64)
    x = torch.ones(50, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], closed_loop=closed_loop, staleness=tau)
    stale = collections.deque([x.detach().clone()], maxlen=tau + 1)
    trajectory, sizes, errors, peak = [x.detach().clone()], [], [], 0.0
    for t in range(steps):
        grad = curvature * stale[0] + 0.1 * torch.randn(50, generator=gen, dtype=torch.float64)
        x.grad = grad
        optimizer.step()
        state = optimizer.tuner_state()
        sizes.append(state["lr"])
        trajectory.append(x.detach().clone())
        stale.append(x.detach().clone())
        s = t - tau
        if s >= 1:
            total = measure_total_momentum(trajectory[s + 1] - trajectory[s], trajectory[s] - trajectory[s - 1], grad,
                                           sizes[s])
            errors.append(total - state["momentum"])
        peak = max(peak, 0.5 * float((curvature * x.detach() ** 2).sum()))
    # error of the 100-step mean of the measured total momentum against the target
    means = [sum(errors[i:i + 100]) / 100 for i in range(0, len(errors) - 100, 100)]
    return sum(abs(m) for m in means) / len(means), peak


def test_closed_loop_tracks_the_target_under_staleness():
    open_error, open_peak = _stale_run(closed_loop=False)
    closed_error, closed_peak = _stale_run(closed_loop=True)
    assert closed_error < 0.6 * open_error, (open_error, closed_error)
    assert closed_peak < open_peak, (open_peak, closed_peak)
