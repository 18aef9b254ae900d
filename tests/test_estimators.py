"""ES and PES meta-gradient estimators: unbiasedness on tiny problems with known gradients, through
the estimators' one signature (``init_state``, ``estimate``) over a toy unroll."""

import pytest
import torch

from l2o.meta.estimators import PES, TruncatedES, antithetic_es, flatten_module, load_flat


def test_antithetic_es_is_unbiased_on_a_quadratic():
    # For a quadratic the Gaussian-smoothed gradient equals the true gradient exactly.
    gen = torch.Generator().manual_seed(0)
    a = torch.tensor([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    theta = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64)

    def objective(thetas):
        return 0.5 * torch.einsum("pi,ij,pj->p", thetas, a, thetas) + thetas @ b

    true = a @ theta + b
    estimates = torch.stack([antithetic_es(objective, theta, 0.1, 50, gen)[0] for _ in range(400)])
    mean, sem = estimates.mean(0), estimates.std(0) / 400 ** 0.5
    assert torch.all((mean - true).abs() < 4 * sem + 1e-9), (mean, true, sem)
    assert torch.all(sem < 0.1 * true.abs().max())  # the check has power


def _unrolled_problem(thetas, x, steps):
    """Inner loop: gradient descent with momentum-like decay on 0.5*x^2; returns the summed loss.

    theta[0] is a learning rate, theta[1] a constant drift; x_{t+1} = x_t - theta0*x_t + 0.1*theta1.
    """
    total = torch.zeros(thetas.shape[0], dtype=thetas.dtype)
    for _ in range(steps):
        x = x - thetas[:, 0] * x + 0.1 * thetas[:, 1]
        total = total + x * x
    return total, x


class _Box:
    """A toy episode: the inner state x."""

    def __init__(self, x):
        self.x = x


class _ToyUnroll:
    """The estimators' Unroll over :func:`_unrolled_problem` (forward only)."""

    def __init__(self, steps):
        self.steps = steps

    def forward(self, thetas, boxes):
        loss, x = _unrolled_problem(thetas, torch.stack([b.x for b in boxes]), self.steps)
        for box, value in zip(boxes, x):
            box.x = value
        return loss, True

    def clone(self, box):
        return _Box(box.x.clone())


def test_pes_is_unbiased_for_the_full_unroll_and_truncated_es_is_not():
    horizon, trunc = 12, 3
    theta = torch.tensor([0.3, 0.5], dtype=torch.float64)
    x0 = 1.0

    # True gradient of the whole-horizon loss, by autograd.
    t = theta.clone().requires_grad_(True)
    total, _ = _unrolled_problem(t.unsqueeze(0), torch.full((1,), x0, dtype=torch.float64), horizon)
    (true,) = torch.autograd.grad(total.sum(), t)

    gen = torch.Generator().manual_seed(1)
    pairs, repeats = 200, 60
    pes_estimates, tes_estimates = [], []
    for _ in range(repeats):
        pes = PES(sigma=0.01, pairs=pairs)
        toy = _ToyUnroll(trunc)
        state = pes.init_state(_Box(torch.tensor(x0, dtype=torch.float64)), 2, clone=toy.clone, dtype=torch.float64)
        grad_pes = torch.zeros(2, dtype=torch.float64)

        # Truncated ES: particles start each truncation from the state reached with theta itself.
        x_mean = torch.full((1,), x0, dtype=torch.float64)
        grad_tes = torch.zeros(2, dtype=torch.float64)
        for _ in range(horizon // trunc):
            estimate = pes.estimate(toy, theta, state, gen)
            grad_pes += estimate.grad
            state = estimate.state
            start = x_mean.clone()
            grad_tes += antithetic_es(lambda th: _unrolled_problem(th, start.expand(th.shape[0]), trunc)[0],
                                      theta, 0.01, pairs, gen)[0]
            x_mean = _unrolled_problem(theta.unsqueeze(0), x_mean, trunc)[1]
        pes_estimates.append(grad_pes)
        tes_estimates.append(grad_tes)
    pes_est, tes_est = torch.stack(pes_estimates), torch.stack(tes_estimates)
    pes_mean, pes_sem = pes_est.mean(0), pes_est.std(0) / repeats ** 0.5
    tes_mean, tes_sem = tes_est.mean(0), tes_est.std(0) / repeats ** 0.5
    assert torch.all((pes_mean - true).abs() < 4 * pes_sem + 1e-3 * true.abs()), (pes_mean, true, pes_sem)
    # Truncated ES misses the influence of theta on the truncation's starting state.
    assert torch.any((tes_mean - true).abs() > 8 * tes_sem), (tes_mean, true, tes_sem)


def test_flatten_and_load_round_trip():
    module = torch.nn.Linear(3, 2)
    vec = flatten_module(module)
    load_flat(module, vec * 2)
    assert torch.allclose(flatten_module(module), vec * 2)


def test_truncated_es_estimator_is_antithetic_es_from_the_episode_state():
    # the class draws the same perturbations as the function and starts every particle where the
    # episode stands, which then moves on with theta itself
    theta = torch.tensor([0.3, 0.5], dtype=torch.float64)
    toy = _ToyUnroll(3)
    es = TruncatedES(sigma=0.01, pairs=4)
    state = es.init_state(_Box(torch.tensor(1.0, dtype=torch.float64)), 2)
    estimate = es.estimate(toy, theta, state, torch.Generator().manual_seed(5))
    expected, value = antithetic_es(lambda th: _unrolled_problem(th, torch.ones(th.shape[0], dtype=torch.float64), 3)[0],
                                    theta, 0.01, 4, torch.Generator().manual_seed(5))
    assert torch.equal(estimate.grad, expected) and estimate.value == value
    assert torch.equal(estimate.state.episode.x, _unrolled_problem(theta.unsqueeze(0), torch.ones(1, dtype=torch.float64), 3)[1][0])


def test_bad_arguments_raise():
    gen = torch.Generator()
    with pytest.raises(ValueError, match="sigma"):
        antithetic_es(lambda t: t.sum(1), torch.zeros(2), 0.0, 1, gen)
    with pytest.raises(ValueError, match="pairs"):
        PES(0.1, 0)
    with pytest.raises(ValueError, match="sigma"):
        TruncatedES(0.0, 1)
