"""The per-parameter MLP learned optimizer: update rule, deployment, state_dict, weights."""

import copy

import pytest
import torch

from l2o.learned.mlp import MLPRule
from l2o.learned.optimizer import LearnedOptimizer
from l2o.learned.weights import PRETRAINED, load_rule, save_rule


def _trained_like(rule: MLPRule, seed: int = 0) -> MLPRule:
    """Random but non-trivial weights (a fresh rule makes deliberately tiny steps)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rule.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return rule


def test_config_rebuilds_the_rule():
    rule = MLPRule(hidden=8, hidden_layers=2, betas=(0.9, 0.99), step_mult=0.02)
    again = MLPRule(**rule.config())
    assert again.config() == rule.config()
    assert [p.shape for p in again.parameters()] == [p.shape for p in rule.parameters()]


def test_state_is_a_few_accumulators_per_parameter():
    rule = MLPRule()
    state = rule.init_state({"w": torch.zeros(5, 3)})["w"]
    assert set(state) == {"m", "v", "step"}
    assert state["m"].numel() == 15 * len(rule.betas) and state["v"].numel() == 15 and state["step"].numel() == 1


def test_fresh_rule_makes_tiny_steps():
    rule = MLPRule()
    params = {"w": torch.randn(50, 20)}
    grads = {"w": torch.randn(50, 20)}
    with torch.no_grad():
        new, _ = rule.update(grads, rule.init_state(params), params)
    step = (new["w"] - params["w"]).abs().max()
    assert 0 < step < 0.05


def test_chunked_deployment_path_matches_the_differentiable_path():
    rule = _trained_like(MLPRule(hidden=8))
    rule.fast_threshold, rule.fast_chunk = 100, 128  # force several chunks on a small tensor
    params = {"w": torch.randn(30, 25, dtype=torch.float64), "b": torch.randn(7, dtype=torch.float64)}
    rule = rule.double()
    state_fast = state_ref = rule.init_state(params)
    p_fast = p_ref = params
    for _ in range(3):
        grads = {k: torch.randn_like(v) for k, v in params.items()}
        with torch.no_grad():
            p_fast, state_fast = rule.update(grads, state_fast, p_fast)
        with torch.enable_grad():
            p_ref, state_ref = rule.update(grads, state_ref, p_ref)
    for k in params:
        torch.testing.assert_close(p_fast[k], p_ref[k].detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(state_fast[k]["m"], state_ref[k]["m"])
    assert float((p_fast["w"] - params["w"]).abs().max()) > 1e-3


def test_batch_dims_normalizes_per_task():
    rule = _trained_like(MLPRule(hidden=8)).double()
    singles = [{"w": torch.randn(4, 6, dtype=torch.float64) * s} for s in (1.0, 100.0)]
    grads = [{"w": torch.randn(4, 6, dtype=torch.float64) * s} for s in (0.01, 10.0)]
    stacked_p = {"w": torch.stack([p["w"] for p in singles])}
    stacked_g = {"w": torch.stack([g["w"] for g in grads])}
    with torch.enable_grad():
        new_stacked, _ = rule.update(stacked_g, rule.init_state_batched(stacked_p), stacked_p, batch_dims=1)
        for i in range(2):
            new_single, _ = rule.update(grads[i], rule.init_state(singles[i]), singles[i])
            torch.testing.assert_close(new_stacked["w"][i], new_single["w"])


def test_frozen_and_empty_parameters():
    rule = MLPRule()
    params = {"a": torch.randn(3), "frozen": torch.randn(2), "empty": torch.zeros(0)}
    grads = {"a": torch.randn(3), "empty": torch.zeros(0)}
    new, state = rule.update(grads, rule.init_state(params), params)
    assert torch.equal(new["frozen"], params["frozen"])
    assert new["empty"].shape == (0,) and state["empty"]["step"] == 1


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="hidden"):
        MLPRule(hidden=0)
    with pytest.raises(ValueError, match="betas"):
        MLPRule(betas=(1.5,))
    with pytest.raises(ValueError, match="batch_dims"):
        MLPRule().update({}, {}, {}, batch_dims=2)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _train_steps(model, opt, steps, data):
    x, y = data
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_learned_optimizer_state_dict_round_trip_continues_identically():
    rule = _trained_like(MLPRule(hidden=8))
    data = (torch.randn(32, 4), torch.randn(32, 1))
    model = _model()
    opt = LearnedOptimizer(model.parameters(), rule=rule)
    _train_steps(model, opt, 3, data)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    expected = _train_steps(model, opt, 3, data)
    model2 = _model()
    model2.load_state_dict(saved_model)
    opt2 = LearnedOptimizer(model2.parameters(), rule=rule)
    opt2.load_state_dict(saved_opt)
    assert _train_steps(model2, opt2, 3, data) == expected


def test_saved_weights_load_and_run(tmp_path):
    rule = _trained_like(MLPRule(hidden=8))
    path = save_rule(tmp_path / "w.safetensors", rule, {"note": "test"})
    loaded = load_rule(path)
    assert isinstance(loaded, MLPRule) and loaded.config() == rule.config()
    for a, b in zip(rule.parameters(), loaded.parameters()):
        assert torch.equal(a, b)


def test_shipped_mlp_general_loads_and_trains():
    assert "mlp-general" in PRETRAINED
    card = PRETRAINED.card("mlp-general")
    assert card["rule"] == "mlp" and "training" in card and "evaluation" in card
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = (x[:, :1] * 2 - x[:, 1:2]).tanh()
    model = _model()
    opt = LearnedOptimizer.pretrained("mlp-general", model.parameters())
    losses = _train_steps(model, opt, 50, (x, y))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
