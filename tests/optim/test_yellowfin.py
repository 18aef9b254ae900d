"""YellowFin beyond the common suite: the SingleStep solver, the paper's statistics and smoothed
updates, numerical guards, and closed-loop momentum measurement and control."""

import collections
import math

import pytest
import torch

from l2o.optim._base import NonFiniteGradientWarning
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


LISTING = YellowFin.ALGORITHM_LISTING


def test_first_step_applies_the_smoothed_values_of_the_paper():
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], lr=0.7, beta=0.99, init_lr=1e-3, init_momentum=0.2, **LISTING)
    g = torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64)
    x.grad = g.clone()
    optimizer.step()
    # One gradient: C = 0 and h_max = h_min = ||g||^2, so SingleStep gives mu* = 0, alpha* = 1/||g||^2.
    alpha = 0.99 * 1e-3 + 0.01 / float(g @ g)
    state = optimizer.tuner_state()
    assert state["lr"] == pytest.approx(alpha, rel=1e-14)
    assert state["momentum"] == pytest.approx(0.99 * 0.2, rel=1e-14)
    torch.testing.assert_close(x.detach(), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) - 0.7 * alpha * g)


def _reference_statistics(grads, beta, width, log=False):
    """Algorithms 2-4 of the paper with zero-debiased moving averages, written out directly
    (with ``log``, h_min and h_max averaged as logarithms, as the authors' code does)."""
    f, inverse = (math.log, math.exp) if log else (float, float)
    h_max = h_min = sq = norm = dist = 0.0
    avg = torch.zeros_like(grads[0])
    for t, g in enumerate(grads, start=1):
        h = float(g @ g)
        window = [float(v @ v) for v in grads[max(0, t - width):t]]
        h_max = beta * h_max + (1 - beta) * f(max(window))
        h_min = beta * h_min + (1 - beta) * f(min(window))
        avg = beta * avg + (1 - beta) * g
        sq = beta * sq + (1 - beta) * h
        norm = beta * norm + (1 - beta) * math.sqrt(h)
        dist = beta * dist + (1 - beta) * norm / sq
    debias = 1 - beta ** len(grads)
    return {"h_max": inverse(h_max / debias), "h_min": inverse(h_min / debias),
            "variance": sq / debias - float(avg @ avg) / debias ** 2, "distance": dist / debias}


@pytest.mark.parametrize("log", [False, True])
def test_statistics_match_the_paper_algorithms(log):
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(6, generator=gen, dtype=torch.float64) * (1 + t % 7) for t in range(40)]
    x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], beta=0.95, curv_win_width=5, log_curvature=log, adaptive_clip=None, stat_clip=None)
    for g in grads:
        x.grad = g.clone()
        optimizer.step()
    state = optimizer.tuner_state()
    for key, value in _reference_statistics(grads, 0.95, 5, log).items():
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
    before, position = optimizer.tuner_state(), x.detach().clone()
    x.grad = torch.full((4,), math.inf, dtype=torch.float64)
    with pytest.warns(NonFiniteGradientWarning):
        optimizer.step()
    assert optimizer.tuner_state() == before  # a non-finite gradient does not poison the averages
    assert torch.equal(x.detach(), position)  # nor move the parameters


def test_clipping_bounds_the_gradient_the_tuner_and_the_step_see():
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], beta=0.9, init_lr=1e-2, clip_norm=0.5, **LISTING)
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
    optimizer = YellowFin([x], beta=0.9, closed_loop=True, staleness=0, feedback_gain=0.1, init_momentum=0.5,
                          **LISTING)
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
    optimizer = YellowFin([x], closed_loop=closed_loop, staleness=tau, **LISTING)
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


def test_default_first_step_is_untuned_then_the_tuned_values_apply_with_slow_start():
    """The authors' code, which the paper's experiments ran: step 1 applies init_lr and init_momentum,
    step 2 the values SingleStep gives for that step's statistics, unsmoothed, times 2 / (10 w)."""
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], beta=0.9, curv_win_width=4, init_lr=1e-3, init_momentum=0.2)
    g1 = torch.tensor([0.3, 0.1, -0.2], dtype=torch.float64)
    x.grad = g1.clone()
    optimizer.step()
    x1 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) - 1e-3 * g1  # momentum buffer starts at 0
    torch.testing.assert_close(x.detach(), x1, rtol=0, atol=1e-15)
    assert optimizer.tuner_state()["lr"] == 1e-3 and optimizer.tuner_state()["momentum"] == 0.2
    g2 = torch.tensor([0.25, 0.15, -0.1], dtype=torch.float64)
    x.grad = g2.clone()
    optimizer.step()
    state = optimizer.tuner_state()
    mu, alpha = single_step(state["h_min"], state["h_max"], state["variance"], state["distance"])
    alpha *= 2 / (10 * 4)
    assert state["lr"] == pytest.approx(alpha, rel=1e-14) and state["momentum"] == pytest.approx(mu, rel=1e-14)
    # log-domain curvature average of two window values, debiased
    debias = 1 - 0.9 ** 2
    h = [float(g1 @ g1), float(g2 @ g2)]
    assert state["h_max"] == pytest.approx(math.exp((0.9 * 0.1 * math.log(h[0]) + 0.1 * math.log(max(h))) / debias))
    # smoothed values are kept too (not zero-debiased: they start at init_lr, init_momentum)
    assert state["smoothed_lr"] == pytest.approx(0.9 * 1e-3 + 0.1 * alpha, rel=1e-14)
    assert state["smoothed_momentum"] == pytest.approx(0.9 * 0.2 + 0.1 * mu, rel=1e-14)
    # step 2 applies mu to the previous displacement (g2 is below sqrt(h_max) = |g1|: not clipped)
    assert h[1] < h[0]
    g2_used = g2
    velocity = mu * (x1 - torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)) - alpha * g2_used
    torch.testing.assert_close(x.detach(), x1 + velocity, rtol=0, atol=1e-15)


def test_adaptive_clip_bounds_the_update_and_stat_clip_the_statistics():
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], beta=0.5, init_lr=0.01, max_move=None, adaptive_clip=1.0, stat_clip=3.0)
    x.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)  # |g1| = 5: h_max = 25 after step 1
    optimizer.step()
    moved = x.detach().clone()
    x.grad = torch.tensor([0.0, 100.0], dtype=torch.float64)  # |g2| = 100 > 3 * 5: statistics see 15
    optimizer.step()
    state = optimizer.tuner_state()
    debias = 1 - 0.5 ** 2
    expected_h_max = math.exp((0.5 * 0.5 * math.log(25.0) + 0.5 * math.log(225.0)) / debias)
    assert state["h_max"] == pytest.approx(expected_h_max, rel=1e-12)
    # the update used g2 clipped to sqrt(h_max of step 1) = 5
    step_size, mu = state["step_size"], state["applied_momentum"]
    expected = moved + mu * moved - step_size * torch.tensor([0.0, 5.0], dtype=torch.float64)
    torch.testing.assert_close(x.detach(), expected, rtol=1e-13, atol=1e-15)


def test_max_move_caps_the_gradient_term_of_a_step():
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], init_lr=1.0, lr=2.0)  # first step: 2 * 1.0 * |g| = 2000 > 100
    x.grad = torch.tensor([600.0, 800.0], dtype=torch.float64)
    optimizer.step()
    assert float(x.detach().norm()) == pytest.approx(100.0, rel=1e-14)
    assert optimizer.tuner_state()["step_size"] == pytest.approx(0.1, rel=1e-14)
    y = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    uncapped = YellowFin([y], init_lr=1.0, lr=2.0, max_move=None)
    y.grad = torch.tensor([600.0, 800.0], dtype=torch.float64)
    uncapped.step()
    assert float(y.detach().norm()) == pytest.approx(2000.0, rel=1e-14)


def test_smoothed_option_applies_the_smoothed_values():
    gen = torch.Generator().manual_seed(4)
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], beta=0.9, smoothed=True)
    for _ in range(10):
        x.grad = x.detach() + 0.1 * torch.randn(5, generator=gen, dtype=torch.float64)
        optimizer.step()
        state = optimizer.tuner_state()
        assert state["lr"] == state["smoothed_lr"] and state["momentum"] == state["smoothed_momentum"]
        assert state["applied_momentum"] == state["smoothed_momentum"]


def test_compiled_step_runs_eagerly_with_one_warning_and_no_recompiles():
    import warnings

    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(7, generator=gen) for _ in range(30)]
    x, y = torch.ones(7, requires_grad=True), torch.ones(7, requires_grad=True)
    eager, compiled = YellowFin([x], beta=0.9), YellowFin([y], beta=0.9, curv_win_width=20)
    step = torch.compile(compiled.step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for index, g in enumerate(grads):  # the window fills over these 30 steps: no new graph for its length
                if index == 1:
                    torch.compiler.set_stance("fail_on_recompile")  # any recompile from here on raises
                x.grad, y.grad = g.clone(), g.clone()
                eager.step()
                step()
        finally:
            torch.compiler.set_stance("default")
    mine = [w for w in caught if "YellowFin.step is not compiled" in str(w.message)]
    assert len(mine) == 1
    others = [w for w in caught if w not in mine]
    assert not [w for w in others if "recompil" in str(w.message).lower()]
    assert torch.equal(x.detach(), y.detach())
