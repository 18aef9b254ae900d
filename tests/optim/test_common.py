"""The common suite: every optimizer in ``tests/optim/cases.py`` must pass every test here."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import l2o.optim
from l2o.optim._base import NonFiniteGradientWarning, SparseGradientError, grads_finite, warn_nonfinite_skip

from .cases import CASES, OptimizerCase

STEPS = 5


def make(case: OptimizerCase, params, **overrides):
    return l2o.optim.create(case.name, params, **{**case.kwargs(), **overrides})


def model_params(seed: int = 0) -> list[torch.Tensor]:
    """Float64 parameters of a tiny net, with a frozen layer, a zero-size and an unused parameter."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, requires_grad=True):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(requires_grad)

    w1, b1, w2 = randn(4, 3), randn(4), randn(2, 4)
    frozen = randn(2, 2, requires_grad=False)   # a frozen layer: in the optimizer, never a gradient
    empty = randn(0, 3)                          # zero-size, gets an empty gradient
    unused = randn(3)                            # requires grad but stays out of the loss: grad None
    return [w1, b1, w2, frozen, empty, unused]


def model_loss(params, step: int) -> torch.Tensor:
    w1, b1, w2, frozen, empty, _ = params
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 2, generator=gen, dtype=torch.float64)
    out = torch.tanh(x @ w1.T + b1) @ w2.T @ frozen
    return ((out - y) ** 2).mean() + empty.sum()


def run(optimizer, params, steps, start: int = 0):
    for step in range(start, start + steps):
        optimizer.zero_grad()
        model_loss(params, step).backward()
        optimizer.step()


def clone(params):
    return [p.detach().clone().requires_grad_(p.requires_grad) for p in params]


def assert_params_equal(left, right, exact=False):
    for a, b in zip(left, right):
        if exact:
            assert torch.equal(a, b), (a, b)
        else:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def state_tensors(optimizer, params):
    return [{k: v for k, v in optimizer.state[p].items() if isinstance(v, torch.Tensor)} for p in params]


@pytest.fixture(params=CASES, ids=str)
def case(request) -> OptimizerCase:
    return request.param


def test_registry_lists_and_creates(case):
    assert case.name in l2o.optim.available()
    optimizer = make(case, model_params(), foreach=False)
    assert isinstance(optimizer, torch.optim.Optimizer)


VARIANTS = [pytest.param(case, overrides, id=f"{case.name}-{index}")
            for case in CASES for index, overrides in enumerate([{}] + case.variants)]


@pytest.mark.parametrize(("case", "overrides"), VARIANTS)
def test_foreach_matches_loop_float64(case, overrides):
    results = {}
    for foreach in (False, True):
        params = model_params()
        optimizer = make(case, params, foreach=foreach, **overrides)
        run(optimizer, params, STEPS)
        results[foreach] = params, state_tensors(optimizer, params), optimizer.param_groups
    (loop_params, loop_state, loop_groups), (fe_params, fe_state, fe_groups) = results[False], results[True]
    assert_params_equal(loop_params, fe_params)
    assert not torch.equal(loop_params[0], model_params()[0]), "the optimizer did not move the parameters"
    assert torch.equal(loop_params[3], model_params()[3]), "the frozen layer moved"
    assert torch.equal(loop_params[5], model_params()[5]), "a parameter without gradient moved"
    assert loop_params[4].shape == (0, 3)
    for a, b in zip(loop_state, fe_state):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12)
    for group_a, group_b in zip(loop_groups, fe_groups):
        for key, value in group_a.items():
            if key not in ("params", "foreach") and isinstance(value, float):
                assert value == pytest.approx(group_b[key], rel=1e-10, abs=1e-14), key


@pytest.mark.parametrize("foreach", [False, True])
def test_state_dict_round_trip_continues_identically(case, foreach):
    params = model_params()
    optimizer = make(case, params, foreach=foreach)
    run(optimizer, params, 3)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_params = clone(params)
    resumed = make(case, resumed_params, foreach=foreach)
    resumed.load_state_dict(saved)
    run(optimizer, params, 3, start=3)
    run(resumed, resumed_params, 3, start=3)
    assert_params_equal(params, resumed_params, exact=True)


def test_closure(case):
    params, manual_params = model_params(), model_params()
    optimizer, manual = make(case, params, foreach=False), make(case, manual_params, foreach=False)
    for step in range(3):
        def closure():
            optimizer.zero_grad()
            loss = model_loss(params, step)
            loss.backward()
            return loss

        returned = optimizer.step(closure)
        manual.zero_grad()
        expected = model_loss(manual_params, step)
        expected.backward()
        manual.step()
        assert torch.equal(returned.detach(), expected.detach())
    assert_params_equal(params, manual_params, exact=True)


@pytest.mark.parametrize("foreach", [False, True])
def test_param_groups_are_independent_and_honour_their_settings(case, foreach):
    params = model_params()
    first, second = params[:2], params[2:]
    shared = case.kwargs()  # one set of objects (e.g. one generator) for both separate optimizers
    together = l2o.optim.create(case.name, [{"params": first}, {"params": second, **case.group_override}],
                                **{**shared, "foreach": foreach})
    run(together, params, STEPS)

    shared = case.kwargs()
    sep_params = model_params()
    sep_first = l2o.optim.create(case.name, sep_params[:2], **{**shared, "foreach": foreach})
    sep_second = l2o.optim.create(case.name, sep_params[2:], **{**shared, **case.group_override, "foreach": foreach})
    for step in range(STEPS):
        for opt in (sep_first, sep_second):
            opt.zero_grad()
        model_loss(sep_params, step).backward()
        sep_first.step()
        sep_second.step()
    assert_params_equal(params, sep_params)

    plain_params = model_params()
    run(make(case, plain_params, foreach=foreach), plain_params, STEPS)
    assert not torch.equal(plain_params[2], params[2]), f"group override {case.group_override} had no effect"


def test_lr_scheduler_drives_the_learning_rate(case):
    params, manual_params, plain_params = model_params(), model_params(), model_params()
    optimizer = make(case, params, foreach=False)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.25)
    manual = make(case, manual_params, foreach=False)
    for step in range(STEPS):
        run(optimizer, params, 1, start=step)
        scheduler.step()
        run(manual, manual_params, 1, start=step)
        if (step + 1) % 2 == 0:
            for group in manual.param_groups:
                group["lr"] = group["lr"] * 0.25
        assert optimizer.param_groups[0]["lr"] == pytest.approx(manual.param_groups[0]["lr"], rel=1e-12)
    assert_params_equal(params, manual_params)
    run(make(case, plain_params, foreach=False), plain_params, STEPS)
    assert not torch.equal(plain_params[0], params[0]), "the scheduler had no effect"


def test_compiled_step_matches_eager(case):
    torch._dynamo.reset()
    eager_params, compiled_params = model_params(), model_params()
    eager, compiled = make(case, eager_params, foreach=True), make(case, compiled_params, foreach=True)

    @torch.compile(fullgraph=False)
    def compiled_step():
        compiled.step()

    run(eager, eager_params, 2)
    if case.compile_limitation is not None:
        error, reason = case.compile_limitation
        with pytest.raises(error):
            run_compiled(compiled, compiled_params, compiled_step, 2)
        return
    run_compiled(compiled, compiled_params, compiled_step, 2)
    assert_params_equal(eager_params, compiled_params)


def run_compiled(optimizer, params, compiled_step, steps):
    for step in range(steps):
        optimizer.zero_grad()
        model_loss(params, step).backward()
        compiled_step()


def _bad_value_texts(value):
    texts = [repr(value)]
    if isinstance(value, (tuple, list)):
        texts += [repr(v) for v in value]
    return texts


def test_bad_hyperparameters_raise_value_error_naming_them(case):
    assert case.bad_hyperparameters, "declare at least one bad hyperparameter"
    for name, value in case.bad_hyperparameters:
        with pytest.raises(ValueError) as info:
            make(case, model_params(), **{name: value})
        message = str(info.value)
        assert name in message, message
        assert any(text in message for text in _bad_value_texts(value)), message
    with pytest.raises(ValueError, match="foreach"):
        make(case, model_params(), foreach="yes")


def test_sparse_gradients(case):
    embedding = torch.nn.Embedding(5, 3, sparse=True, dtype=torch.float64)
    optimizer = make(case, embedding.parameters(), foreach=False)
    embedding(torch.tensor([0, 2])).sum().backward()
    assert embedding.weight.grad.is_sparse
    if case.sparse_supported:
        before = embedding.weight.detach().clone()
        optimizer.step()
        assert not torch.equal(before, embedding.weight)
    else:
        with pytest.raises(SparseGradientError, match="sparse"):
            optimizer.step()


def rosenbrock(xy):
    x, y = xy[0], xy[1]
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


def quadratic_problem():
    gen = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    curvature = rotation @ torch.diag(torch.logspace(-1, 1, 20, dtype=torch.float64)) @ rotation.T
    minimum = torch.randn(20, generator=gen, dtype=torch.float64)

    def loss(x):
        d = x - minimum
        return 0.5 * d @ curvature @ d

    return loss


@pytest.mark.parametrize("problem", ["rosenbrock", "quadratic"])
def test_converges(case, problem):
    spec = getattr(case, problem)
    if problem == "rosenbrock":
        x, loss_fn = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True), rosenbrock
    else:
        x, loss_fn = torch.zeros(20, dtype=torch.float64, requires_grad=True), quadratic_problem()
    start = loss_fn(x).item()
    optimizer = make(case, [x], foreach=True, **spec.kwargs)
    for _ in range(spec.steps):
        optimizer.zero_grad()
        loss_fn(x).backward()
        optimizer.step()
    final = loss_fn(x).item()
    assert final < spec.tolerance, f"{case.name} on {problem}: {start:.3g} -> {final:.3g} after {spec.steps} steps"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_gradient_skips_the_whole_step_and_warns(case, bad):
    """One NaN/inf coordinate: no parameter and no state changes (the policy of l2o.optim._base)."""
    params = model_params()
    optimizer = make(case, params, foreach=True)
    run(optimizer, params, 3)
    before_params = clone(params)
    before_state = copy.deepcopy(optimizer.state_dict())
    optimizer.zero_grad()
    model_loss(params, 3).backward()
    params[0].grad[1, 2] = bad
    with pytest.warns(NonFiniteGradientWarning, match=r"step 4.*skipped"):
        optimizer.step()
    assert_params_equal(params, before_params, exact=True)
    after_state = optimizer.state_dict()
    assert repr(after_state) == repr(before_state)
    # and training goes on as if the bad step had never come
    run(optimizer, params, 2, start=3)
    reference_params = model_params()
    reference = make(case, reference_params, foreach=True)
    run(reference, reference_params, 5)
    assert_params_equal(params, reference_params)


def test_grads_finite_helper():
    assert grads_finite([torch.ones(3), None, torch.zeros(0)])
    assert not grads_finite([torch.ones(3), torch.tensor([1.0, float("nan")])])
    assert not grads_finite([torch.tensor([-float("inf")], dtype=torch.float64), torch.ones(2)])
    sparse = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.tensor([1.0, float("nan")]), (4,))
    assert not grads_finite([sparse])
    assert grads_finite([])
    # finite entries whose squares overflow float32: the 2-norm is inf, the gradient is finite
    assert grads_finite([torch.tensor([3e30, -3e30]), torch.ones(2)])
    assert not grads_finite([torch.tensor([3e30, float("nan")])])
    with pytest.warns(NonFiniteGradientWarning, match="MyRule: .* at step 7; the step was skipped"):
        warn_nonfinite_skip("MyRule", torch.tensor(7.0))
