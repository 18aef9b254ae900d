"""Train a Task with any imperative optimizer (torch.optim, l2o.optim, LearnedOptimizer, ...).

This is the one inner loop shared by the benchmark harness and ``l2o reproduce``: it seeds
everything from ``seed``, records the training loss at every step, optionally evaluates on a
split every ``eval_every`` steps, and stops early (marking the run diverged) on a NaN/Inf loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from l2o.tasks.base import Task

OptimizerFactory = Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer]


@dataclass
class TrainResult:
    """What one training run produced.

    Attributes:
        losses: training (minibatch) loss before each step; ``len(losses) == steps_done``.
        final_train, final_test: ``task.evaluate`` on each split after the last step
            (empty if the run diverged).
        eval_steps, eval_curve: the steps at which ``task.evaluate(split=eval_split)`` ran
            and its results.
        diverged: a loss or a parameter became NaN/Inf; the run stopped there.
        seconds: wall-clock time of the optimisation steps (evaluations excluded).
    """

    losses: list[float] = field(default_factory=list)
    final_train: dict[str, float] = field(default_factory=dict)
    final_test: dict[str, float] = field(default_factory=dict)
    eval_steps: list[int] = field(default_factory=list)
    eval_curve: list[dict[str, float]] = field(default_factory=list)
    diverged: bool = False
    seconds: float = 0.0

    @property
    def steps_done(self) -> int:
        return len(self.losses)


def train(task: Task, make_optimizer: OptimizerFactory, steps: int | None = None, seed: int = 0,
          eval_every: int | None = None, eval_split: str = "test", params_hook: Callable | None = None) -> TrainResult:
    """Run ``steps`` optimizer steps of ``task`` from the seeded initialisation.

    Args:
        task: the optimizee problem.
        make_optimizer: called once with the list of parameter tensors.
        steps: budget; defaults to ``task.steps``.
        seed: seeds parameter initialisation and the batch stream.
        eval_every: if set, evaluate every that many steps (and at the end) on ``eval_split``.
        params_hook: called as ``params_hook(step, params)`` after each step (e.g. to collect
            samples); may be None.
    """
    steps = task.steps if steps is None else int(steps)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    generator = torch.Generator().manual_seed(int(seed))
    params = {k: v.clone().requires_grad_(True) for k, v in task.init_params(generator).items()}
    optimizer = make_optimizer(list(params.values()))
    batches = task.batches(generator)
    result = TrainResult()
    batch = None

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(params, batch)
        loss.backward()
        return loss

    def evaluate(step: int):
        result.eval_steps.append(step)
        result.eval_curve.append(task.evaluate(params, eval_split))

    for step in range(steps):
        if eval_every and step % eval_every == 0:
            evaluate(step)
        batch = next(batches)
        start = time.perf_counter()
        loss = optimizer.step(closure)
        if not isinstance(loss, torch.Tensor):  # an optimizer that ignores the closure's value
            loss = task.loss(params, batch)
        result.seconds += time.perf_counter() - start
        value = float(loss.detach())
        result.losses.append(value)
        if not math.isfinite(value) or not all(torch.isfinite(p).all() for p in params.values()):
            result.diverged = True
            return result
        if params_hook is not None:
            params_hook(step, params)
    if eval_every:
        evaluate(steps)
    result.final_train = task.evaluate(params, "train")
    result.final_test = task.evaluate(params, "test")
    if not all(math.isfinite(v) for v in (*result.final_train.values(), *result.final_test.values())):
        result.diverged = True
    return result
