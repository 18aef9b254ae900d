"""Reversible learning: bit-exact reversal, hypergradients against autograd through the unrolled run,
the information buffer, and the errors and warnings of the paper's numerics."""

import math
import warnings

import pytest
import torch

from l2o.hyper.fixed_point import ExactTensor, FixedPointOverflowError, InfoBuffer, rational
from l2o.hyper.reversible import (ChaoticHypergradientWarning, HypergradientError, Hyperparameters, layer_groups,
                                  reversible_hypergradient, unrolled_hypergradient)


def _problem(steps=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=g)

    def loss(p, batch):
        xb, yb = batch
        h = torch.tanh(xb @ p["l0.weight"].T + p["l0.bias"])
        return torch.nn.functional.cross_entropy(h @ p["l1.weight"].T + p["l1.bias"], yb)

    raw = {"l0.weight": torch.randn(6, 5, generator=g, dtype=torch.float64) * 0.5,
           "l0.bias": torch.randn(6, generator=g, dtype=torch.float64) * 0.1,
           "l1.weight": torch.randn(3, 6, generator=g, dtype=torch.float64) * 0.5,
           "l1.bias": torch.zeros(3, dtype=torch.float64)}
    batches = [(x[(i % 4) * 10:(i % 4 + 1) * 10], y[(i % 4) * 10:(i % 4 + 1) * 10]) for i in range(steps)]
    hyper = Hyperparameters.constant(steps, 2, lr=0.3, momentum=0.85, init_scale=1.2, l2=0.01)
    hyper.lr = hyper.lr * (1 + 0.2 * torch.rand(steps, 2, generator=g, dtype=torch.float64))
    hyper.momentum = hyper.momentum - 0.1 * torch.rand(steps, 2, generator=g, dtype=torch.float64)
    meta = lambda p: loss(p, (x, y))  # noqa: E731
    return loss, raw, batches, hyper, meta


def test_fixed_point_multiply_divide_is_bit_exact_and_buffer_grows_like_log_gamma():
    g = torch.Generator().manual_seed(1)
    value = torch.randn(2000, generator=g, dtype=torch.float64) * 3
    e = ExactTensor(value)
    start = e.intrep.clone()
    n, d = rational(0.9, 16)
    deltas = [torch.randn(2000, generator=g, dtype=torch.float64) * 1e-3 for _ in range(30)]
    for delta in deltas:
        e.mul(n, d).sub(delta)
    bits = e.buffer.bits()
    # about log2(1/0.9) = 0.152 bits per element and step
    assert 0.10 < bits / (2000 * 30) < 0.20
    assert not torch.equal(e.intrep, start)
    for delta in reversed(deltas):
        e.add(delta).div(n, d)
    assert torch.equal(e.intrep, start)
    assert e.buffer.bits() == 0


def test_info_buffer_is_a_stack_of_mixed_radix_digits():
    buf = InfoBuffer(3)
    import numpy as np

    buf.push(np.array([1, 2, 3]), 7)
    buf.push(np.array([4, 0, 12]), 13)
    assert buf.pop(13).tolist() == [4, 0, 12]
    assert buf.pop(7).tolist() == [1, 2, 3]


def test_reversal_recovers_the_initial_weights_bit_for_bit():
    loss, raw, batches, hyper, meta = _problem(steps=15)
    result = reversible_hypergradient(loss, raw, batches, hyper, meta, track_buffer=True)
    assert result.exact_reversal is True
    assert len(result.buffer_bits) == 15 and result.buffer_bits[-1] > result.buffer_bits[2] > 0  # v0 = 0 discards nothing
    assert result.final_params["l0.weight"].dtype == torch.float64


def test_reversible_hypergradient_matches_unrolled_autograd():
    loss, raw, batches, hyper, meta = _problem(steps=12)
    rev = reversible_hypergradient(loss, raw, batches, hyper, meta)
    ref = unrolled_hypergradient(loss, raw, batches, hyper, meta)
    assert math.isclose(rev.meta_loss, ref.meta_loss, rel_tol=1e-9)
    for key in ("lr", "momentum", "init_scale", "l2"):
        assert rev.grads[key].shape == ref.grads[key].shape
        assert ref.grads[key].abs().max() > 1e-4, key  # a non-trivial gradient
        torch.testing.assert_close(rev.grads[key], ref.grads[key], rtol=1e-6, atol=1e-9, msg=key)
    for part in ("params0", "velocity0"):
        for name in raw:
            torch.testing.assert_close(rev.grads[part][name], ref.grads[part][name], rtol=1e-6, atol=1e-9)


def test_unrolled_hypergradient_matches_finite_differences_in_one_learning_rate():
    loss, raw, batches, hyper, meta = _problem(steps=6)
    ref = unrolled_hypergradient(loss, raw, batches, hyper, meta)
    eps = 1e-6
    up, down = Hyperparameters(hyper.lr.clone(), hyper.momentum, hyper.init_scale, hyper.l2), \
        Hyperparameters(hyper.lr.clone(), hyper.momentum, hyper.init_scale, hyper.l2)
    up.lr[2, 1] += eps
    down.lr[2, 1] -= eps
    fd = (unrolled_hypergradient(loss, raw, batches, up, meta).meta_loss
          - unrolled_hypergradient(loss, raw, batches, down, meta).meta_loss) / (2 * eps)
    assert math.isclose(float(ref.grads["lr"][2, 1]), fd, rel_tol=1e-4, abs_tol=1e-8)


def test_schedule_of_the_wrong_length_and_bad_hyperparameters_are_rejected():
    loss, raw, batches, hyper, meta = _problem(steps=5)
    short = Hyperparameters.constant(4, 2, lr=0.1)
    with pytest.raises(ValueError, match=r"lr has shape \(4, 2\), expected \(5, 2\)"):
        reversible_hypergradient(loss, raw, batches, short, meta)
    with pytest.raises(ValueError, match="momentum must be in"):
        reversible_hypergradient(loss, raw, batches, Hyperparameters.constant(5, 2, lr=0.1, momentum=1.0), meta)
    with pytest.raises(ValueError, match="every parameter name"):
        reversible_hypergradient(loss, raw, batches, hyper, meta, groups=[["l0.weight"], ["l1.weight"]])
    with pytest.raises(ValueError, match="at least one batch"):
        reversible_hypergradient(loss, raw, [], Hyperparameters.constant(0, 2, lr=0.1), meta)


def test_fixed_point_overflow_is_a_clear_error():
    loss, raw, batches, hyper, meta = _problem(steps=5)
    with pytest.raises(FixedPointOverflowError, match="fixed-point range"):
        reversible_hypergradient(loss, raw, batches, Hyperparameters.constant(5, 2, lr=0.1, init_scale=1e4), meta)
    with pytest.raises(ValueError):  # FixedPointOverflowError is also a ValueError (one-line CLI error)
        ExactTensor(torch.tensor([3000.0]))


def test_large_learning_rates_warn_of_chaos_or_fail_clearly():
    loss, raw, batches, hyper, meta = _problem(steps=20)
    wild = Hyperparameters.constant(20, 2, lr=30.0, momentum=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = reversible_hypergradient(loss, raw, batches, wild, meta, chaos_growth=1e3)
        except (FixedPointOverflowError, HypergradientError):
            return  # a clear error is acceptable too
    assert result.growth > 1e3
    assert any(issubclass(w.category, ChaoticHypergradientWarning) for w in caught)
    # a tame run does not warn
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChaoticHypergradientWarning)
        reversible_hypergradient(loss, raw, batches[:5], Hyperparameters.constant(5, 2, lr=0.1), meta)


def test_layer_groups():
    assert layer_groups(["a.weight", "a.bias", "b.weight"]) == [["a.weight", "a.bias"], ["b.weight"]]


def test_schedule_meta_learning_checkpoints_and_resumes_to_the_same_schedule(tmp_path):
    from dataclasses import replace

    from l2o.experiments.reversible import DigitsProblem, ReversibleConfig, meta_learn

    config = ReversibleConfig(hidden=4, steps=4, batch_size=20, meta_iterations=3, meta_lr=0.05)
    problem = DigitsProblem(config)
    straight = meta_learn(problem, config, 1.0, tmp_path / "a", resume=False, progress=False)
    (tmp_path / "b").mkdir()
    meta_learn(problem, replace(config, meta_iterations=1), 1.0, tmp_path / "b", resume=False, progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        meta_learn(problem, replace(config, meta_lr=0.1), 1.0, tmp_path / "b", resume=True, progress=False)
    resumed = meta_learn(problem, config, 1.0, tmp_path / "b", resume=True, progress=False)
    assert torch.equal(resumed["log_lr"], straight["log_lr"])
    assert [h["val_loss"] for h in resumed["history"]] == [h["val_loss"] for h in straight["history"]]
    assert all(h["exact_reversal"] for h in straight["history"])
    assert not torch.equal(straight["log_lr"], torch.zeros_like(straight["log_lr"]))  # it moved from log(1) = 0


def test_any_task_loss_works_here_an_l2o_digits_task():
    from l2o.tasks.digits import DigitsMLP

    task = DigitsMLP(hidden=3, layers=1, batch_size=16)
    gen = torch.Generator().manual_seed(0)
    raw = task.init_params(gen)
    stream = task.batches(gen)
    batches = [next(stream) for _ in range(4)]
    hyper = Hyperparameters.constant(4, 2, lr=0.5, momentum=0.8, l2=1e-2)
    meta = lambda p: task.loss(p, (task.x_test.double(), task.y_test))  # noqa: E731
    rev = reversible_hypergradient(task.loss, raw, batches, hyper, meta)
    ref = unrolled_hypergradient(task.loss, raw, batches, hyper, meta)
    assert rev.exact_reversal
    for key in ("lr", "momentum", "init_scale", "l2"):
        torch.testing.assert_close(rev.grads[key], ref.grads[key], rtol=1e-6, atol=1e-9)
