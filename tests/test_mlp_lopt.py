"""The per-parameter MLP learned optimizer: update rule, deployment, state_dict, weights."""

import copy

import pytest
import torch

from l2o.learned.lstm import LSTMRule
from l2o.learned.mlp import MLPRule
from l2o.learned.optimizer import LearnedOptimizer
from l2o.learned.weights import PRETRAINED, load_rule, save_rule


# The rule's feature options, each case exercising one of them.
OPTIONS = [{}, {"tensor_features": True}, {"adam_ratios": True}]


def _trained_like(rule: MLPRule, seed: int = 0) -> MLPRule:
    """Random but non-trivial weights (a fresh rule makes deliberately tiny steps)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rule.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return rule


@pytest.mark.parametrize("options", OPTIONS)
def test_config_rebuilds_the_rule(options):
    rule = MLPRule(hidden=8, hidden_layers=2, betas=(0.9, 0.99), step_mult=0.02, **options)
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


@pytest.mark.parametrize("options", OPTIONS)
def test_chunked_deployment_path_matches_the_differentiable_path(options):
    rule = _trained_like(MLPRule(hidden=8, **options))
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


def _reference_step(rule: MLPRule, p, g, m, v, t):
    """The rule's equations written out plainly, one tensor at a time (docs/methods/mlp_lopt.md)."""
    beta = rule.beta_vec.to(p.dtype).view(-1, *([1] * p.dim()))  # the rule's constants, as stored
    m = beta * m + (1 - beta) * g
    v = rule.rms_beta * v + (1 - rule.rms_beta) * g * g
    r = 1 / torch.sqrt(v + rule.eps)
    rows = [g, *m, torch.sqrt(v), p, g * r, *(m * r)]
    rms = [torch.sqrt((f * f).mean() + rule.eps) for f in rows]
    x = [f.flatten() / s for f, s in zip(rows, rms)]
    if rule.adam_ratios:  # g / sqrt(v_hat), m_hat_b / sqrt(v_hat), not normalized
        r_hat = 1 / torch.sqrt((v + rule.eps) / (1 - rule.rms_beta ** t))
        m_hat = m / (1 - beta ** t)
        x[-(len(m) + 1):] = [(f * r_hat).flatten() for f in (g, *m_hat)]
    x = torch.stack(x, dim=1)  # (n, F)
    tau = rule.timescales.to(p.dtype)
    progress = torch.tanh(torch.tensor(float(t), dtype=p.dtype) / tau - 1)
    if rule.tensor_features:  # 0.2 log RMS of g, sqrt(v) and p
        nb = len(rule.betas)
        progress = torch.cat([progress, 0.2 * torch.log(torch.stack([rms[0], rms[nb + 1], rms[nb + 2]]))])
    h = x @ rule.coord_in.weight.T + rule.coord_in.bias + rule.global_in.weight @ progress
    if rule.head is not None:
        h = torch.relu(h)
        for lin in rule.hidden_stack:
            h = torch.relu(lin(h))
        h = rule.head(h)
    step = rule.step_mult * h[:, 0] * torch.exp(rule.exp_mult * h[:, 1])
    return p - step.view(p.shape), m, v


def _check_in_place_steps_against_the_reference(rule: MLPRule, dtype, fused: bool = False, chunk: int = 96):
    rule.fast_threshold, rule.fast_chunk = 100, chunk  # default: several chunks, the last one partial
    gen = torch.Generator().manual_seed(3)
    shapes = {"w": (30, 25), "big_one_chunk": (90,), "small": (7,), "conv": (6, 5, 3, 3), "scalar": (1,)}
    params = {k: torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for k, s in shapes.items()}
    live = {k: v.clone() for k, v in params.items()}
    state = rule.init_state(live)
    ref = {k: (v.clone(), torch.zeros(len(rule.betas), *v.shape, dtype=dtype), torch.zeros_like(v))
           for k, v in params.items()}
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 1e-6}
    for t in range(1, 5):
        grads = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64).to(dtype) * 10.0 ** (t - 3)
                 for k, v in params.items()}
        rule.update_(grads, state, live, fused=fused)
        for k in params:
            with torch.no_grad():
                ref[k] = _reference_step(rule, ref[k][0], grads[k], ref[k][1], ref[k][2], t)
            torch.testing.assert_close(live[k], ref[k][0], **tol)
            torch.testing.assert_close(state[k]["m"], ref[k][1], **tol)
            torch.testing.assert_close(state[k]["v"], ref[k][2], **tol)
            assert int(state[k]["step"]) == t
    moved = float((live["w"] - params["w"]).abs().max())
    assert moved > 1e-3  # the comparison is not between two unchanged tensors


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("hidden_layers", "options"), [(1, {}), (2, {}), (0, {}), *((1, o) for o in OPTIONS[1:])])
def test_in_place_deployment_step_matches_a_plain_reference(dtype, hidden_layers, options):
    rule = MLPRule(hidden=8, hidden_layers=hidden_layers, **options)
    _check_in_place_steps_against_the_reference(_trained_like(rule, seed=hidden_layers).to(dtype), dtype)


# Each case compiles the fused pass once (a few seconds): the shipped shape in float32, and the
# other branches of the kernel (no hidden layer; a second hidden layer, in float64).
@pytest.mark.parametrize(("hidden_layers", "options", "dtype"),
                         [(1, {}, torch.float32), (0, {"adam_ratios": True}, torch.float32),
                          (2, {"tensor_features": True}, torch.float64)])
def test_fused_deployment_step_matches_a_plain_reference(hidden_layers, options, dtype):
    from l2o.learned._mlp_kernel import fused_mlp_step_

    rule = MLPRule(hidden=4, hidden_layers=hidden_layers, **options)
    _check_in_place_steps_against_the_reference(_trained_like(rule, seed=hidden_layers).to(dtype), dtype, fused=True)
    assert not fused_mlp_step_.failed  # the compiled pass ran, not the fallback


def test_fused_step_falls_back_to_the_unfused_step_with_a_warning(uncompilable):
    import l2o.learned.mlp as mlp_module

    kernel = uncompilable(mlp_module, "fused_mlp_step_")
    first_pass = uncompilable(mlp_module, "fused_accumulate_")
    rule = _trained_like(MLPRule(hidden=8))
    rule.fast_threshold, rule.fast_chunk = 8, 16  # the first layer (32 weights) takes 2 chunks
    data = (torch.randn(32, 4), torch.randn(32, 1))
    models = [_model(), _model()]
    plain, fused = LearnedOptimizer(models[0].parameters(), rule=rule), LearnedOptimizer(models[1].parameters(),
                                                                                          rule=rule, fused=True)
    _train_steps(models[0], plain, 3, data)
    with pytest.warns(RuntimeWarning, match="fused=True.*could not compile its fused step.*no C\\+\\+ compiler"):
        _train_steps(models[1], fused, 3, data)
    assert kernel.failed and first_pass.failed
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # eager passes; small tensors stepped together


@pytest.mark.parametrize("chunk", [16, 4096])  # two chunks, and one
def test_fused_first_pass_with_the_unfused_second_pass_matches_the_reference(uncompilable, chunk):
    import l2o.learned.mlp as mlp_module

    uncompilable(mlp_module, "fused_mlp_step_")  # only pass 2 falls back: its features are rebuilt
    rule = _trained_like(MLPRule(hidden=4))
    with pytest.warns(RuntimeWarning, match="could not compile"):
        _check_in_place_steps_against_the_reference(rule, torch.float32, fused=True, chunk=chunk)
    assert not mlp_module.fused_accumulate_.failed


@pytest.mark.parametrize("options", OPTIONS)
def test_small_tensors_stepped_together_match_one_by_one(options):
    """fused=True steps the tensors of at most fast_threshold coordinates as one computation; each
    keeps its own normalization, step count (here they differ) and lr."""
    rule = _trained_like(MLPRule(hidden=8, **options)).double()
    gen = torch.Generator().manual_seed(11)
    shapes = [(1,), (7,), (3, 4), (2, 2, 5), (50,)]
    start = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    runs = {}
    for fused in (False, True):
        params = {str(i): t.clone() for i, t in enumerate(start)}
        state = rule.init_state(params)
        grad_gen = torch.Generator().manual_seed(12)
        for t in range(4):
            grads = {k: torch.randn(v.shape, generator=grad_gen, dtype=torch.float64) for k, v in params.items()}
            if t == 0:
                del grads["1"]  # tensor 1 misses a step: its step count lags the others'
            # lr changes from step to step (as under a scheduler): no stale learning rate is reused
            rule.update_(grads, state, params, lr={"3": 0.5 + 0.1 * t, "4": 2.0 - 0.3 * t}, fused=fused)
        runs[fused] = params, state
    for k in runs[False][0]:
        torch.testing.assert_close(runs[True][0][k], runs[False][0][k], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(runs[True][1][k]["m"], runs[False][1][k]["m"])
        assert int(runs[True][1][k]["step"]) == int(runs[False][1][k]["step"]) == (3 if k == "1" else 4)
    assert float((runs[True][0]["0"] - start[0]).abs().max()) > 1e-3


@pytest.mark.parametrize("fused", [False, True])
def test_tensor_learning_rates_step_as_floats_do(fused):
    """LearnedOptimizer's adaptation passes its multipliers as 0-d tensors off the CPU (no read-back
    from the device): every path of the step (deployment chunks, small tensors one by one or
    together) uses them as it uses floats."""
    rule = _trained_like(MLPRule(hidden=8)).double()
    rule.fast_threshold, rule.fast_chunk = 10, 64
    gen = torch.Generator().manual_seed(4)
    start = {"w": torch.randn(20, 10, generator=gen, dtype=torch.float64),
             "b": torch.randn(5, generator=gen, dtype=torch.float64), "c": torch.randn(3, generator=gen, dtype=torch.float64)}
    lrs = {"w": 0.7, "b": 1.9, "c": 0.3}
    runs = []
    for as_tensor in (False, True):
        params = {k: v.clone() for k, v in start.items()}
        state = rule.init_state(params)
        grad_gen = torch.Generator().manual_seed(5)
        for t in range(3):
            grads = {k: torch.randn(v.shape, generator=grad_gen, dtype=torch.float64) for k, v in params.items()}
            lr = {k: (torch.tensor(v * (1 + t), dtype=torch.float64) if as_tensor else v * (1 + t)) for k, v in lrs.items()}
            rule.update_(grads, state, params, lr=lr, fused=fused)
        runs.append(params)
    for k in start:
        torch.testing.assert_close(runs[1][k], runs[0][k], rtol=1e-12, atol=1e-14)
        assert float((runs[1][k] - start[k]).abs().max()) > 1e-3


def test_lstm_takes_tensor_learning_rates_as_floats():
    rule = LSTMRule().double()
    gen = torch.Generator().manual_seed(6)
    start = {"w": torch.randn(6, 4, generator=gen, dtype=torch.float64)}
    grads = {"w": torch.randn(6, 4, generator=gen, dtype=torch.float64)}
    runs = []
    for lr in (0.4, torch.tensor(0.4, dtype=torch.float64)):
        params = {"w": start["w"].clone()}
        rule.update_(grads, rule.init_state(params), params, lr={"w": lr})
        runs.append(params["w"])
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-12, atol=1e-14)
    assert not torch.equal(runs[0], start["w"])


def test_steps_make_no_tensors_from_python_numbers_once_warm(monkeypatch):
    """On a GPU, a tensor made from Python numbers is a host-to-device copy that waits for the
    queued kernels: after the first step, the deployment step reuses the ones it made."""
    rule = _trained_like(MLPRule(hidden=8))
    rule.fast_threshold, rule.fast_chunk = 10, 64
    gen = torch.Generator().manual_seed(3)
    params = {"w": torch.randn(20, 10, generator=gen), "b": torch.randn(5, generator=gen), "c": torch.randn(3, generator=gen)}
    state = rule.init_state(params)
    grads = {k: torch.randn(v.shape, generator=gen) for k, v in params.items()}
    for fused in (False, True):
        rule.update_(grads, state, params, lr={"w": 0.5}, fused=fused)
        made = []
        real = torch.tensor
        monkeypatch.setattr(torch, "tensor", lambda *a, **k: made.append(a) or real(*a, **k))
        for _ in range(3):
            rule.update_(grads, state, params, lr={"w": 0.5}, fused=fused)
        monkeypatch.setattr(torch, "tensor", real)
        assert made == [], (fused, made)


def test_fused_needs_a_rule_with_a_fused_step():
    with pytest.raises(ValueError, match="fused=True needs a rule with a fused step"):
        LearnedOptimizer([torch.zeros(3, requires_grad=True)], fused=True)  # the default rule is the LSTM


def test_in_place_step_lr_scales_the_step():
    rule = _trained_like(MLPRule(hidden=8)).double()
    rule.fast_threshold, rule.fast_chunk = 10, 64
    gen = torch.Generator().manual_seed(5)
    p0 = {"w": torch.randn(20, 10, generator=gen, dtype=torch.float64),
          "b": torch.randn(5, generator=gen, dtype=torch.float64)}
    grads = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in p0.items()}
    full, half = {k: v.clone() for k, v in p0.items()}, {k: v.clone() for k, v in p0.items()}
    rule.update_(grads, rule.init_state(full), full)
    rule.update_(grads, rule.init_state(half), half, lr={"w": 0.5, "b": 0.5})
    for k in p0:
        torch.testing.assert_close(half[k] - p0[k], 0.5 * (full[k] - p0[k]))


def test_learned_optimizer_state_dict_is_a_snapshot_with_in_place_steps():
    rule = _trained_like(MLPRule(hidden=8))
    rule.fast_threshold = 8  # the first layer (32 weights) takes the in-place chunked path
    data = (torch.randn(32, 4), torch.randn(32, 1))
    model = _model()
    opt = LearnedOptimizer(model.parameters(), rule=rule)
    _train_steps(model, opt, 2, data)
    snapshot = opt.state_dict()
    frozen = copy.deepcopy(snapshot)
    _train_steps(model, opt, 2, data)
    for k, s in snapshot["state"].items():
        for name, value in s.items():
            assert torch.equal(value, frozen["state"][k][name])  # later steps did not write into it
    model2 = _model()
    other = LearnedOptimizer(model2.parameters(), rule=rule)
    other.load_state_dict(snapshot)
    before = copy.deepcopy(snapshot)
    _train_steps(model2, other, 1, data)
    for k, s in snapshot["state"].items():
        for name, value in s.items():
            assert torch.equal(value, before["state"][k][name])  # loading copies, stepping does not alias


@pytest.mark.parametrize("options", OPTIONS)
def test_batch_dims_normalizes_per_task(options):
    rule = _trained_like(MLPRule(hidden=8, **options)).double()
    singles = [{"w": torch.randn(4, 6, dtype=torch.float64) * s} for s in (1.0, 100.0)]
    grads = [{"w": torch.randn(4, 6, dtype=torch.float64) * s} for s in (0.01, 10.0)]
    stacked_p = {"w": torch.stack([p["w"] for p in singles])}
    stacked_g = {"w": torch.stack([g["w"] for g in grads])}
    with torch.enable_grad():
        new_stacked, _ = rule.update(stacked_g, rule.init_state_batched(stacked_p, batch_dims=1), stacked_p, batch_dims=1)
        for i in range(2):
            new_single, _ = rule.update(grads[i], rule.init_state(singles[i]), singles[i])
            torch.testing.assert_close(new_stacked["w"][i], new_single["w"])


@pytest.mark.parametrize(("hidden_layers", "options"), [(0, {}), (1, {}), (1, {"tensor_features": True}),
                                                      (2, {"tensor_features": True, "adam_ratios": True})])
def test_grouped_batched_update_matches_the_per_tensor_one(hidden_layers, options):
    """On a GPU a batched update steps all tensors in one pass (``grouped_devices``): the same
    equations, tensor by tensor, as the per-tensor passes, and the same gradients for the rule."""
    rule = _trained_like(MLPRule(hidden=8, hidden_layers=hidden_layers, **options),
                         seed=hidden_layers).double()
    gen = torch.Generator().manual_seed(7)
    shapes = {"w": (5, 6), "b": (5,), "scalar": (), "frozen": (3,), "empty": (0, 2), "conv": (2, 3, 2, 2)}
    params = {k: torch.randn(3, *s, generator=gen, dtype=torch.float64) * (10.0 if k == "b" else 1.0)
              for k, s in shapes.items()}
    grads = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in params.items() if k != "frozen"}
    state = rule.init_state_batched(params, batch_dims=1)
    state["b"]["step"] = state["b"]["step"] + 5  # tensors at different step counts
    runs = {}
    for grouped in (False, True):
        rule.grouped_devices = frozenset({"cpu"}) if grouped else frozenset()
        rule.zero_grad()
        with torch.enable_grad():
            new_p, new_s = rule.update(grads, state, params, batch_dims=1)
            new_p2, _ = rule.update(grads, new_s, new_p, batch_dims=1)  # a second step from the first's state
            sum(v.square().sum() for v in new_p2.values()).backward()
        runs[grouped] = new_p2, new_s, [q.grad.clone() for q in rule.parameters()]
    (p_a, s_a, g_a), (p_b, s_b, g_b) = runs[False], runs[True]
    for k in shapes:
        torch.testing.assert_close(p_b[k], p_a[k], rtol=1e-10, atol=1e-12)
        for key in ("m", "v", "step"):
            torch.testing.assert_close(s_b[k][key], s_a[k][key], rtol=1e-10, atol=1e-12)
    assert torch.equal(p_b["frozen"], params["frozen"]) and int(s_b["b"]["step"]) == 6
    for a, b in zip(g_a, g_b):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    assert float((p_b["w"] - params["w"]).detach().abs().max()) > 1e-4  # the comparison is not of unmoved tensors


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


def test_adam_ratios_let_a_one_element_tensor_see_more_than_signs():
    # Normalized per tensor, every feature of a one-element tensor is +-1: two gradient
    # histories with the same signs give the same step. With adam_ratios, m_hat / sqrt(v_hat)
    # tells a steady gradient from one that shrank, and the step stays free of the scale.
    histories = {"steady": [1.0, 1.0, 1.0], "shrinking": [1.0, 0.1, 0.01], "steady x100": [100.0, 100.0, 100.0]}
    for adam_ratios in (False, True):
        rule = _trained_like(MLPRule(hidden=8, adam_ratios=adam_ratios)).double()
        steps = {}
        for name, history in histories.items():
            p = {"w": torch.ones(1, dtype=torch.float64) * (100.0 if "x100" in name else 1.0)}
            state = rule.init_state(p)
            with torch.no_grad():
                for g in history:
                    new, state = rule.update({"w": torch.tensor([g], dtype=torch.float64)}, state, p)
            steps[name] = float(new["w"] - p["w"])
        assert steps["steady"] == pytest.approx(steps["steady x100"], rel=1e-6)
        assert (steps["steady"] == pytest.approx(steps["shrinking"], rel=1e-6)) == (not adam_ratios)


def test_tensor_features_let_the_rule_see_the_scale_it_normalizes_away():
    # Without tensor features the step of a tensor is invariant to rescaling its gradient
    # history and values (everything is divided by its RMS); with them it is not.
    params = {"w": torch.randn(20, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)}
    grads = {"w": torch.randn(20, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)}
    for tensor_features, invariant in ((False, True), (True, False)):
        rule = _trained_like(MLPRule(hidden=8, tensor_features=tensor_features)).double()
        steps = []
        for scale in (1.0, 100.0):
            p = {"w": params["w"] * scale}
            with torch.no_grad():
                new, _ = rule.update({"w": grads["w"] * scale}, rule.init_state(p), p)
            steps.append(new["w"] - p["w"])
        # (eps in the normalizers breaks the invariance at the 1e-5 level)
        assert torch.allclose(steps[0], steps[1], rtol=1e-3, atol=0) == invariant



def test_learned_optimizer_moves_a_copy_of_the_rule_to_the_parameters_device():
    # (the meta device stands in for a GPU: the check is about placement, not arithmetic)
    rule = MLPRule(hidden=4)
    on_meta = torch.zeros(3, device="meta", requires_grad=True)
    optimizer = LearnedOptimizer([on_meta], rule=rule)
    assert all(t.device.type == "meta" for t in [*optimizer.rule.parameters(), *optimizer.rule.buffers()])
    assert all(t.device.type == "cpu" for t in rule.parameters())  # the caller's rule is untouched
    assert LearnedOptimizer([torch.zeros(3, requires_grad=True)], rule=rule).rule is rule  # already there
    with pytest.raises(ValueError, match="all parameters on one device"):
        LearnedOptimizer([torch.zeros(3, requires_grad=True), on_meta], rule=rule)


def _dtype_run(dtype, fused=False, steps=4, reload_after=None):
    """A small MLP in ``dtype`` trained by a hidden-4 MLP rule (float32 weights); optionally
    through a state_dict round trip after ``reload_after`` steps."""
    rule = _trained_like(MLPRule(hidden=4))
    rule.fast_threshold = 100  # the 30x20 first layer takes the deployment path, the rest the small one
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.Tanh(), torch.nn.Linear(30, 3))
    start = [p.detach().clone() for p in model.parameters()]
    model = model.to(dtype)
    opt = LearnedOptimizer(model.parameters(), rule=rule, fused=fused)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 20, generator=gen), torch.randn(16, 3, generator=gen)
    for step in range(steps):
        if step == reload_after:
            saved = copy.deepcopy(opt.state_dict())
            opt = LearnedOptimizer(model.parameters(), rule=rule, fused=fused)
            opt.load_state_dict(saved)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x.to(dtype)).float(), y).backward()
        opt.step()
    return model, opt, rule, start


@pytest.mark.parametrize(("dtype", "fused"), [(torch.float64, False), (torch.bfloat16, False), (torch.float16, False),
                                              (torch.bfloat16, True)])
def test_parameters_of_other_dtypes(dtype, fused):
    """Half-precision parameters are stepped in float32 (state in float32), float64 ones on a float64
    copy of the rule; either way close to the float32 run."""
    reference, _, _, start = _dtype_run(torch.float32)
    model, opt, rule, _ = _dtype_run(dtype, fused)
    wide = dtype == torch.float64
    assert opt.rule is not rule if wide else opt.rule is rule  # the caller's rule is left as it was
    assert next(rule.parameters()).dtype == torch.float32
    for p, q, p0 in zip(model.parameters(), reference.parameters(), start):
        assert p.dtype == dtype and opt.state[p]["m"].dtype == (torch.float64 if wide else torch.float32)
        moved = float((q.detach() - p0).abs().median())
        assert moved > 1e-3
        diff = (p.detach().double() - q.detach().double()).abs()
        assert float(diff.median()) < (1e-6 if wide else 0.1 * moved)


def test_state_of_half_precision_parameters_round_trips_in_float32():
    model, opt, _, _ = _dtype_run(torch.bfloat16, steps=5)
    again, opt2, _, _ = _dtype_run(torch.bfloat16, steps=5, reload_after=2)
    assert all(opt2.state[p]["m"].dtype == torch.float32 for p in again.parameters())
    for a, b in zip(model.parameters(), again.parameters()):
        assert torch.equal(a, b)  # the reloaded state kept its float32 precision


def _steps_through(path: str, rule: MLPRule, params: dict, grads_by_step: list[dict]) -> dict:
    """Four steps of every tensor through one of MLPRule.PATHS (forced), from fresh state."""
    rule.path = lambda p, **kw: path  # the dispatcher, overruled: every tensor takes ``path``
    if path == "reference":
        state = rule.init_state(params)
        for grads in grads_by_step:
            with torch.enable_grad():
                params, state = rule.update(grads, state, params)
        return {k: v.detach() for k, v in params.items()}
    if path == "grouped":  # stacked tasks (here one), every tensor in one pass
        stacked = {k: v.unsqueeze(0) for k, v in params.items()}
        state = rule.init_state(stacked, batch_dims=1)
        for grads in grads_by_step:
            stacked, state = rule.update({k: g.unsqueeze(0) for k, g in grads.items()}, state, stacked, batch_dims=1)
        return {k: v[0].detach() for k, v in stacked.items()}
    live = {k: v.clone() for k, v in params.items()}  # the in-place paths
    state = rule.init_state(live)
    for grads in grads_by_step:
        rule.update_(grads, state, live, fused=path in ("fused", "small_fused"))
    return live


@pytest.mark.parametrize("path", MLPRule.PATHS)
def test_every_path_of_the_step_matches_the_reference(path):
    """The peer implementations behind MLPRule.path, one table: each against the plain reference."""
    rule = _trained_like(MLPRule(hidden=8), seed=5).double()
    rule.fast_threshold, rule.fast_chunk = 100, 96  # the chunked passes take several chunks
    gen = torch.Generator().manual_seed(4)
    shapes = {"w": (30, 25), "b": (25,), "conv": (6, 5, 3, 3)}
    params = {k: torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}
    grads_by_step = [{k: torch.randn(s, generator=gen, dtype=torch.float64) * 10.0 ** (t - 2) for k, s in shapes.items()}
                     for t in range(4)]
    got = _steps_through(path, rule, params, grads_by_step)
    for k, p in params.items():
        ref, m, v = p.clone(), torch.zeros(len(rule.betas), *p.shape, dtype=torch.float64), torch.zeros_like(p)
        with torch.no_grad():
            for t, grads in enumerate(grads_by_step, 1):
                ref, m, v = _reference_step(rule, ref, grads[k], m, v, t)
        torch.testing.assert_close(got[k], ref, rtol=1e-9, atol=1e-11)
        assert float((got[k] - p).abs().max()) > 1e-4  # moved: not a comparison of unchanged tensors
    if path == "fused":
        from l2o.learned._mlp_kernel import fused_mlp_step_

        assert not fused_mlp_step_.failed  # the compiled passes ran, not the fallback
