"""The L2L LSTM rule, its preprocessing, LearnedOptimizer and weights files."""

import json
import math

import pytest
import torch

import l2o
from l2o.io import WeightsFileError, save_tensors
from l2o.learned import PRETRAINED, RULES, LearnedOptimizer, LSTMRule, load_rule, preprocess_gradients, save_rule


def test_preprocessing_matches_the_paper_formula():
    p = 10.0
    g = torch.tensor([0.5, -2.0, 1e-3, -3e-4])
    out = preprocess_gradients(g, p)
    assert out.shape == (4, 2)
    assert torch.allclose(out[:, 0], torch.log(g.abs()) / p)
    assert torch.equal(out[:, 1], torch.sign(g))


def test_preprocessing_edge_cases():
    p = 10.0
    tiny = 1e-6  # below e^-10 ~ 4.5e-5
    g = torch.tensor([0.0, tiny, -tiny, 3e38, -3e38, float("inf"), -float("inf"), float("nan")])
    out = preprocess_gradients(g, p)
    # zero and tiny gradients: (-1, e^p g)
    assert torch.equal(out[0], torch.tensor([-1.0, 0.0]))
    assert torch.allclose(out[1], torch.tensor([-1.0, math.exp(p) * tiny]))
    assert torch.allclose(out[2], torch.tensor([-1.0, -math.exp(p) * tiny]))
    # huge and infinite gradients: finite log-magnitude, the right sign
    assert torch.isfinite(out[3:7]).all()
    assert torch.allclose(out[3, 0], torch.tensor(math.log(3e38) / p))
    assert out[3, 1] == 1 and out[4, 1] == -1 and out[5, 1] == 1 and out[6, 1] == -1
    assert out[5, 0] >= out[3, 0]
    # NaN stays NaN (and only in its own coordinate)
    assert torch.isnan(out[7]).all()
    # continuity at the threshold: e^-p maps to (-1, 1) from both sides
    edge = torch.tensor([math.exp(-p) * (1 + 1e-6), math.exp(-p) * (1 - 1e-6)], dtype=torch.float64)
    assert torch.allclose(preprocess_gradients(edge, p), torch.tensor([[-1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64),
                          atol=1e-5)
    with pytest.raises(ValueError, match="p must be > 0"):
        preprocess_gradients(g, 0.0)


def test_preprocessing_has_no_nan_gradient_on_the_unused_branch():
    g = torch.tensor([0.0, 1e-8, 0.3], requires_grad=True)
    preprocess_gradients(g).sum().backward()
    assert torch.isfinite(g.grad).all()


def test_lstm_rule_is_coordinatewise_and_shares_weights():
    torch.manual_seed(0)
    rule = LSTMRule()
    assert sum(p.numel() for p in rule.parameters()) == (4 * 20 * (2 + 20 + 2)) + (4 * 20 * (20 + 20 + 2)) + 21
    params = {"a": torch.randn(3, 4), "b": torch.randn(5), "empty": torch.zeros(0, 2)}
    grads = {k: torch.randn_like(v) for k, v in params.items()}
    state = rule.init_state(params)
    assert state["a"]["h"].shape == (12, 2, 20)
    new_params, new_state = rule.update(grads, state, params)
    assert {k: v.shape for k, v in new_params.items()} == {k: v.shape for k, v in params.items()}
    # Coordinatewise: the update of a coordinate depends only on its own gradient and state,
    # whatever tensor it sits in.
    alone, _ = rule.update({"x": grads["a"][1:2, 2:3].reshape(1)}, rule.init_state({"x": torch.zeros(1)}),
                           {"x": params["a"][1:2, 2:3].reshape(1)})
    assert torch.allclose(alone["x"], new_params["a"][1, 2].reshape(1), atol=1e-6)
    # The update is the read-out times 0.1.
    rule_big = LSTMRule(output_scale=1.0)
    rule_big.load_state_dict(rule.state_dict())
    big, _ = rule_big.update(grads, state, params)
    assert torch.allclose((big["b"] - params["b"]) * 0.1, new_params["b"] - params["b"], atol=1e-6)
    assert type(rule)(**rule.config()).config() == rule.config()
    assert RULES.get("lstm") is LSTMRule


def _train_model(opt_factory, steps, model=None, seed=0):
    torch.manual_seed(seed)
    model = model or torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    data = torch.randn(16, 4, generator=torch.Generator().manual_seed(99))  # same data whatever the seed
    target = data.sum(1, keepdim=True)
    opt = opt_factory(model.parameters())

    def run(n):
        for _ in range(n):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(data), target).backward()
            opt.step()

    return model, opt, run


def test_learned_optimizer_matches_the_functional_rule():
    torch.manual_seed(1)
    rule = LSTMRule()
    w = torch.randn(3, 2)
    f = lambda t: (t ** 2).sum() + t.sum()  # noqa: E731
    param = w.clone().requires_grad_(True)
    opt = LearnedOptimizer([param], rule=rule)
    params, state = {"w": w.clone()}, rule.init_state({"w": w})
    for _ in range(5):
        opt.zero_grad()
        f(param).backward()
        opt.step()
        grad = 2 * params["w"] + 1
        with torch.no_grad():
            params, state = rule.update({"w": grad}, state, params)
    assert torch.allclose(param.detach(), params["w"], atol=1e-6)
    assert torch.allclose(opt.state[param]["h"], state["w"]["h"], atol=1e-6)


@pytest.mark.parametrize(("dtype", "chunk"), [(torch.float32, 7), (torch.float64, 7), (torch.float32, None)])
def test_in_place_chunked_step_equals_the_functional_step(dtype, chunk):
    """LSTMRule.update_ (what LearnedOptimizer runs) takes the coordinate stream a chunk at a
    time, chunks crossing tensor boundaries: the numbers of update(), bit for bit when the
    stream is one chunk (the default size here), up to float rounding otherwise."""
    torch.manual_seed(2)
    rule = LSTMRule().to(dtype)
    if chunk is not None:
        rule.fast_chunk = chunk
    same = torch.equal if chunk is None else (lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-6)
                                                 if dtype == torch.float32 else torch.allclose(a, b, rtol=1e-12, atol=1e-14))
    gen = torch.Generator().manual_seed(3)
    shapes = {"a": (1,), "b": (5,), "frozen": (4,), "c": (3, 5), "empty": (0, 3), "d": (20,)}
    start = {k: torch.randn(s, generator=gen, dtype=dtype) for k, s in shapes.items()}
    functional, live = dict(start), {k: v.clone() for k, v in start.items()}
    f_state, l_state = rule.init_state(start), rule.init_state(start)
    for _ in range(4):
        grads = {k: torch.randn(v.shape, generator=gen, dtype=dtype) for k, v in start.items() if k != "frozen"}
        with torch.no_grad():
            stepped = {k: v for k, v in functional.items() if k in grads}
            new, new_state = rule.update(grads, {k: f_state[k] for k in stepped}, stepped)
        functional.update(new)
        f_state.update(new_state)
        rule.update_(grads, l_state, live)
    for k in shapes:
        assert same(live[k], functional[k]), k
        assert same(l_state[k]["h"], f_state[k]["h"]) and same(l_state[k]["c"], f_state[k]["c"]), k
    assert torch.equal(live["frozen"], start["frozen"])
    assert float((live["d"] - start["d"]).abs().max()) > 1e-3  # the comparison is not of unmoved tensors


def test_in_place_step_lr_scales_the_step_as_learned_optimizer_did():
    rule = LSTMRule()
    gen = torch.Generator().manual_seed(4)
    p0 = torch.randn(30, generator=gen)
    grads = {"w": torch.randn(30, generator=gen)}
    full, half = {"w": p0.clone()}, {"w": p0.clone()}
    rule.update_(grads, rule.init_state(full), full)
    rule.update_(grads, rule.init_state(half), half, lr={"w": 0.5})
    torch.testing.assert_close(half["w"] - p0, 0.5 * (full["w"] - p0))


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    rule = LSTMRule()
    make = lambda ps: LearnedOptimizer(ps, rule=rule)  # noqa: E731
    model_a, opt_a, run_a = _train_model(make, 0)
    run_a(5)
    saved_model = {k: v.clone() for k, v in model_a.state_dict().items()}
    saved_opt = opt_a.state_dict()
    run_a(5)
    model_b, opt_b, run_b = _train_model(make, 0, seed=123)  # different init, then overwritten
    model_b.load_state_dict(saved_model)
    opt_b.load_state_dict(saved_opt)
    run_b(5)
    for (k, va), vb in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert set(opt_b.state_dict()["state"][0]) == {"h", "c"}


def test_learned_optimizer_param_groups_none_grad_and_lr():
    torch.manual_seed(0)
    rule = LSTMRule()
    a, b, frozen = (torch.randn(3, requires_grad=True) for _ in range(3))
    opt = LearnedOptimizer([{"params": [a]}, {"params": [b, frozen], "lr": 0.0}], rule=rule)
    b0, frozen0, a0 = b.detach().clone(), frozen.detach().clone(), a.detach().clone()

    def closure():
        loss = (a.sum() + b.sum()).pow(2)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None
    assert not torch.equal(a.detach(), a0)
    assert torch.equal(b.detach(), b0)  # lr 0 freezes the group
    assert torch.equal(frozen.detach(), frozen0) and frozen not in opt.state  # no grad: untouched
    opt.zero_grad()
    assert a.grad is None
    with pytest.raises(ValueError, match="lr"):
        LearnedOptimizer([a], rule=rule, lr=-1.0)
    with pytest.raises(ValueError, match="LearnedRule"):
        LearnedOptimizer([a], rule=torch.nn.Linear(1, 1))


def test_learned_optimizer_float64_params():
    torch.manual_seed(0)
    model, opt, run = _train_model(lambda ps: LearnedOptimizer(ps, rule=LSTMRule()), 0,
                                   model=torch.nn.Linear(4, 1).double())
    opt.zero_grad()
    model(torch.randn(2, 4, dtype=torch.float64)).sum().backward()
    opt.step()
    assert all(p.dtype == torch.float64 and torch.isfinite(p).all() for p in model.parameters())


def test_weights_file_round_trip_and_clear_errors(tmp_path):
    torch.manual_seed(0)
    rule = LSTMRule(hidden_size=7, num_layers=1, preprocess_p=5.0, output_scale=0.01)
    path = save_rule(tmp_path / "w.safetensors", rule, {"training": {"steps": 3}})
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["rule"] == "lstm" and card["config"] == rule.config() and card["training"] == {"steps": 3}
    loaded = load_rule(path)
    assert loaded.config() == rule.config()
    assert all(torch.equal(a, b) for a, b in zip(rule.state_dict().values(), loaded.state_dict().values()))
    x = torch.zeros(3, requires_grad=True)
    assert isinstance(LearnedOptimizer.from_file(path, [x]).rule, LSTMRule)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WeightsFileError, match="truncated or foreign"):
        load_rule(truncated)
    pickled = tmp_path / "pickle.safetensors"
    torch.save(rule.state_dict(), pickled)  # a pickle-based file must be refused, never unpickled
    with pytest.raises(WeightsFileError):
        load_rule(pickled)
    misshaped = tmp_path / "misshaped.safetensors"
    sd = dict(rule.state_dict())
    sd["readout.weight"] = torch.zeros(1, 8)
    save_tensors(misshaped, sd, {"rule": "lstm", "config": rule.config()})
    with pytest.raises(WeightsFileError, match="readout.weight.*shape"):
        load_rule(misshaped)
    missing = tmp_path / "missing.safetensors"
    save_tensors(missing, {k: v for k, v in rule.state_dict().items() if k != "readout.bias"},
                 {"rule": "lstm", "config": rule.config()})
    with pytest.raises(WeightsFileError, match="missing.*readout.bias"):
        load_rule(missing)
    foreign_kind = tmp_path / "kind.safetensors"
    save_tensors(foreign_kind, dict(rule.state_dict()), {"rule": "transformer", "config": {}})
    with pytest.raises(WeightsFileError, match="unknown rule kind"):
        load_rule(foreign_kind)
    no_card = tmp_path / "nocard.safetensors"
    save_tensors(no_card, dict(rule.state_dict()), {"something": 1})
    with pytest.raises(WeightsFileError, match="rule"):
        load_rule(no_card)
    with pytest.raises(WeightsFileError, match="not found"):
        load_rule(tmp_path / "absent.safetensors")
    bad_deploy = tmp_path / "deploy.safetensors"
    save_tensors(bad_deploy, dict(rule.state_dict()), {"rule": "lstm", "config": rule.config(), "deploy": 0.1})
    with pytest.raises(WeightsFileError, match="'deploy' entry must be a mapping"):
        load_rule(bad_deploy)


def test_pretrained_l2l_digits_ships_and_trains():
    assert "l2l-digits" in PRETRAINED.names()
    card = PRETRAINED.card("l2l-digits")
    assert card["rule"] == "lstm" and card["config"]["hidden_size"] == 20 and card["config"]["num_layers"] == 2
    assert {"training", "data", "metrics"} <= set(card)
    from l2o.tasks.digits import DigitsMLP
    from l2o.train import train

    result = train(DigitsMLP(), lambda ps: l2o.LearnedOptimizer.pretrained("l2l-digits", ps), steps=30, seed=0)
    assert not result.diverged
    assert sum(result.losses[-5:]) / 5 < 0.5 * result.losses[0]
    with pytest.raises(KeyError, match="Available: .*l2l-digits"):
        LearnedOptimizer.pretrained("l2l-digit", [torch.zeros(1)])
