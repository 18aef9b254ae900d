"""HAdam: Adam at order 2, the paper's equations at other orders, and the under/overflow guard."""

from __future__ import annotations

import pytest
import torch

from l2o.optim import HAdam
from l2o.optim.hadam import _moment_key


def gradient_stream(shape, steps, dtype, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(shape, generator=gen, dtype=dtype) for _ in range(steps)]


def drive(optimizer, param, grads):
    for g in grads:
        param.grad = g.clone()
        optimizer.step()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("settings", [{}, dict(weight_decay=0.1), dict(maximize=True, betas=(0.8, 0.99), eps=1e-4)])
def test_order_two_is_adam(foreach, dtype, settings):
    grads = gradient_stream((7, 5), 8, dtype)
    start = torch.randn(7, 5, generator=torch.Generator().manual_seed(1), dtype=dtype)
    ours, theirs = start.clone().requires_grad_(), start.clone().requires_grad_()
    drive(HAdam([ours], lr=0.03, order=2, foreach=foreach, **settings), ours, grads)
    drive(torch.optim.Adam([theirs], lr=0.03, foreach=foreach, **settings), theirs, grads)
    if not foreach:
        assert torch.equal(ours, theirs)  # the same arithmetic, operation for operation
    else:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-15 if dtype == torch.float64 else 1e-6)


def paper_reference(start, grads, lr, beta1, beta2, eps, order):
    """The paper's update written directly, v = E|g|^p (fine in float64 for moderate gradients)."""
    theta, m, v = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g.abs() ** order
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        theta = theta - lr * m_hat / (v_hat ** (1 / order) + eps)
    return theta


@pytest.mark.parametrize("order", [3, 4, 6, 8, 64])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_the_paper_equations_in_float64(order, foreach):
    grads = gradient_stream((6, 4), 10, torch.float64, scale=0.5)
    start = torch.randn(6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    param = start.clone().requires_grad_()
    drive(HAdam([param], lr=0.01, betas=(0.9, 0.99), eps=1e-8, order=order, foreach=foreach), param, grads)
    expected = paper_reference(start, grads, 0.01, 0.9, 0.99, 1e-8, order)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-10, atol=1e-12)
    # And the orders do differ from Adam here: the test would catch an order that is ignored.
    assert not torch.allclose(expected, paper_reference(start, grads, 0.01, 0.9, 0.99, 1e-8, 2))


def test_root_form_is_chosen_where_powers_would_leave_the_range():
    assert _moment_key(2, torch.float32, 1e-8) == "exp_avg_sq"
    assert _moment_key(4, torch.float32, 1e-8) == "exp_avg_pow"
    assert _moment_key(8, torch.float32, 1e-8) == "exp_avg_root"
    assert _moment_key(8, torch.float64, 1e-8) == "exp_avg_pow"
    assert _moment_key(64, torch.float64, 1e-8) == "exp_avg_root"


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("magnitude", [1e-6, 1e4])
def test_large_order_neither_underflows_nor_overflows_in_float32(foreach, magnitude):
    # |g|^16 is 1e-96 or 1e64 here: both outside float32. For a constant gradient, m_hat = g and
    # v_hat^(1/p) = |g|, so every coordinate must move by lr * |g| / (|g| + eps).
    grad = torch.full((3, 4), magnitude, dtype=torch.float32)
    grad[0] = -magnitude
    param = torch.zeros(3, 4, requires_grad=True)
    optimizer = HAdam([param], lr=0.1, order=16, foreach=foreach)
    naive_v = (grad.abs() ** 16)
    assert torch.all(naive_v == 0) or torch.all(torch.isinf(naive_v))  # the naive form fails here
    for _ in range(5):
        param.grad = grad.clone()
        optimizer.step()
    expected_step = 0.1 * magnitude / (magnitude + 1e-8)
    torch.testing.assert_close(param.detach(), -5 * expected_step * torch.sign(grad), rtol=1e-4, atol=0)
    assert torch.isfinite(optimizer.state[param]["exp_avg_root"]).all()


def test_odd_order_uses_absolute_values():
    # With g^3 (signed) a negative gradient would make v negative and its cube root undefined.
    param = torch.zeros(4, requires_grad=True)
    optimizer = HAdam([param], lr=0.1, order=3)
    for _ in range(3):
        param.grad = torch.full((4,), -2.0)
        optimizer.step()
    assert torch.all(param > 0) and torch.isfinite(param).all()
    assert torch.all(optimizer.state[param]["exp_avg_pow"] > 0)


def test_order_matters_on_heavy_tailed_gradients():
    # A rare large gradient inflates a high-order moment more than the second moment, so
    # higher orders take smaller steps right after such outliers.
    grads = [torch.tensor([1.0])] * 5 + [torch.tensor([50.0])] + [torch.tensor([1.0])] * 5
    finals = {}
    for order in (2, 4, 8):
        param = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        drive(HAdam([param], lr=0.01, order=order, foreach=False), param, [g.double() for g in grads])
        finals[order] = -param.item()
    assert finals[2] > finals[4] > finals[8] > 0


@pytest.mark.parametrize("order", [2, 4, 8])
def test_compiled_default_step_matches_eager_without_recompiling(order):
    # torch.compile(optimizer.step), the way users compile a step: one graph (fullgraph), and a
    # new step count (new bias corrections) must not trigger a recompilation.
    torch._dynamo.reset()
    grads = gradient_stream((6, 4), 6, torch.float32, seed=order)
    start = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    eager_p, compiled_p = start.clone().requires_grad_(), start.clone().requires_grad_()
    eager, compiled = HAdam([eager_p], lr=0.05, order=order), HAdam([compiled_p], lr=0.05, order=order)
    step = torch.compile(compiled.step, fullgraph=True)  # a graph break would raise
    drive(eager, eager_p, grads)
    try:
        for index, g in enumerate(grads):
            compiled_p.grad = g.clone()
            if index == 2:  # steps 1 and 2 compile (fresh state, then filled state); then no more
                torch.compiler.set_stance("fail_on_recompile")
            step()
    finally:
        torch.compiler.set_stance("default")
    # Float32 coefficients inside the compiled step (see l2o.optim._base.step_value).
    torch.testing.assert_close(compiled_p, eager_p, rtol=1e-5, atol=1e-6)
