"""SGD-HD and Adam-HD: the paper's updates, and a learning rate that rises from 0 and settles."""

from __future__ import annotations

import pytest
import torch

from l2o.optim import SGDHD, AdamHD


def gradient_stream(steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, generator=gen, dtype=torch.float64) for _ in range(steps)]


def drive(optimizer, param, grads):
    lrs = []
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def sgd_hd_reference(start, grads, lr, beta, momentum=0.0, nesterov=False):
    theta, buf, previous, lrs = start.clone(), torch.zeros_like(start), None, []
    for g in grads:
        if previous is not None:
            lr = lr + beta * torch.dot(g.reshape(-1), previous.reshape(-1)).item()
        if momentum:
            buf = momentum * buf + g
            direction = g + momentum * buf if nesterov else buf
        else:
            direction = g
        theta = theta - lr * direction
        previous = direction.clone()
        lrs.append(lr)
    return theta, lrs


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("settings", [{}, dict(momentum=0.9), dict(momentum=0.5, nesterov=True)])
def test_sgdhd_follows_the_paper(foreach, settings):
    grads = gradient_stream(6)
    start = torch.ones(4, 3, dtype=torch.float64)
    param = start.clone().requires_grad_()
    lrs = drive(SGDHD([param], lr=0.01, hypergrad_lr=0.001, foreach=foreach, **settings), param, grads)
    expected, expected_lrs = sgd_hd_reference(start, grads, 0.01, 0.001, **settings)
    torch.testing.assert_close(param.detach(), expected, rtol=1e-12, atol=1e-14)
    assert lrs == pytest.approx(expected_lrs, rel=1e-12)
    assert lrs[0] == 0.01 and lrs[-1] != 0.01  # unchanged at the first step, adapted later


@pytest.mark.parametrize("foreach", [False, True])
def test_adamhd_follows_the_paper_and_is_adam_without_hypergradient(foreach):
    grads = gradient_stream(6)
    start = torch.ones(4, 3, dtype=torch.float64)
    # beta = 0: exactly Adam.
    ours, adam = start.clone().requires_grad_(), start.clone().requires_grad_()
    drive(AdamHD([ours], lr=0.01, hypergrad_lr=0.0, foreach=foreach), ours, grads)
    drive(torch.optim.Adam([adam], lr=0.01), adam, grads)
    torch.testing.assert_close(ours, adam, rtol=1e-12, atol=1e-14)
    # beta > 0: alpha_t = alpha_{t-1} + beta g_t . u_{t-1}, u = m_hat / (sqrt(v_hat) + eps).
    param = start.clone().requires_grad_()
    lrs = drive(AdamHD([param], lr=0.01, hypergrad_lr=1e-3, foreach=foreach), param, grads)
    theta, m, v, u, lr = start.clone(), torch.zeros_like(start), torch.zeros_like(start), None, 0.01
    for t, g in enumerate(grads, start=1):
        if u is not None:
            lr += 1e-3 * torch.dot(g.reshape(-1), u.reshape(-1)).item()
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        u = (m / (1 - 0.9 ** t)) / ((v / (1 - 0.999 ** t)).sqrt() + 1e-8)
        theta = theta - lr * u
    torch.testing.assert_close(param.detach(), theta, rtol=1e-12, atol=1e-14)
    assert lrs[-1] == pytest.approx(lr, rel=1e-12)


def noisy_regression(seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(512, 10, generator=gen)
    y = X @ torch.randn(10, generator=gen) + 0.3 * torch.randn(512, generator=gen)
    return X, y, gen


@pytest.mark.parametrize(("cls", "hypergrad_lr"), [(SGDHD, 1e-3), (AdamHD, 1e-4)])
def test_learning_rate_rises_from_zero_and_settles(cls, hypergrad_lr):
    X, y, gen = noisy_regression()
    w = torch.zeros(10, requires_grad=True)
    optimizer = cls([w], lr=0.0, hypergrad_lr=hypergrad_lr)
    lrs, losses = [], []
    for _ in range(1500):
        index = torch.randint(512, (32,), generator=gen)
        loss = ((X[index] @ w - y[index]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lrs.append(optimizer.param_groups[0]["lr"])
        losses.append(loss.item())
    lrs = torch.tensor(lrs)
    late = lrs[-500:]
    assert lrs[:50].max() > 0.2 * late.mean() > 0, "the learning rate did not rise from 0"
    assert late.std() < 0.25 * late.mean(), "the learning rate did not settle"
    assert sum(losses[-100:]) / 100 < 0.2 * sum(losses[:10]) / 10


def test_learning_rate_is_per_group_and_survives_state_dict():
    a, b = torch.ones(3, requires_grad=True), torch.ones(3, requires_grad=True)
    optimizer = SGDHD([{"params": [a]}, {"params": [b], "hypergrad_lr": 0.1}], lr=0.01, hypergrad_lr=0.01)
    for step in range(3):
        a.grad = torch.full((3,), 1.0 + step)
        b.grad = torch.full((3,), 1.0 + step)
        optimizer.step()
    lr_a, lr_b = (g["lr"] for g in optimizer.param_groups)
    assert lr_b > lr_a > 0.01
    restored = SGDHD([{"params": [a]}, {"params": [b]}], lr=0.5)
    restored.load_state_dict(optimizer.state_dict())
    assert [g["lr"] for g in restored.param_groups] == [lr_a, lr_b]
    assert restored.param_groups[1]["hypergrad_lr"] == 0.1


@pytest.mark.parametrize("foreach", [False, True])
def test_sgdhd_dampening_matches_torch_sgd_when_the_rate_is_frozen(foreach):
    gen = torch.Generator().manual_seed(7)
    grads = [[torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)]
             for _ in range(6)]
    ours = [torch.zeros(4, 3, dtype=torch.float64, requires_grad=True), torch.zeros(5, dtype=torch.float64,
                                                                               requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    a = SGDHD(ours, lr=0.1, hypergrad_lr=0.0, momentum=0.9, dampening=0.3, foreach=foreach)
    b = torch.optim.SGD(theirs, lr=0.1, momentum=0.9, dampening=0.3)
    for step, gs in enumerate(grads):
        for p, q, g in zip(ours, theirs, gs):
            p.grad, q.grad = g.clone(), g.clone()
        if step == 2:  # a parameter that gets its first gradient late starts its buffer at g
            ours[1].grad = theirs[1].grad = None
        a.step()
        b.step()
        for p, q in zip(ours, theirs):
            torch.testing.assert_close(p, q, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="dampening"):
        SGDHD(ours, momentum=0.9, nesterov=True, dampening=0.1)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgdhd_sparse_gradients_give_the_dense_result(momentum):
    torch.manual_seed(0)
    sparse = torch.nn.Embedding(6, 3, sparse=True, dtype=torch.float64)
    dense = torch.nn.Embedding(6, 3, sparse=False, dtype=torch.float64)
    dense.load_state_dict(sparse.state_dict())
    opts = [SGDHD(m.parameters(), lr=0.1, hypergrad_lr=0.05, momentum=momentum) for m in (sparse, dense)]
    for step in range(5):
        index = torch.tensor([step % 6, (step + 2) % 6, 1])
        for module, opt in zip((sparse, dense), opts):
            opt.zero_grad()
            (module(index) ** 2).sum().backward()
            opt.step()
        assert sparse.weight.grad.is_sparse
        torch.testing.assert_close(sparse.weight, dense.weight, rtol=1e-14, atol=1e-15)
        assert opts[0].param_groups[0]["lr"] == pytest.approx(opts[1].param_groups[0]["lr"], rel=1e-13)
    assert opts[0].param_groups[0]["lr"] != 0.1  # the rate moved
