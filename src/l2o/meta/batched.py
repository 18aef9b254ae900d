"""Batched unrolls: ``B`` task instances advanced together by one learned rule.

The optimizee parameters of ``B`` instances that share an architecture are stacked along a
new leading dimension. One step computes the ``B`` losses in one batched forward pass (the
task's ``per_task_loss`` when it has one, else ``torch.func.vmap`` of its ``loss``), the
``B`` gradients with one backward pass (the losses are independent, so the gradient of
their sum is the stack of the per-instance gradients), and applies the rule once to the
stacked tensors with ``batch_dims=1`` (normalization statistics per instance). The Python
overhead of a step is paid once for the whole batch, so throughput grows with ``B``.

The meta-loss of a truncation is the mean over its steps and instances of
``log(f_t / f_0)``, the log of the loss relative to the instance's initial loss, so that
problems with different loss scales weigh alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from l2o.learned.adaptation import ADAPT_KEYS, check_adapt, next_log_scale
from l2o.learned.base import LearnedRule, ParamDict, StateDict
from l2o.tasks.base import SupervisedTask, Task

#: log-ratio clamp: a loss 1e4 times its initial value counts as diverged.
MAX_LOG_RATIO = 9.2


def stack_dicts(dicts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack same-keyed tensor dicts along a new leading dimension."""
    return {k: torch.stack([d[k] for d in dicts]) for k in dicts[0]}


def stack_batches(batches: list[Any]) -> Any:
    """Stack the per-instance batches (tuples of tensors, or None for full-batch tasks)."""
    first = batches[0]
    if first is None:
        return None
    if isinstance(first, (tuple, list)):
        return tuple(torch.stack([b[i] for b in batches]) for i in range(len(first)))
    return torch.stack(batches)


def batched_loss_fn(task: Task) -> Callable[[ParamDict, Any], Tensor]:
    """A function ``(stacked params, stacked batch) -> (B,) losses`` for ``task``'s architecture."""
    per_task = getattr(task, "per_task_loss", None)
    if per_task is not None:
        return per_task
    return torch.func.vmap(task.loss)


@dataclass
class BatchedEpisode:
    """``B`` instances being trained, and where they stand.

    Attributes:
        tasks: the instances (same parameter shapes).
        params, state: stacked optimizee parameters and rule state.
        step: inner steps done so far (all instances advance together).
        horizon: the episode's length; it ends when ``step >= horizon``.
        initial_loss: (B,) loss of each instance at its initialisation (meta-loss normalizer).
        generators: one per instance (minibatch streams; kept for checkpoints).
        device: where the parameters, the state and the minibatches live.
        adapt: rate of the per-tensor step-size adaptation on top of the rule
            (:mod:`l2o.learned.adaptation`; 0: off); its state is kept in ``state`` beside the
            rule's, one log multiplier per task and tensor.
    """

    tasks: list[Task]
    params: ParamDict
    state: StateDict
    step: int
    horizon: int
    initial_loss: Tensor
    generators: list[torch.Generator]
    streams: list[Iterator[Any]] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    adapt: float = 0.0
    # (x, y, n, batch size) of the training data all instances share, on ``device``; () when they
    # share none; None until the first batch.
    _data: tuple | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.step >= self.horizon

    def next_batch(self) -> Any:
        if self._data is None:
            shared = _shared_minibatch_data(self.tasks)
            self._data = () if shared is None else (shared[0].to(self.device), shared[1].to(self.device), *shared[2:])
        if self._data:
            # Same draws as SupervisedTask.batches, but one gather for the whole batch of tasks.
            x, y, n, size = self._data
            idx = torch.stack([torch.randint(0, n, (size,), generator=g) for g in self.generators])
            # index_select on the flat indices: the same rows as x[idx], several times faster on the CPU
            flat = idx.view(-1).to(self.device)
            return x.index_select(0, flat).view(*idx.shape, *x.shape[1:]), y.index_select(0, flat).view(idx.shape)
        batch = stack_batches([next(s) for s in self.streams])
        if self.device.type == "cpu":
            return batch
        if batch is None:
            raise ValueError(f"{type(self.tasks[0]).__name__} keeps its data to itself (its batches are None), so its "
                             f"episodes can only run on the CPU, not on {self.device}")
        return tuple(b.to(self.device) for b in batch) if isinstance(batch, tuple) else batch.to(self.device)

    def clone(self) -> BatchedEpisode:
        """An independent copy (same tasks; generator states copied, so the same batches follow)."""
        gens = []
        for g in self.generators:
            h = torch.Generator()
            h.set_state(g.get_state())
            gens.append(h)
        return BatchedEpisode(self.tasks, dict(self.params), {k: dict(v) for k, v in self.state.items()}, self.step,
                              self.horizon, self.initial_loss, gens, [t.batches(h) for t, h in zip(self.tasks, gens)],
                              self.device, self.adapt, self._data)


def _shared_minibatch_data(tasks: list[Task]):
    """(x, y, n, batch_size) when every task draws minibatches the SupervisedTask way from the
    very same training tensors (e.g. digits instances), else None."""
    first = tasks[0]
    if not isinstance(first, SupervisedTask) or type(first).batches is not SupervisedTask.batches:
        return None
    size, n = first.batch_size, first.x_train.shape[0]
    if size is None or size >= n:
        return None
    for t in tasks[1:]:
        if (type(t).batches is not SupervisedTask.batches or t.x_train is not first.x_train
                or t.y_train is not first.y_train or t.batch_size != size):
            return None
    return first.x_train, first.y_train, n, size


def start_episode(rule: LearnedRule, tasks: list[Task], seeds: list[int], horizon: int,
                  dtype: torch.dtype | None = None, adapt: float = 0.0) -> BatchedEpisode:
    """Initialise ``tasks`` (instance ``i`` seeded by ``seeds[i]``) for a ``horizon``-step episode.

    ``dtype`` casts the initial parameters (e.g. float64 for gradient checks; the task's data
    must have the same dtype). The episode runs on the device of the rule's parameters.
    ``adapt``: the step-size adaptation's rate (see :class:`BatchedEpisode`).
    """
    adapt = check_adapt(adapt)
    if len(tasks) != len(seeds) or not tasks:
        raise ValueError(f"need one seed per task and at least one task, got {len(tasks)} tasks and {len(seeds)} seeds")
    device = next((p.device for p in rule.parameters()), torch.device("cpu"))
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    initial = [t.init_params(g) for t, g in zip(tasks, gens)]
    shapes = [{k: tuple(v.shape) for k, v in p.items()} for p in initial]
    for i, other in enumerate(shapes[1:], 1):
        if other != shapes[0]:
            raise ValueError(f"the tasks of a batched episode must have the same parameters to stack them: task 0 has "
                             f"{shapes[0]}, task {i} has {other} (a family of several architectures draws one "
                             f"architecture per batch in its sample_batch)")
    params = stack_dicts(initial)
    params = {k: v.to(device=device, dtype=dtype) for k, v in params.items()}
    init_batched = getattr(rule, "init_state_batched", None)
    # A coordinatewise rule without per-tensor statistics treats the task axis like any other.
    state = init_batched(params, batch_dims=1) if init_batched else rule.init_state(params)
    if adapt:
        for name, p in params.items():
            state[name] = {**state[name], "log_scale": p.new_zeros(len(tasks)), "prev_step": torch.zeros_like(p)}
    streams = [t.batches(g) for t, g in zip(tasks, gens)]
    episode = BatchedEpisode(tasks, params, state, 0, int(horizon), torch.ones(len(tasks)), gens, streams, device, adapt)
    with torch.no_grad():
        episode.initial_loss = batched_loss_fn(tasks[0])(params, episode.next_batch()).detach().clamp_min(1e-8)
    return episode


@dataclass
class BatchedUnrollResult:
    """What :func:`batched_unroll` returns.

    Attributes:
        meta_loss: mean over steps and instances of ``log(f_t / f_0)`` (attached to the rule's graph
            when grad is enabled); losses are measured after each update.
        losses: per step, the mean raw loss over instances (floats).
        finite: False if a loss or parameter became NaN/Inf.
    """

    meta_loss: Tensor
    losses: list[float]
    finite: bool


def _rule_update(rule: LearnedRule, grads: ParamDict, state: StateDict, params: ParamDict):
    if hasattr(rule, "init_state_batched"):  # rules with per-tensor statistics take batch_dims
        return rule.update(grads, state, params, batch_dims=1)
    return rule.update(grads, state, params)


def _adapted_update(rule: LearnedRule, grads: ParamDict, state: StateDict, params: ParamDict, kappa: float):
    """The rule's step with each task's tensors' steps scaled by their adapted multipliers
    (:mod:`l2o.learned.adaptation`). The multipliers take no part in the meta-gradient (their
    cosine is detached): the rule is trained for the steps it makes under them."""
    rule_state = {n: {k: v for k, v in s.items() if k not in ADAPT_KEYS} for n, s in state.items()}
    new_params, new_state = _rule_update(rule, grads, rule_state, params)
    for n, p in params.items():
        log_scale = next_log_scale(state[n]["log_scale"], grads[n].detach(), state[n]["prev_step"].detach(), kappa,
                                   batch_dims=1)
        step = (p - new_params[n]) * torch.exp(log_scale).view(-1, *([1] * (p.dim() - 1)))  # p_old - p_new
        new_params[n] = p - step
        new_state[n] = {**new_state[n], "log_scale": log_scale, "prev_step": step}
    return new_params, new_state


def batched_unroll(rule: LearnedRule, episode: BatchedEpisode, steps: int, second_order: bool = False) -> BatchedUnrollResult:
    """Advance ``episode`` by ``steps`` updates of ``rule`` (in place); return the meta-loss.

    Under ``torch.no_grad()`` this is the forward-only unroll that ES/PES use. The graph is cut
    at the start (the episode's tensors are detached first): truncated BPTT.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    loss_fn = batched_loss_fn(episode.tasks[0])
    params = {k: v.detach() for k, v in episode.params.items()}
    state = {k: {kk: vv.detach() for kk, vv in s.items()} for k, s in episode.state.items()}
    grad_on = torch.is_grad_enabled()
    terms, losses = [], []
    finite = True
    names = list(params)
    batch = episode.next_batch()
    for t in range(steps + 1):
        with torch.enable_grad():
            inputs = {k: (v if v.requires_grad else v.detach().requires_grad_(True)) for k, v in params.items()}
            per_task = loss_fn(inputs, batch)
            if t > 0:  # the loss after each update is the meta-objective
                ratio = torch.log(per_task.clamp_min(1e-30) / episode.initial_loss).clamp(max=MAX_LOG_RATIO)
                terms.append(ratio.mean() if grad_on else ratio.detach().mean())
                losses.append(float(per_task.detach().mean()))
                if not bool(torch.isfinite(per_task.detach()).all()):
                    finite = False
                    break
            if t == steps:
                break
            grads = torch.autograd.grad(per_task.sum(), [inputs[n] for n in names], create_graph=second_order and grad_on,
                                        retain_graph=grad_on, allow_unused=True)
        grads = {n: (g if g is not None else torch.zeros_like(inputs[n])) for n, g in zip(names, grads)}
        if not second_order:
            grads = {n: g.detach() for n, g in grads.items()}
        if not grad_on:
            inputs = {k: v.detach() for k, v in inputs.items()}
        if episode.adapt:
            params, state = _adapted_update(rule, grads, state, inputs, episode.adapt)
        else:
            params, state = _rule_update(rule, grads, state, inputs)
        batch = episode.next_batch()
    done = len(losses)
    if finite:
        finite = all(bool(torch.isfinite(p.detach()).all()) for p in params.values())
    episode.params = {k: v.detach() for k, v in params.items()}
    episode.state = {k: {kk: vv.detach() for kk, vv in s.items()} for k, s in state.items()}
    episode.step += done
    meta_loss = torch.stack(terms).mean() if terms else torch.zeros(())
    return BatchedUnrollResult(meta_loss, losses, finite)


def looped_unroll(rule: LearnedRule, episodes: list[BatchedEpisode], steps: int) -> list[BatchedUnrollResult]:
    """The same work one instance at a time (each episode holding one task): the reference
    that batched unrolls are compared against in tests and benchmarks."""
    return [batched_unroll(rule, e, steps) for e in episodes]


__all__ = ["BatchedEpisode", "BatchedUnrollResult", "start_episode", "batched_unroll", "looped_unroll",
           "stack_dicts", "stack_batches", "batched_loss_fn"]
