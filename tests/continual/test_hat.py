"""HAT: binary masks at s_max, no change to blocked units under stateful optimizers, the
compensation formula, conv layers, and the sparsity regularizer."""

import math

import pytest
import torch

from l2o.continual import HAT, HATConv2d, compensation, train_sequence
from l2o.continual.hat import check_task, weight_factor

from .conftest import make_tiny_stream


def _trained_hat(stream, **kw):
    method = HAT(lr=0.1, hidden=(16, 16), **kw)
    train_sequence(method, stream, seed=0, epochs=3, batch_size=16)
    return method


def test_masks_are_binary_at_s_max_and_usage_recorded():
    stream = make_tiny_stream(tasks=2)
    method = _trained_hat(stream)
    for t in range(2):
        for gate in method.task_gates(t):
            assert torch.minimum(gate, 1 - gate).max() < 1e-3
    extras = method.extras()
    assert len(extras["mask_usage"]) == 2
    assert all(0 < u <= 1 for u in extras["mask_usage"])
    # at s = 1/s_max the same gates are all close to one half: the annealing starts soft
    for layer in method.model.layers:
        assert (layer.gate(0, 1 / method.s_max) - 0.5).abs().max() < 0.02


def test_compensation_formula():
    torch.manual_seed(0)
    s_max, s = 400.0, 3.7
    e = (torch.randn(20, dtype=torch.float64) * 0.5).requires_grad_()
    upstream = torch.randn(20, dtype=torch.float64)
    (torch.sigmoid(s * e) * upstream).sum().backward()
    compensated = e.grad * compensation(e.detach(), s, s_max)
    sig = torch.sigmoid(e.detach())
    # while |s e| < 50 the compensated gradient is s_max * sigma'(e) * dL/da, the same at any s
    torch.testing.assert_close(compensated, s_max * sig * (1 - sig) * upstream, rtol=1e-10, atol=0)
    # the clamp: (s_max/s) (cosh(clamp(s e, -50, 50)) + 1) / (cosh(e) + 1), by hand
    big = torch.tensor([0.2, -0.3], dtype=torch.float64)
    expected = [(s_max / 400) * (math.cosh(50.0) + 1) / (math.cosh(v) + 1) for v in (0.2, -0.3)]
    torch.testing.assert_close(compensation(big, 400.0, s_max), torch.tensor(expected, dtype=torch.float64))


def test_weight_factor_blocks_units_used_before():
    layer = torch.nn.Linear(3, 2)
    prev_out = torch.tensor([1.0, 0.0])
    prev_in = torch.tensor([1.0, 0.0, 1.0])
    f = weight_factor(layer, prev_out, prev_in)
    torch.testing.assert_close(f, torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    conv = HATConv2d(3, 2, 3, tasks=2)
    fc = weight_factor(conv, prev_out, prev_in)
    assert fc.shape == conv.weight.shape
    torch.testing.assert_close(fc[:, :, 1, 1], f)
    torch.testing.assert_close(weight_factor(layer, prev_out, None), torch.tensor([[0.0] * 3, [1.0] * 3]))


def test_conv_layer_gates_channels():
    torch.manual_seed(0)
    conv = HATConv2d(1, 4, 3, tasks=2, padding=1)
    with torch.no_grad():
        conv.embedding.weight[1] = torch.tensor([5.0, -5.0, 5.0, -5.0])
    y = conv(torch.randn(2, 1, 5, 5), 1, 400.0)
    assert y[:, 1].abs().max() == 0 and y[:, 3].abs().max() == 0 and y[:, 0].abs().max() > 0
    with pytest.raises(ValueError, match="never seen"):
        conv(torch.randn(2, 1, 5, 5), 2, 400.0)


@pytest.mark.parametrize("opt", ["momentum", "adam"])
def test_blocked_units_do_not_move_under_stateful_optimizers(opt):
    """Train task 0, then task 1 with the *same* optimizer (momentum / Adam state carried over, and
    weight decay): with the guard, entries blocked by task 0 stay bit-identical and task 0's
    outputs do not change; without it, they move."""
    stream = make_tiny_stream(tasks=2)
    x0 = stream[0].x_test
    results = {}
    for guard in (True, False):
        method = HAT(lr=0.05, hidden=(16, 16), guard=guard)
        method.setup(stream, seed=0)
        if opt == "adam":
            optimizer = torch.optim.Adam(method.params(), lr=0.01, weight_decay=1e-3)
        else:
            optimizer = torch.optim.SGD(method.params(), lr=0.05, momentum=0.9, weight_decay=1e-3)
        gen = torch.Generator().manual_seed(0)
        for t in range(2):
            method.begin_task(stream, t)
            if t == 1:
                before = {n: p.detach().clone() for n, p in method.model.named_parameters()}
                logits_before = method.logits(x0, 0)
                factors = method._factors
            x, y = stream[t].x_train, stream[t].y_train
            for epoch in range(3):
                order = torch.randperm(len(y), generator=gen)
                for b in range(3):
                    idx = order[b * 16:(b + 1) * 16]
                    optimizer.zero_grad(set_to_none=True)
                    method.loss(x[idx], y[idx], None, t, b, 3).backward()
                    method.before_step(t)
                    optimizer.step()
                    method.after_step(t)
            method.end_task(stream, t, gen)
        moved = {n: float(torch.cat([(p.detach() - before[n])[factors[n] == 0].abs(), torch.zeros(1)]).max())
                 for n, p in method.model.named_parameters()}
        blocked = sum(int((factors[n] == 0).sum()) for n in factors if n.endswith("weight") and "embedding" not in n)
        results[guard] = (moved, blocked, (method.logits(x0, 0) - logits_before).abs().max())
    moved, blocked, change = results[True]
    assert blocked > 20  # task 0 used units, so weights into and out of them are blocked
    assert all(v == 0.0 for v in moved.values()), moved
    assert change < 1e-5
    moved, _, change = results[False]
    assert max(moved.values()) > 1e-4 and change > 1e-4  # the leak the guard prevents


def test_sparsity_regularizer_by_hand():
    stream = make_tiny_stream(tasks=2)
    method = HAT(hidden=(2, 2))
    method.setup(stream, seed=0)
    method.prev = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])]
    gates = [torch.tensor([0.5, 0.25]), torch.tensor([1.0, 0.5])]
    # sum a (1 - prev) / sum (1 - prev) = (0.25 + 1.0 + 0.5) / 3
    assert float(method.sparsity(gates)) == pytest.approx(1.75 / 3)


def test_task_ids_never_seen_are_refused():
    with pytest.raises(ValueError, match="never seen"):
        check_task(5, 3)
    stream = make_tiny_stream(tasks=2)
    method = HAT(hidden=(4,))
    method.setup(stream, seed=0)
    with pytest.raises(ValueError, match="never seen"):
        method.logits(stream[0].x_test, 2)
    with pytest.raises(ValueError, match="never seen"):
        method.begin_task(stream, 7)
