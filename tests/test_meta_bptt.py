"""Meta-gradients of the paper's episode (one unstacked task, the sum of losses), checkpoint
helpers, and the meta-trainer configured as the paper's truncated BPTT (best-on-validation,
resume after a kill, NaN rollback)."""

import pytest
import torch

from l2o.learned.lstm import LSTMRule
from l2o.meta import episode as episode_module
from l2o.meta.checkpoint import (
    Checkpointer,
    generator_from_tensor,
    generator_to_tensor,
    nested_from_tensors,
    nested_to_tensors,
    optimizer_from_tensors,
    optimizer_to_tensors,
)
from l2o.meta.episode import SumOfLosses, start_episode
from l2o.meta.trainer import MetaConfig, MetaTrainer
from l2o.tasks.base import Task, TaskFamily
from l2o.tasks.quadratic import QuadraticFamily, QuadraticTask


class LinearTask(Task):
    """f(theta) = c . theta: a constant gradient, so second derivatives vanish."""

    def __init__(self, dim=3):
        self.c = torch.linspace(-1.0, 2.0, dim, dtype=torch.float64)

    def init_params(self, generator):
        return {"theta": torch.randn(len(self.c), generator=generator, dtype=torch.float64)}

    def loss(self, params, batch=None):
        return (self.c * params["theta"]).sum()


class Quadratic64(QuadraticTask):
    """The paper's quadratic in float64 (finite differences need the precision)."""

    def __init__(self, dim=3, seed=2):
        super().__init__(dim=dim, seed=seed, init_scale=1.0)
        self.W, self.y = self.W.double(), self.y.double()

    def init_params(self, generator):
        return {k: v.double() for k, v in super().init_params(generator).items()}


def _tiny_rule():
    torch.manual_seed(0)
    return LSTMRule(hidden_size=4, num_layers=2).double()


def _episode(rule, task, horizon=100):
    return start_episode(rule, [task], [1], horizon, stacked=False)


def _meta_loss(rule, task, steps=4, second_order=False):
    return _episode(rule, task).advance(rule, steps, SumOfLosses(), second_order=second_order).meta_loss


def _finite_difference(rule, task, name, index, second_order, eps=1e-6):
    weight = dict(rule.named_parameters())[name]
    with torch.no_grad():
        old = weight[index].item()
        weight[index] = old + eps
        plus = _meta_loss(rule, task, second_order=second_order).item()
        weight[index] = old - eps
        minus = _meta_loss(rule, task, second_order=second_order).item()
        weight[index] = old
    return (plus - minus) / (2 * eps)


CHECKED = [("cells.0.weight_ih", (3, 0)), ("cells.1.weight_hh", (5, 2)), ("readout.weight", (0, 1)),
           ("readout.bias", (0,))]


def test_second_order_meta_gradient_matches_finite_differences():
    rule, task = _tiny_rule(), Quadratic64()
    loss = _meta_loss(rule, task, second_order=True)
    grads = dict(zip([n for n, _ in rule.named_parameters()], torch.autograd.grad(loss, list(rule.parameters()))))
    for name, index in CHECKED:
        fd = _finite_difference(rule, task, name, index, second_order=True)
        assert grads[name][index].item() == pytest.approx(fd, rel=1e-4, abs=1e-7), name
    assert all(g.abs().sum() > 0 for g in grads.values())


def test_first_order_meta_gradient_is_exact_when_the_hessian_vanishes():
    # With a linear loss the optimizee gradient does not depend on theta, so dropping the
    # second-order terms loses nothing: the first-order meta-gradient is the true one.
    rule, task = _tiny_rule(), LinearTask()
    loss = _meta_loss(rule, task)
    grads = dict(zip([n for n, _ in rule.named_parameters()], torch.autograd.grad(loss, list(rule.parameters()))))
    for name, index in CHECKED:
        fd = _finite_difference(rule, task, name, index, second_order=False)
        assert grads[name][index].item() == pytest.approx(fd, rel=1e-4, abs=1e-7), name


def test_first_order_differs_from_second_order_on_a_curved_loss():
    rule, task = _tiny_rule(), Quadratic64()
    first = torch.autograd.grad(_meta_loss(rule, task), list(rule.parameters()))
    second = torch.autograd.grad(_meta_loss(rule, task, second_order=True), list(rule.parameters()))
    assert all(torch.isfinite(g).all() for g in first)
    assert sum(float(g.abs().sum()) for g in first) > 0
    assert not all(torch.allclose(a, b) for a, b in zip(first, second))


def test_episode_carries_state_across_truncations_and_stops_on_nan():
    rule, task = _tiny_rule(), Quadratic64()
    whole = _episode(rule, task).advance(rule, 6, SumOfLosses())
    episode = _episode(rule, task)
    first = episode.advance(rule, 3, SumOfLosses())
    second = episode.advance(rule, 3, SumOfLosses())
    assert episode.step == 6
    assert first.losses + second.losses == pytest.approx(whole.losses, rel=1e-12)
    assert whole.meta_loss.item() == pytest.approx(sum(whole.losses))
    bad = _episode(rule, task)
    bad.params = {"theta": torch.full((3,), float("nan"), dtype=torch.float64)}
    result = bad.advance(rule, 5, SumOfLosses())
    assert not result.finite and len(result.losses) == 1


def test_checkpoint_helpers_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = optimizer_to_tensors(opt)
    generator = torch.Generator().manual_seed(7)
    tensors["gen"] = generator_to_tensor(generator)
    nested = {"layer.0.weight": {"h": torch.randn(2, 3)}, "b": {"h": torch.ones(1), "c": torch.zeros(2)}}
    n_tensors, index = nested_to_tensors(nested)
    tensors.update(n_tensors)
    ckpt = Checkpointer(tmp_path / "ck", every=3)
    assert ckpt.load_last() is None and ckpt.load_best() is None
    assert [s for s in range(1, 10) if ckpt.due(s)] == [3, 6, 9]
    ckpt.save(6, tensors, {"optim": meta, "index": index})
    loaded, loaded_meta = ckpt.load_last()
    assert loaded_meta["step"] == 6
    opt2 = torch.optim.Adam(model.parameters(), lr=0.5)
    optimizer_from_tensors(opt2, loaded, loaded_meta["optim"])
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.param_groups[0]["betas"] == (0.8, 0.9)
    assert list(opt2.state) == list(model.parameters())
    for param in model.parameters():
        a, b = opt.state[param], opt2.state[param]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.rand(3, generator=generator), torch.rand(3, generator=generator_from_tensor(loaded["gen"])))
    back = nested_from_tensors(loaded, loaded_meta["index"])
    assert back.keys() == nested.keys()
    assert all(torch.equal(back[n][k], nested[n][k]) for n in nested for k in nested[n])
    with pytest.raises(ValueError, match="every"):
        Checkpointer(tmp_path, every=0)


CONFIG = dict(unroll=5, horizon=20, outer_steps=9, val_every=4, val_episodes=1, checkpoint_every=3)


def _train(directory, config=None, resume=False, family=None):
    """The paper's meta-training (as ``l2o reproduce l2l`` configures it); the rule ends holding
    the best-on-validation weights."""
    torch.manual_seed(0)
    rule = LSTMRule(hidden_size=6)
    config = MetaConfig(**{"estimator": "bptt", "meta_loss": "sum", "batch_size": None, "groups": 1, "clip": None,
                           "val_steps": None, "meta_lr": 1e-3, "max_rollbacks": 10, **(config or CONFIG)})
    trainer = MetaTrainer(rule, family or QuadraticFamily(dim=4), config, directory=directory,
                          log=lambda message: messages.append(message))
    summary = trainer.train(resume=resume, progress_bar=False)
    rule.load_state_dict(trainer.best_state())
    return rule, summary


messages: list[str] = []


def test_best_on_validation_is_kept(tmp_path):
    rule, summary = _train(tmp_path)
    assert [s for s, _ in summary.val_history] == [4, 8, 9]
    best_step, best_val = min(summary.val_history, key=lambda sv: sv[1])
    assert (summary.best_step, summary.best_val) == (best_step, best_val)
    best, meta = Checkpointer(tmp_path, 3).load_best()
    assert meta["step"] == best_step
    assert all(torch.equal(best[k], v) for k, v in rule.state_dict().items())
    assert summary.inner_steps == 9 * 5 and summary.inner_steps_per_second > 0


class _Killed(Exception):
    pass


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    reference_rule, reference = _train(tmp_path / "ref")
    # Kill the run in the middle of outer step 8 (after the checkpoint of step 6, mid-episode).
    calls = {"n": 0}
    real_advance = episode_module.Episode.advance

    def dying_advance(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 8 + 1:  # 8th training truncation, plus the validation episode at step 4
            raise _Killed
        return real_advance(*args, **kwargs)

    monkeypatch.setattr(episode_module.Episode, "advance", dying_advance)
    with pytest.raises(_Killed):
        _train(tmp_path / "run")
    monkeypatch.setattr(episode_module.Episode, "advance", real_advance)
    _, last_meta = Checkpointer(tmp_path / "run", 3).load_last()
    assert last_meta["step"] == 6 and last_meta["groups"][0]["step"] == 2 * 5  # mid-episode
    messages.clear()
    resumed_rule, resumed = _train(tmp_path / "run", resume=True)
    assert any("resumed" in m and "step 6" in m for m in messages)
    assert resumed.history == reference.history
    assert resumed.val_history == reference.val_history
    for (k, a), b in zip(reference_rule.state_dict().items(), resumed_rule.state_dict().values()):
        assert torch.equal(a, b), k


class _NaNOnce(TaskFamily):
    """Quadratics, but the second training episode's loss is NaN."""

    def __init__(self):
        self.family = QuadraticFamily(dim=4)
        self.calls = 0

    def sample(self, generator):
        task = self.family.sample(generator)
        self.calls += 1
        if self.calls == 2:
            task.y = task.y * float("nan")
        return task


def test_nan_meta_loss_rolls_back_to_the_last_checkpoint(tmp_path):
    messages.clear()
    config = {**CONFIG, "val_every": 0}
    rule, summary = _train(tmp_path, config=config, family=_NaNOnce())
    assert summary.rollbacks == 1
    assert any("non-finite" in m and "rolled back to the checkpoint of outer step 3" in m for m in messages)
    assert summary.outer_steps == 9
    assert all(torch.isfinite(v).all() for v in rule.state_dict().values())
    tensors, meta = Checkpointer(tmp_path, 3).load_last()
    assert meta["step"] == 9 and all(torch.isfinite(v).all() for k, v in tensors.items() if v.is_floating_point())
