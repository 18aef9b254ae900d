"""The gradient noise scale: closed form on linear regression, brute force, the two-batch
estimator's unbiasedness, the noise-scale formulas, the tracker, advice and bad input."""

import math

import pytest
import torch
from torch import nn

from l2o.diagnostics import (
    NoiseScaleTracker, advise, exact_noise_scale, gradient_noise_scale, module_loss, normalized_noise_scale,
    ntk_learning_rate, smith_le_noise_scale, two_batch_estimate, two_batch_noise_scale)


def mse(out, target):
    return 0.5 * ((out.squeeze(-1) - target) ** 2).mean()


def linear_regression(n, d=4, sigma=0.5, seed=0):
    """x ~ N(0, I), y = x·w* + σ ε, a linear model at w = w* + δ. With per-example loss ½(x·w − y)²,
    g = x(x·δ − σε): G = δ and Σ = (|δ|² + σ²) I + δδᵀ, so tr Σ = d(|δ|² + σ²) + |δ|², |G|² = |δ|²."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    y = x @ w_star + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    delta = 0.4 * torch.randn(d, generator=g, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_((w_star + delta)[None])
    dd = float(delta @ delta)
    trace = d * (dd + sigma**2) + dd
    return model, x, y, {"trace_cov": trace, "grad_sq_norm": dd, "b_simple": trace / dd}


def test_exact_b_simple_matches_the_closed_form_on_linear_regression():
    model, x, y, truth = linear_regression(6000)
    result = gradient_noise_scale(model, mse, x, y)
    for key in ("b_simple", "trace_cov", "grad_sq_norm"):
        value, se = getattr(result, key), getattr(result, f"{key}_se")
        assert se is not None and 0 < se < 0.1 * truth[key]
        assert abs(value - truth[key]) < 4 * se, (key, value, truth[key], se)
    assert result.examples == 6000 and result.method == "exact"


def per_example_gradients(loss_of, params, x, y):
    rows = []
    for i in range(x.shape[0]):
        p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        grads = torch.autograd.grad(loss_of(p, x[i:i + 1], y[i:i + 1]), list(p.values()))
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows).double()


def estimates(g):
    n = g.shape[0]
    mean = g.mean(0)
    trace = float(((g - mean) ** 2).sum()) / (n - 1)
    g2 = float(mean @ mean) - trace / n
    return trace, g2, trace / g2


def test_exact_matches_a_brute_force_loop_including_the_jackknife_and_chunking():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x = torch.randn(17, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (17,))
    loss_of, params = module_loss(model, nn.functional.cross_entropy)
    g = per_example_gradients(loss_of, params, x, y)
    trace, g2, b = estimates(g)
    leave_one_out = torch.tensor([estimates(torch.cat([g[:i], g[i + 1:]])) for i in range(17)], dtype=torch.float64)
    jack = ((leave_one_out - leave_one_out.mean(0)) ** 2).sum(0).mul(16 / 17).sqrt()
    for chunk in (None, 4):
        result = exact_noise_scale(loss_of, params, x, y, chunk_size=chunk)
        assert result.trace_cov == pytest.approx(trace, rel=1e-9)
        assert result.grad_sq_norm == pytest.approx(g2, rel=1e-9)
        assert result.b_simple == pytest.approx(b, rel=1e-9)
        assert result.mean_grad_sq_norm == pytest.approx(float(g.mean(0) @ g.mean(0)), rel=1e-9)
        assert [result.trace_cov_se, result.grad_sq_norm_se, result.b_simple_se] == pytest.approx(jack.tolist(), rel=1e-6)


def test_the_two_batch_estimator_is_unbiased_over_many_draws():
    """Batches drawn with replacement from a fixed data set: the average of each estimate over many
    draws must match the data set's own tr Σ (population) and |ḡ|², computed exactly."""
    model, x, y, _ = linear_regression(60, sigma=1.0, seed=3)
    exact = gradient_noise_scale(model, mse, x, y)
    trace_pop = exact.trace_cov * 59 / 60
    g2_pop = exact.mean_grad_sq_norm
    loss_of, params = module_loss(model, mse)
    draws = 3000
    result = two_batch_noise_scale(loss_of, params, x, y, small_batch=2, big_batch=6, draws=draws,
                                   generator=torch.Generator().manual_seed(1))
    assert result.batch_sizes == (2, 6) and result.examples == draws * 6
    assert abs(result.trace_cov - trace_pop) < 4 * result.trace_cov_se
    assert abs(result.grad_sq_norm - g2_pop) < 4 * result.grad_sq_norm_se
    # the test has power: |G_big|^2 on its own overestimates |G|^2 by tr(Σ)/6, far beyond the error bars
    assert trace_pop / 6 > 8 * result.grad_sq_norm_se
    assert result.b_simple == pytest.approx(trace_pop / g2_pop, rel=0.25)


def test_two_batch_estimate_formulas():
    trace, g2 = two_batch_estimate(torch.tensor([3.0 + 8 / 2]), torch.tensor([3.0 + 8 / 10]), 2, 10)
    assert float(trace) == pytest.approx(8.0) and float(g2) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="small_batch < big_batch"):
        two_batch_estimate(1.0, 1.0, 8, 8)


def test_smith_le_noise_scale_formula():
    assert smith_le_noise_scale(0.1, 1000, 100) == pytest.approx(0.1 * (1000 / 100 - 1))
    assert smith_le_noise_scale(0.1, 1000, 100, momentum=0.9) == pytest.approx(0.1 * 9 / 0.1)
    assert smith_le_noise_scale(0.1, 1000, 100, momentum=0.9, approximate=True) == pytest.approx(0.1 * 1000 / (100 * 0.1))
    assert smith_le_noise_scale(0.3, 50, 50) == 0.0  # full batch: no noise
    # doubling the learning rate and the batch size together keeps g (B << N) exactly in the approximate form
    assert smith_le_noise_scale(0.2, 10_000, 64, approximate=True) == pytest.approx(
        smith_le_noise_scale(0.4, 10_000, 128, approximate=True))
    for bad in ({"lr": 0.0}, {"batch_size": 2000}, {"batch_size": 0}, {"momentum": 1.0}, {"lr": float("nan")}):
        args = {"lr": 0.1, "dataset_size": 1000, "batch_size": 10, **bad}
        with pytest.raises(ValueError):
            smith_le_noise_scale(**args)


def test_normalized_noise_scale():
    assert normalized_noise_scale(0.5, 1000, 10) == pytest.approx(smith_le_noise_scale(0.5, 1000, 10))
    assert ntk_learning_rate(0.01, 64, 2.0**0.5) == pytest.approx(0.01 * 64 / 2)
    assert normalized_noise_scale(0.01, 1000, 10, parameterization="standard", fan_in=64, sigma_w=2.0**0.5) == \
        pytest.approx(smith_le_noise_scale(0.32, 1000, 10))
    with pytest.raises(ValueError, match="fan_in"):
        normalized_noise_scale(0.01, 1000, 10, parameterization="standard")
    with pytest.raises(ValueError, match="parameterization"):
        normalized_noise_scale(0.01, 1000, 10, parameterization="mup")


def test_advice_follows_both_models():
    advice = advise(300.0, 0.1, 64, 1348)
    assert advice.recommended_batch_size == 300
    eps_max = 0.1 * (1 + 300 / 64)
    assert advice.lr_mccandlish == pytest.approx(eps_max / 2)  # at B = B_noise, eps_opt = eps_max / 2
    assert smith_le_noise_scale(advice.lr_smith_le, 1348, 300) == pytest.approx(smith_le_noise_scale(0.1, 1348, 64))
    assert advice.steps_factor == pytest.approx(1 + 300 / 64)
    assert advice.examples_factor == pytest.approx(1 + 64 / 300)
    assert advice.lr_for(64)["mccandlish"] == pytest.approx(0.1) and advice.lr_for(64)["smith_le"] == pytest.approx(0.1)
    assert advise(5000.0, 0.1, 64, 1348).recommended_batch_size == 1348  # never above the training set
    assert len(advice.assumptions) >= 3 and "assumptions" in advice.text()
    with pytest.raises(ValueError, match="b_simple"):
        advise(math.inf, 0.1, 64, 1348)


def test_bad_input_gives_clear_errors():
    model, x, y, _ = linear_regression(50)
    with pytest.raises(ValueError, match="at least 2 examples"):
        gradient_noise_scale(model, mse, x[:1], y[:1])
    with pytest.raises(ValueError, match="at least 2 examples"):
        gradient_noise_scale(model, mse, x[:1], y[:1], method="two_batch")
    summed = lambda out, t: 0.5 * ((out.squeeze(-1) - t) ** 2).sum()  # noqa: E731
    with pytest.raises(ValueError, match="not the mean.*as for a sum over the 50 examples"):
        gradient_noise_scale(model, summed, x, y)
    with pytest.raises(ValueError, match="not the mean"):
        gradient_noise_scale(model, summed, x, y, method="two_batch", small_batch=4, big_batch=16, draws=2)
    with pytest.raises(ValueError, match="must be a scalar"):
        gradient_noise_scale(model, lambda out, t: 0.5 * (out.squeeze(-1) - t) ** 2, x, y)
    with pytest.raises(ValueError, match="same number of examples"):
        gradient_noise_scale(model, mse, x, y[:10])
    with pytest.raises(ValueError, match="method"):
        gradient_noise_scale(model, mse, x, y, method="bootstrap")
    with pytest.raises(ValueError, match="nn.Module"):
        gradient_noise_scale(lambda t: t, mse, x, y)
    # batch normalization in training mode couples the examples of a batch: refused
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 1)).double()
    with pytest.raises((ValueError, RuntimeError)):
        gradient_noise_scale(bn, mse, x, y)


@pytest.mark.parametrize("method", ["two_batch", "exact"])
def test_tracker_in_a_torch_optim_loop(method):
    """The tracker reads the loop's gradients without changing them; at fixed parameters its
    per-batch estimates average to the closed form, and it reports the ratio of their
    bias-corrected moving averages."""
    model, x, y, truth = linear_regression(20_000, seed=5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the parameters stay where truth holds
    tracker = NoiseScaleTracker(model, mse, every=1, method=method, beta=0.9)
    g = torch.Generator().manual_seed(0)
    steps = 1500 if method == "two_batch" else 400
    for step in range(steps):
        idx = torch.randint(0, x.shape[0], (64,), generator=g)
        optimizer.zero_grad()
        mse(model(x[idx]), y[idx]).backward()
        before = model.weight.grad.clone()
        tracker.update(x[idx], y[idx])
        assert torch.equal(model.weight.grad, before)
        optimizer.step()
    assert len(tracker.history) == steps and tracker.history[-1]["step"] == steps - 1
    for key in ("trace_cov", "grad_sq_norm"):
        values = torch.tensor([row[f"batch_{key}"] for row in tracker.history], dtype=torch.float64)
        se = float(values.std()) / steps**0.5
        assert abs(float(values.mean()) - truth[key]) < 4 * se, (key, float(values.mean()), truth[key], se)
    ema_t = ema_g = 0.0
    for row in tracker.history:
        ema_t, ema_g = 0.9 * ema_t + 0.1 * row["batch_trace_cov"], 0.9 * ema_g + 0.1 * row["batch_grad_sq_norm"]
    assert tracker.b_simple == pytest.approx(ema_t / ema_g, rel=1e-9)
    assert tracker.trace_cov == pytest.approx(ema_t / (1 - 0.9**steps), rel=1e-9)
    restored = NoiseScaleTracker(model, mse, every=1, method=method, beta=0.9)
    restored.load_state_dict(tracker.state_dict())
    assert restored.b_simple == tracker.b_simple


def test_tracker_works_with_adam_and_refuses_misuse():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    tracker = NoiseScaleTracker(model, nn.functional.cross_entropy, every=5)
    for step in range(20):
        idx = torch.randint(0, 256, (32,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        tracker.update(x[idx], y[idx])
        optimizer.step()
    assert [row["step"] for row in tracker.history] == [0, 5, 10, 15]
    assert math.isfinite(tracker.trace_cov) and tracker.trace_cov > 0
    fresh = NoiseScaleTracker(model, nn.functional.cross_entropy)
    optimizer.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="after loss.backward"):
        fresh.update(x[:32], y[:32])
    with pytest.raises(ValueError, match="at least 2 examples"):
        NoiseScaleTracker(model, nn.functional.cross_entropy, every=1).update(x[:1], y[:1])
    for bad in ({"every": 0}, {"beta": 1.0}, {"method": "bootstrap"}):
        with pytest.raises(ValueError):
            NoiseScaleTracker(model, nn.functional.cross_entropy, **bad)
