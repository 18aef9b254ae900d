"""The copying task: data layout, the Task protocol, h-detach wiring, and that it is learnable."""

import math

import pytest
import torch

import l2o.tasks
from l2o.nn import HDetachLSTM
from l2o.tasks.copying import CopyingTask
from l2o.train import train


def test_sequence_layout():
    task = CopyingTask(delay=6, copy_length=3, num_symbols=5, eval_size=4)
    x, y = task.sample(10, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (10, task.length) and task.length == 12
    assert ((x[:, :3] >= 1) & (x[:, :3] <= 5)).all()
    assert (x[:, 3:8] == 0).all() and (x[:, 8] == 6).all() and (x[:, 9:] == 0).all()
    assert (y[:, :9] == 0).all() and torch.equal(y[:, 9:], x[:, :3])
    assert task.baseline_loss == pytest.approx(3 * math.log(5) / 12)


def test_task_protocol_and_seeding():
    task = l2o.tasks.get("copying", delay=4, hidden=8, batch_size=5, detach_prob=0.5, eval_size=20)
    assert (task.name, task.metric, task.batch_size) == ("copying", "test_loss", 5) and task.steps > 0
    p1 = task.init_params(torch.Generator().manual_seed(3))
    p2 = task.init_params(torch.Generator().manual_seed(3))
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert p1["lstm.weight_hh_l0"].shape == (32, 8) and p1["out.weight"].shape == (task.classes, 8)
    b1 = next(task.batches(torch.Generator().manual_seed(4)))
    b2 = next(task.batches(torch.Generator().manual_seed(4)))
    assert all(torch.equal(a, b) for a, b in zip(b1, b2))
    inputs, targets, mask = b1
    assert inputs.shape == (5, task.length) and mask.shape == (task.length,) and mask.dtype == torch.bool
    loss = task.loss(p1, b1)
    assert loss.dim() == 0 and abs(loss.item() - math.log(task.classes)) < 0.5  # near-uniform at init
    result = task.evaluate(p1, "test")
    assert set(result) == {"loss", "accuracy"} and 0 <= result["accuracy"] <= 1
    assert task.evaluate(p1, "train") != result  # different held-out samples
    with pytest.raises(ValueError, match="split"):
        task.evaluate(p1, "valid")


def test_loss_uses_hdetach_module_semantics():
    """The functional loss with a detach mask has HDetachLSTM's gradients."""
    task = CopyingTask(delay=5, copy_length=2, hidden=6, batch_size=3, detach_prob=0.5)
    params = {k: v.double().requires_grad_(True) for k, v in task.init_params(torch.Generator().manual_seed(0)).items()}
    inputs, targets, mask = next(task.batches(torch.Generator().manual_seed(1)))
    assert mask.any() and not mask.all()
    grad_task = torch.autograd.grad(task.loss(params, (inputs, targets, mask)), params["lstm.weight_hh_l0"])[0]

    lstm = HDetachLSTM(task.vocab, 6, batch_first=True).double()
    lstm.load_state_dict({k.removeprefix("lstm."): v.detach() for k, v in params.items() if k.startswith("lstm.")})
    x = torch.nn.functional.one_hot(inputs, task.vocab).double()
    out, _ = lstm(x, detach_masks=mask.unsqueeze(0))
    logits = torch.nn.functional.linear(out, params["out.weight"].detach(), params["out.bias"].detach())
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, task.classes), targets.reshape(-1))
    loss.backward()
    torch.testing.assert_close(grad_task, lstm.weight_hh_l0.grad, rtol=0, atol=1e-12)
    no_detach = torch.autograd.grad(task.loss(params, (inputs, targets, torch.zeros_like(mask))), params["lstm.weight_hh_l0"])[0]
    assert not torch.allclose(no_detach, grad_task)


@pytest.fixture
def one_thread():
    # Tiny sequential ops: extra threads only add synchronisation cost.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_short_copying_problem_is_learned(one_thread):
    torch.manual_seed(0)
    task = CopyingTask(delay=3, copy_length=2, num_symbols=4, hidden=16, batch_size=32, eval_size=500)
    result = train(task, lambda p: torch.optim.Adam(p, lr=1e-2), steps=300, seed=0)
    assert not result.diverged
    assert result.final_test["loss"] < 0.8 * task.baseline_loss
    assert result.final_test["accuracy"] > 0.5  # chance is 1/4


def test_loss_on_copied_positions_only():
    task_all = CopyingTask(delay=4, copy_length=3, num_symbols=5, hidden=8, eval_size=50)
    task_copy = CopyingTask(delay=4, copy_length=3, num_symbols=5, hidden=8, eval_size=50, loss_on="copy")
    assert task_copy.baseline_loss == pytest.approx(math.log(5))
    params = task_all.init_params(torch.Generator().manual_seed(0))
    inputs, targets, mask = next(task_all.batches(torch.Generator().manual_seed(1)))
    logits = task_all.logits(params, inputs)
    per_position = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    torch.testing.assert_close(task_all.loss(params, (inputs, targets, mask)), per_position.mean())
    torch.testing.assert_close(task_copy.loss(params, (inputs, targets, mask)), per_position[:, -3:].mean())
    # Blank positions do not count: changing their targets leaves the copy loss unchanged.
    other = targets.clone()
    other[:, :-3] = 1
    assert task_copy.loss(params, (inputs, other, mask)) == task_copy.loss(params, (inputs, targets, mask))
    assert task_all.loss(params, (inputs, other, mask)) != task_all.loss(params, (inputs, targets, mask))
    e_all, e_copy = task_all.evaluate(params), task_copy.evaluate(params)
    assert e_all["accuracy"] == e_copy["accuracy"] and e_all["loss"] != e_copy["loss"]
    with pytest.raises(ValueError, match="loss_on"):
        CopyingTask(loss_on="blanks")


@pytest.mark.parametrize("kwargs,word", [({"delay": 0}, "delay"), ({"copy_length": 0}, "copy_length"),
                                         ({"num_symbols": 1}, "num_symbols"), ({"detach_prob": -0.1}, "detach_prob")])
def test_bad_arguments_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        CopyingTask(**kwargs)
