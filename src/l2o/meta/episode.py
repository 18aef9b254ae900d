"""The episode of meta-training: task instances trained together by a learned rule.

An :class:`Episode` holds ``B`` task instances that share an architecture and where they stand:
their parameters stacked along a new leading dimension, the rule's state, the step reached and
one minibatch generator per instance. :meth:`Episode.advance` takes ``K`` steps: at each step
the ``B`` losses in one batched forward pass (the task's ``per_task_loss`` when it has one,
else ``torch.func.vmap`` of its ``loss``), their gradients in one backward pass (the losses are
independent, so the gradient of their sum is the stack of the per-instance gradients), and one
call of the rule on the stacked tensors (``batch_dims=1``: per-instance statistics).

The paper's setting (Andrychowicz et al. 2016: one optimizee per episode) is the batch of one
without the leading dimension (``stacked=False``): the same loop on the task's own ``loss``
and the rule's plain ``update``, so its numbers are those of the unbatched unroll.

The meta-loss is a parameter (:class:`MetaLoss`): it turns the losses ``f(theta_t, batch_t)``
measured before each of the ``K`` updates (t = 0..K-1; t = 0 is the truncation's start) into
the scalar whose gradient the estimators take, and scores validation episodes.

- :class:`SumOfLosses`: the paper's sum of the optimizee losses (all weights 1); validation:
  the mean loss over the horizon.
- :class:`MeanLogRatio`: the mean over steps and instances of ``log(f_t / f_0)`` (``f_0``: the
  instance's loss at the episode's first step), so problems of different loss scales weigh
  alike; validation: ``log(f_T / f_0)`` after the horizon.

The graph is cut at the start of :meth:`advance` (truncated BPTT). Under ``torch.no_grad()``
it is the forward-only unroll of ES and PES. Optimizee gradients are inputs of the rule unless
``second_order``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from l2o.learned.base import LearnedRule, ParamDict, StateDict
from l2o.tasks.base import SupervisedTask, Task

#: log-ratio clamp of :class:`MeanLogRatio`: a loss 1e4 times its initial value counts as diverged.
MAX_LOG_RATIO = 9.2


# ---------------------------------------------------------------------------------------------
# Meta-losses


class MetaLoss:
    """How the per-step losses of a truncation become the meta-loss (see module docstring)."""

    name = "meta-loss"
    #: what :meth:`validation` scores
    validation_name = "score"

    def term(self, per_task: Tensor, initial: Tensor) -> Tensor:
        """The contribution of one step's ``(B,)`` losses (attached to the graph)."""
        raise NotImplementedError

    def reduce(self, terms: list[Tensor]) -> Tensor:
        """The meta-loss from the steps' terms."""
        raise NotImplementedError

    def per_step(self, meta_loss: float, steps: int) -> float:
        """The meta-loss as a number per inner step (the history's value)."""
        return meta_loss

    def validation(self, losses: list[float], final: float, initial: float) -> float:
        """The score of one validation episode (lower is better) from its per-step mean losses,
        its loss after the last step and its mean initial loss."""
        raise NotImplementedError


class SumOfLosses(MetaLoss):
    """The sum of the optimizee losses (Andrychowicz et al. 2016, weights w_t = 1)."""

    name = "sum of losses"
    validation_name = "mean loss over the horizon"

    def term(self, per_task, initial):
        return per_task.sum()

    def reduce(self, terms):
        return torch.stack(terms).sum()

    def per_step(self, meta_loss, steps):
        return meta_loss / steps

    def validation(self, losses, final, initial):
        return sum(losses) / len(losses)


class MeanLogRatio(MetaLoss):
    """The mean over steps and instances of ``log(f_t / f_0)``, clamped at :data:`MAX_LOG_RATIO`."""

    name = "mean log(f_t/f_0)"
    validation_name = "mean log(f_T/f_0)"

    def term(self, per_task, initial):
        return torch.log(per_task.clamp_min(1e-30) / initial).clamp(max=MAX_LOG_RATIO).mean()

    def reduce(self, terms):
        return torch.stack(terms).mean()

    def validation(self, losses, final, initial):
        if not math.isfinite(final):
            return math.inf
        return math.log(max(final, 1e-30)) - math.log(initial)


META_LOSSES: dict[str, type[MetaLoss]] = {"sum": SumOfLosses, "log_ratio": MeanLogRatio}


# ---------------------------------------------------------------------------------------------
# Stacking


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


def copy_generator(generator: torch.Generator) -> torch.Generator:
    """A CPU generator in the same state."""
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    return copy


# ---------------------------------------------------------------------------------------------
# The episode


@dataclass
class StepResult:
    """What :meth:`Episode.advance` returns.

    Attributes:
        meta_loss: the meta-loss of the steps taken (attached to the rule's graph when grad is on).
        losses: per step, the mean loss over instances before the step's update (floats).
        finite: False if a loss or a parameter became NaN/Inf (the steps stop there).
        final: with ``final=True``, the mean loss after the last update (else NaN).
    """

    meta_loss: Tensor
    losses: list[float]
    finite: bool
    final: float = math.nan


@dataclass
class Episode:
    """``B`` task instances being trained by a rule, and where they stand.

    Attributes:
        tasks: the instances (same parameter shapes).
        params, state: optimizee parameters and rule state (stacked along dimension 0 when
            ``stacked``; else those of the one task).
        step: inner steps done so far (all instances advance together).
        horizon: the episode's length; it ends when ``step >= horizon``.
        generators: one per instance (its minibatch stream; kept in checkpoints).
        index: the episode's number in its trainer's stream (recreates ``tasks`` on resume).
        stacked: parameters carry a leading instance dimension.
        initial_loss: (B,) loss of each instance at the episode's first step (None before it).
        device: where parameters, state and minibatches live.
        adapt: rate of the per-tensor step-size adaptation the rule runs under (0: off); its
            state sits in ``state`` beside the rule's.
    """

    tasks: list[Task]
    params: ParamDict
    state: StateDict
    step: int
    horizon: int
    generators: list[torch.Generator]
    index: int = 0
    stacked: bool = True
    initial_loss: Tensor | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    adapt: float = 0.0
    _streams: list[Iterator[Any]] | None = field(default=None, repr=False)
    # (x, y, n, batch size) of the training data all instances share, on ``device``; () when they
    # share none; None until the first batch.
    _data: tuple | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.step >= self.horizon

    @property
    def size(self) -> int:
        return len(self.tasks)

    def loss_fn(self) -> Callable[[ParamDict, Any], Tensor]:
        """``(params, batch) -> (B,)`` losses."""
        if self.stacked:
            return batched_loss_fn(self.tasks[0])
        task = self.tasks[0]
        return lambda params, batch: task.loss(params, batch).reshape(1)

    def next_batch(self) -> Any:
        if not self.stacked:
            if self._streams is None:
                self._streams = [self.tasks[0].batches(self.generators[0])]
            return next(self._streams[0])
        if self._data is None:
            shared = _shared_minibatch_data(self.tasks)
            self._data = () if shared is None else (shared[0].to(self.device), shared[1].to(self.device), *shared[2:])
        if self._data:
            # Same draws as SupervisedTask.batches, but one gather for the whole batch of tasks.
            x, y, n, size = self._data
            idx = torch.stack([torch.randint(0, n, (size,), generator=g) for g in self.generators])
            flat = idx.view(-1).to(self.device)  # index_select: the rows of x[idx], faster on the CPU
            return x.index_select(0, flat).view(*idx.shape, *x.shape[1:]), y.index_select(0, flat).view(idx.shape)
        if self._streams is None:
            self._streams = [t.batches(g) for t, g in zip(self.tasks, self.generators)]
        batch = stack_batches([next(s) for s in self._streams])
        if self.device.type == "cpu":
            return batch
        if batch is None:
            raise ValueError(f"{type(self.tasks[0]).__name__} keeps its data to itself (its batches are None), so its "
                             f"episodes can only run on the CPU, not on {self.device}")
        return tuple(b.to(self.device) for b in batch) if isinstance(batch, tuple) else batch.to(self.device)

    def clone(self) -> Episode:
        """An independent copy (same tasks; generator states copied, so the same batches follow)."""
        return Episode(self.tasks, dict(self.params), {k: dict(v) for k, v in self.state.items()}, self.step,
                       self.horizon, [copy_generator(g) for g in self.generators], self.index, self.stacked,
                       self.initial_loss, self.device, self.adapt, None, self._data)

    # -- checkpoints ----------------------------------------------------------------------------
    def to_tensors(self, prefix: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything but the tasks (recreated from ``index``) as tensors + JSON."""
        from l2o.meta.checkpoint import nested_to_tensors

        p_tensors, p_index = nested_to_tensors({k: {"value": v} for k, v in self.params.items()},
                                               prefix=f"{prefix}params/")
        s_tensors, s_index = nested_to_tensors(self.state, prefix=f"{prefix}state/")
        tensors = {k: v.detach().cpu().clone() for k, v in {**p_tensors, **s_tensors}.items()}
        for i, g in enumerate(self.generators):
            tensors[f"{prefix}gen/{i}"] = g.get_state().clone()
        if self.initial_loss is not None:
            tensors[f"{prefix}initial_loss"] = self.initial_loss.detach().cpu().clone()
        meta = {"index": self.index, "step": self.step, "horizon": self.horizon, "params": p_index,
                "state": s_index, "generators": len(self.generators)}
        return tensors, meta

    @classmethod
    def from_tensors(cls, tasks: list[Task], tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str, *,
                     stacked: bool, device: torch.device, adapt: float) -> Episode:
        from l2o.meta.checkpoint import generator_from_tensor, nested_from_tensors

        params = {k: v["value"].to(device) for k, v in
                  nested_from_tensors(tensors, meta["params"], prefix=f"{prefix}params/").items()}
        state = {k: {kk: vv.to(device) for kk, vv in s.items()}
                 for k, s in nested_from_tensors(tensors, meta["state"], prefix=f"{prefix}state/").items()}
        gens = [generator_from_tensor(tensors[f"{prefix}gen/{i}"]) for i in range(meta["generators"])]
        initial = tensors.get(f"{prefix}initial_loss")
        return cls(tasks, params, state, int(meta["step"]), int(meta["horizon"]), gens, int(meta["index"]), stacked,
                   None if initial is None else initial.to(device), device, adapt)

    # -- stepping -------------------------------------------------------------------------------
    def advance(self, rule: LearnedRule, steps: int, meta_loss: MetaLoss, second_order: bool = False,
                final: bool = False) -> StepResult:
        """Take ``steps`` updates of ``rule`` (in place); return the meta-loss of those steps.

        With ``final``, the loss after the last update is measured too (validation).
        """
        from l2o.learned.adaptation import adapted

        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        loss_fn = self.loss_fn()
        update = adapted(rule, self.adapt, batch_dims=1 if self.stacked else 0)
        params = {k: v.detach() for k, v in self.params.items()}
        state = {k: {kk: vv.detach() for kk, vv in s.items()} for k, s in self.state.items()}
        grad_on = torch.is_grad_enabled()
        terms: list[Tensor] = []
        losses: list[float] = []
        finite = True
        names = list(params)
        done = 0
        for _ in range(steps):
            batch = self.next_batch()
            with torch.enable_grad():
                # A parameter that does not depend on anything yet (a truncation start) needs
                # requires_grad only to get its gradient; that does not connect it to the rule.
                inputs = {k: (v if v.requires_grad else v.detach().requires_grad_(True)) for k, v in params.items()}
                per_task = loss_fn(inputs, batch)
                if self.initial_loss is None:
                    self.initial_loss = per_task.detach().clamp_min(1e-8)
                term = meta_loss.term(per_task, self.initial_loss)
                terms.append(term if grad_on else term.detach())
                losses.append(float(per_task.detach().mean()))
                if not bool(torch.isfinite(per_task.detach()).all()):
                    finite = False
                    break
                grads = torch.autograd.grad(per_task.sum(), [inputs[n] for n in names],
                                            create_graph=second_order and grad_on, retain_graph=grad_on,
                                            allow_unused=True)
            grads = {n: (g if g is not None else torch.zeros_like(inputs[n])) for n, g in zip(names, grads)}
            if not second_order:
                grads = {n: g.detach() for n, g in grads.items()}
            if not grad_on:
                inputs = {k: v.detach() for k, v in inputs.items()}
            params, state = update(grads, state, inputs)
            done += 1
        if finite:
            finite = all(bool(torch.isfinite(p.detach()).all()) for p in params.values())
        last = math.nan
        if final and finite:
            with torch.no_grad():
                last = float(loss_fn(params, self.next_batch()).mean())
        self.params = {k: v.detach() for k, v in params.items()}
        self.state = {k: {kk: vv.detach() for kk, vv in s.items()} for k, s in state.items()}
        self.step += done
        return StepResult(meta_loss.reduce(terms), losses, finite, last)


def start_episode(rule: LearnedRule, tasks: list[Task], seeds: list[int] | None, horizon: int, *,
                  generators: list[torch.Generator] | None = None, stacked: bool = True,
                  dtype: torch.dtype | None = None, adapt: float = 0.0, index: int = 0) -> Episode:
    """Initialise ``tasks`` for a ``horizon``-step episode on the device of the rule's weights.

    Instance ``i`` draws its initial parameters and minibatches from ``generators[i]``, or from a
    generator seeded with ``seeds[i]``. ``stacked=False`` (one task): the paper's unstacked
    episode. ``dtype`` casts the initial parameters (float64 for gradient checks; the task's
    data must have the same dtype). ``adapt``: the step-size adaptation's rate.
    """
    from l2o.learned.adaptation import check_adapt, init_adapt_state

    adapt = check_adapt(adapt)
    if generators is None:
        if seeds is None or len(tasks) != len(seeds):
            raise ValueError(f"need one seed per task, got {len(tasks)} tasks and {seeds}")
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    if not tasks or len(generators) != len(tasks):
        raise ValueError(f"need one generator per task and at least one task, got {len(tasks)} tasks")
    if not stacked and len(tasks) != 1:
        raise ValueError(f"an unstacked episode holds one task, got {len(tasks)}")
    device = next((p.device for p in rule.parameters()), torch.device("cpu"))
    initial = [t.init_params(g) for t, g in zip(tasks, generators)]
    if stacked:
        shapes = [{k: tuple(v.shape) for k, v in p.items()} for p in initial]
        for i, other in enumerate(shapes[1:], 1):
            if other != shapes[0]:
                raise ValueError(f"the tasks of a batched episode must have the same parameters to stack them: task 0 "
                                 f"has {shapes[0]}, task {i} has {other} (a family of several architectures draws one "
                                 f"architecture per batch in its sample_batch)")
        params = stack_dicts(initial)
    else:
        params = initial[0]
    params = {k: v.to(device=device, dtype=dtype) for k, v in params.items()}
    state = rule.init_state_batched(params, batch_dims=1 if stacked else 0)
    if adapt:
        state = init_adapt_state(state, params, len(tasks) if stacked else None)
    return Episode(list(tasks), params, state, 0, int(horizon), list(generators), int(index), stacked, None, device,
                   adapt)


__all__ = ["Episode", "StepResult", "MetaLoss", "SumOfLosses", "MeanLogRatio", "META_LOSSES", "MAX_LOG_RATIO",
           "start_episode", "stack_dicts", "stack_batches", "batched_loss_fn", "copy_generator"]
