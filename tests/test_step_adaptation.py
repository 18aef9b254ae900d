"""LearnedOptimizer(adapt=kappa): per-tensor step-size adaptation on top of a learned rule."""

import copy
import math

import pytest
import torch

from l2o.learned import LearnedOptimizer, LSTMRule
from l2o.learned.mlp import MLPRule


def _quadratic_run(adapt: float, steps: int, lr: float = 1.0, target: float = 10.0, weights: str = "mlp-general"):
    """A shipped MLP rule on f(x) = 0.5 (x - target)^2 from x = 0 (a deterministic problem)."""
    x = torch.zeros(3, requires_grad=True)
    opt = LearnedOptimizer.pretrained(weights, [x], lr=lr, adapt=adapt)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (x - target).square().sum()).backward()
        opt.step()
    return x.detach(), opt


def test_bad_adapt_is_refused():
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="adapt must be a finite number >= 0"):
            LearnedOptimizer([torch.zeros(2, requires_grad=True)], rule=MLPRule(), adapt=bad)


def test_adapt_zero_is_the_rule_exactly():
    # mlp-general-v1 deploys without the adaptation: adapt=0 must step exactly as the rule itself,
    # called with no optimizer and no wrapper around it
    from l2o.learned.adaptation import adapted
    from l2o.learned.weights import PRETRAINED

    plain, opt = _quadratic_run(0.0, 20, weights="mlp-general-v1")
    rule = PRETRAINED.load("mlp-general-v1")
    x = torch.zeros(3)
    state = rule.init_state({"x": x})
    with torch.no_grad():
        for _ in range(20):
            new, state = rule.update({"x": x - 10.0}, state, {"x": x})
            x = new["x"]
    assert torch.equal(plain, x)
    assert "log_scale" not in next(iter(opt.state.values()))
    # meta-training's wrapper is the rule's own step when the rate is 0
    g, p0 = torch.randn(4), torch.randn(4)
    wrapped = adapted(rule, 0.0)({"x": g}, rule.init_state({"x": p0}), {"x": p0})
    assert torch.equal(wrapped[0]["x"], rule.update({"x": g}, rule.init_state({"x": p0}), {"x": p0})[0]["x"])


def test_log_scale_moves_by_kappa_times_the_cosine_of_gradient_and_last_step():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=gen, requires_grad=True)
    opt = LearnedOptimizer([x], rule=MLPRule(), adapt=0.2)
    x.grad = torch.randn(5, 4, generator=gen)
    opt.step()
    state = opt.state[x]
    assert float(state["log_scale"]) == 0.0  # no previous step to compare with
    u = state["prev_step"].clone()
    assert float(u.abs().max()) > 0
    x.grad = torch.randn(5, 4, generator=gen)
    expected = 0.2 * float(torch.nn.functional.cosine_similarity(x.grad.flatten(), u.flatten(), dim=0))
    before = x.detach().clone()
    opt.step()
    assert float(state["log_scale"]) == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(state["prev_step"], before - x.detach())  # the step just taken


def test_steps_that_keep_going_downhill_grow_and_overshooting_steps_shrink():
    x0, _ = _quadratic_run(0.0, 30)
    x1, opt = _quadratic_run(0.1, 30)
    grown = float(opt.state[opt.param_groups[0]["params"][0]]["log_scale"])
    assert grown > 0.5  # every step pointed at the minimum: the multiplier grew
    assert float((x1 - 10).abs().max()) < float((x0 - 10).abs().max())  # and got closer to it
    # A multiplier far too large makes the steps overshoot: the adaptation shrinks it.
    _, opt = _quadratic_run(0.1, 30, lr=3000.0, target=0.01)
    assert float(opt.state[opt.param_groups[0]["params"][0]]["log_scale"]) < -0.5


def test_log_scale_is_bounded():
    _, opt = _quadratic_run(50.0, 10, target=1e6)
    value = float(opt.state[opt.param_groups[0]["params"][0]]["log_scale"])
    assert value == pytest.approx(math.log(1e4))


@pytest.mark.parametrize("rule", ["mlp", "lstm"])
def test_state_dict_round_trip_with_adapt_continues_identically(rule):
    def make(ps):
        r = MLPRule(hidden=8) if rule == "mlp" else LSTMRule(hidden_size=4)
        torch.manual_seed(3)
        with torch.no_grad():
            for w in r.parameters():
                w.copy_(torch.randn_like(w) * 0.3)
        return LearnedOptimizer(ps, rule=r, adapt=0.1)

    torch.manual_seed(0)
    data = torch.randn(32, 4), torch.randn(32, 1)
    torch.manual_seed(1)
    model = torch.nn.Linear(4, 1)
    opt = make(model.parameters())

    def steps(m, o, n):
        for _ in range(n):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(data[0]), data[1]).backward()
            o.step()

    steps(model, opt, 3)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    steps(model, opt, 3)
    model2 = torch.nn.Linear(4, 1)
    model2.load_state_dict(saved_model)
    opt2 = make(model2.parameters())
    opt2.load_state_dict(saved_opt)
    steps(model2, opt2, 3)
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert all(float(opt.state[p]["log_scale"]) != 0.0 for p in model.parameters())


def test_adapt_with_the_fused_step_matches_the_unfused_one():
    def run(fused):
        rule = MLPRule(hidden=4)
        torch.manual_seed(5)
        with torch.no_grad():
            for w in rule.parameters():
                w.copy_(torch.randn_like(w) * 0.5)
        rule.fast_threshold = 100  # the (30, 25) tensor takes the deployment path
        torch.manual_seed(6)
        x = torch.randn(30, 25, requires_grad=True)
        opt = LearnedOptimizer([x], rule=rule, adapt=0.3, fused=fused)
        for _ in range(6):
            opt.zero_grad()
            (0.5 * (x - 3.0).square().sum()).backward()
            opt.step()
        return x.detach(), float(opt.state[x]["log_scale"])

    (x_plain, l_plain), (x_fused, l_fused) = run(False), run(True)
    assert l_plain != 0.0 and l_fused == pytest.approx(l_plain, rel=1e-4)
    torch.testing.assert_close(x_fused, x_plain, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, fused", [("mlp-general", False), ("mlp-general", True), ("l2l-digits", False)])
def test_off_the_cpu_the_multipliers_are_never_read_back(name, fused):
    """On a GPU, reading a value back waits for the device at every step. PyTorch's meta device
    has no values at all: the adapted step runs there only if nothing is read back."""
    x = torch.zeros(20, 10, device="meta", requires_grad=True)
    b = torch.zeros(5, device="meta", requires_grad=True)
    opt = LearnedOptimizer.pretrained(name, [x, b], adapt=0.1, fused=fused)
    for _ in range(2):
        x.grad, b.grad = torch.ones_like(x), torch.ones_like(b)
        opt.step()
    assert opt.state[x]["log_scale"].device.type == "meta"


def test_many_tensors_at_once_give_each_tensors_update():
    """LearnedOptimizer advances all multipliers in one call (fewer kernels on a GPU); each value is
    the one-tensor update's, exactly, zero gradients and first steps included."""
    from l2o.learned.adaptation import next_log_scale, next_log_scales

    gen = torch.Generator().manual_seed(9)
    shapes = [(4, 3), (7,), (1,), (2, 2)]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    steps = [torch.randn(s, generator=gen) for s in shapes]
    grads[2].zero_()  # no gradient signal: unchanged
    steps[3].zero_()  # no step yet: unchanged
    log_scales = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    together = next_log_scales(log_scales, grads, steps, 0.3)
    one_by_one = torch.stack([next_log_scale(l, g, u, 0.3) for l, g, u in zip(log_scales, grads, steps)])
    assert torch.equal(together, one_by_one)
    assert together[2] == 2.0 and together[3] == 0.0 and together[0] != 0.5


@pytest.mark.parametrize("name,adapt", [("mlp-general", None), ("mlp-general", 0.0), ("l2l-digits", None)])
def test_a_non_finite_gradient_skips_the_whole_step_and_warns(name, adapt):
    """The optimizers' one policy (l2o.optim): parameters and state stay as they were, a warning says so."""
    from l2o.optim import NonFiniteGradientWarning

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    kwargs = {} if adapt is None else {"adapt": adapt}
    opt = LearnedOptimizer.pretrained(name, model.parameters(), **kwargs)
    x = torch.randn(8, 4)
    for _ in range(2):  # a state to keep
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    before = [p.detach().clone() for p in model.parameters()]
    state_before = copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    model[0].weight.grad[1, 2] = float("nan")
    with pytest.warns(NonFiniteGradientWarning, match="LearnedOptimizer.*skipped"):
        opt.step()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    after = opt.state_dict()
    for key, values in state_before["state"].items():
        for k, v in values.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, after["state"][key][k]), (key, k)
    model[0].weight.grad[1, 2] = 0.0  # the next finite gradient steps as usual
    opt.step()
    assert not torch.equal(before[0], model[0].weight)


def test_under_torch_compile_the_step_runs_eagerly_with_one_warning():
    """torch.compile(opt.step) recompiled on every step (float multipliers, re-allocated gradients)
    until the recompile limit; now the step runs eagerly under compile and says so once."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = LearnedOptimizer.pretrained("mlp-general", model.parameters())
    reference = copy.deepcopy(model)
    ref_opt = LearnedOptimizer.pretrained("mlp-general", reference.parameters())
    step = torch.compile(opt.step)
    x = torch.randn(8, 4)
    with pytest.warns(UserWarning, match="not compiled") as caught:
        for _ in range(3):
            for m, o, s in ((model, opt, step), (reference, ref_opt, ref_opt.step)):
                o.zero_grad()
                m(x).pow(2).mean().backward()
                s()
    assert sum("not compiled" in str(w.message) for w in caught) == 1
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
