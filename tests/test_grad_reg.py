"""Explicit gradient regularization: exact penalty gradients, the wrappers, and the IGR property
that gradient descent tracks the modified flow of L + (h/4)||grad L||^2 to O(h^2) but the flow
of L only to O(h)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from l2o.nn import GradientRegularizer, RegularizedTask, gradient_flow, gradient_norm_squared
from l2o.tasks.quadratic import QuadraticTask
from l2o.train import train


def test_penalty_gradient_on_a_quadratic_is_exact():
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    a, b = m @ m.T + torch.eye(4, dtype=torch.float64), torch.randn(4, generator=gen, dtype=torch.float64)
    x = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    mu = 0.3
    loss = 0.5 * x @ a @ x - b @ x
    total = GradientRegularizer(mu)(loss, [x])
    residual = a @ x.detach() - b
    assert total.item() == pytest.approx(loss.item() + mu * residual.pow(2).sum().item(), rel=1e-12)
    (grad,) = torch.autograd.grad(total, x)
    torch.testing.assert_close(grad, residual + 2 * mu * a @ residual, rtol=1e-12, atol=1e-12)


def test_module_usage_with_any_optimizer_matches_torch_func():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    reg = GradientRegularizer(0.05, model.parameters())
    model.zero_grad()
    reg(nn.functional.mse_loss(model(x), y)).backward()
    ours = [p.grad.clone() for p in model.parameters()]

    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_of(p):
        return nn.functional.mse_loss(torch.func.functional_call(model, p, (x,)), y)

    def regularized(p):
        g = torch.func.grad(loss_of)(p)
        return loss_of(p) + 0.05 * sum(v.pow(2).sum() for v in g.values())

    expected = torch.func.grad(regularized)(params)
    for got, name in zip(ours, params):
        torch.testing.assert_close(got, expected[name], rtol=1e-10, atol=1e-12)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()  # the wrapper only changes the loss: any optimizer steps on these grads


def test_wrap_unused_params_and_zero_mu():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.tensor([3.0], requires_grad=True)
    fn = GradientRegularizer(0.5).wrap(lambda p, s: s * (p["w"] ** 2).sum())
    value = fn({"w": w, "unused": unused}, 2.0)
    # grad = 2 s w = (4, 8): penalty 0.5 * 80
    assert value.item() == pytest.approx(2.0 * 5.0 + 0.5 * 80.0)
    assert gradient_norm_squared((w ** 2).sum(), [w, unused]).item() == pytest.approx(20.0)
    assert GradientRegularizer(0.0)((w ** 2).sum(), [w]).item() == pytest.approx(5.0)
    assert GradientRegularizer.implicit(0.2).mu == pytest.approx(0.05)


@pytest.mark.parametrize("make", [lambda: GradientRegularizer(-1.0), lambda: GradientRegularizer(float("nan")),
                                  lambda: GradientRegularizer.implicit(0.0)])
def test_bad_arguments_raise(make):
    with pytest.raises(ValueError, match="mu|lr"):
        make()


def test_missing_params_and_non_scalar_loss_raise():
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="params"):
        GradientRegularizer(0.1)((w ** 2).sum())
    with pytest.raises(ValueError, match="scalar"):
        gradient_norm_squared(w ** 2, [w])


def test_regularized_task_trains_and_lowers_the_gradient_norm():
    task = QuadraticTask(dim=5, seed=3, steps=50)
    reg_task = RegularizedTask(task, mu=0.01)
    params = {k: v.requires_grad_(True) for k, v in task.init_params(torch.Generator().manual_seed(0)).items()}
    plain = task.loss(params, None)
    g2 = gradient_norm_squared(plain, params.values()).item()
    assert reg_task.loss(params, None).item() == pytest.approx(plain.item() + 0.01 * g2, rel=1e-6)
    assert reg_task.name == "quadratic+egr0.01" and reg_task.metric == task.metric
    result = train(reg_task, lambda p: torch.optim.SGD(p, lr=0.002), steps=50)
    assert not result.diverged and result.losses[-1] < result.losses[0]


# -- the property: backward error analysis of gradient descent --------------------------------

def _loss(w):
    a, b = w[0], w[1]
    return 0.5 * (a * b - 1.0) ** 2 + 0.05 * (a ** 2 + b ** 2) + 0.1 * torch.sin(a)


def _slope(hs, errors):
    """Least-squares slope of log(error) against log(h): the order of the error."""
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


def test_gradient_flow_matches_the_closed_form_on_a_quadratic():
    # L = 0.5 a w^2: the flow of L is w0 exp(-a t); with the penalty mu (a w)^2 the rate is a + 2 mu a^2.
    # RK4 at dt = 1/128 is accurate to ~3e-8 relative (fourth order: 16x worse at 1/64).
    a, mu = 3.0, 0.05
    w0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    loss_fn = lambda w: 0.5 * a * (w ** 2).sum()  # noqa: E731
    assert torch.allclose(gradient_flow(loss_fn, w0, 1.0, 1 / 128), w0 * math.exp(-a), rtol=1e-7)
    assert torch.allclose(gradient_flow(loss_fn, w0, 1.0, 1 / 128, mu=mu), w0 * math.exp(-(a + 2 * mu * a * a)),
                          rtol=1e-7)
    with pytest.raises(ValueError, match="dt"):
        gradient_flow(loss_fn, w0, 1.0, 0.0)


def test_gradient_descent_follows_the_modified_flow_to_second_order():
    w0 = torch.tensor([0.3, 1.6], dtype=torch.float64)
    horizon = 1.0
    hs = [1 / 8, 1 / 16, 1 / 32]  # exact in binary, so horizon / h steps land exactly on the horizon
    plain_flow = gradient_flow(_loss, w0, horizon, 1 / 256)  # RK4 error ~1e-11, far below the errors measured
    plain_errors, modified_errors = [], []
    for h in hs:
        w = w0.clone()
        for _ in range(round(horizon / h)):
            w = w - h * torch.func.grad(_loss)(w)
        modified_flow = gradient_flow(_loss, w0, horizon, h / 4, mu=h / 4)
        plain_errors.append(float((w - plain_flow).norm()))
        modified_errors.append(float((w - modified_flow).norm()))
    plain_slope, modified_slope = _slope(hs, plain_errors), _slope(hs, modified_errors)
    assert 0.9 < plain_slope < 1.15, (plain_errors, plain_slope)
    assert 1.8 < modified_slope < 2.2, (modified_errors, modified_slope)
    assert all(m < p / 4 for m, p in zip(modified_errors, plain_errors))
