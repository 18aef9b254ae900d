"""Run a learned rule for K optimizee steps, differentiably: the inner loop of meta-training.

:func:`unroll` starts from given optimizee parameters and rule state, and for each step
draws a batch, computes the optimizee loss and its gradient, and applies the rule out of
place. It returns the sum of the optimizee losses along the way (the meta-loss of
Andrychowicz et al. 2016, all weights w_t = 1), the new parameters and the new state; the
computation graph from the rule's weights to the meta-loss is kept, so
``result.meta_loss.backward()`` gives the (truncated) BPTT meta-gradient.

Optimizee gradients are treated as inputs by default (``second_order=False``), as in the
paper: the meta-gradient does not flow through ∇f, which saves the Hessian-vector products.
``second_order=True`` differentiates through them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from l2o.learned.base import LearnedRule, ParamDict, StateDict
from l2o.tasks.base import Task


@dataclass
class UnrollResult:
    """What :func:`unroll` returns.

    Attributes:
        meta_loss: sum of the K optimizee losses ``f(theta_t, batch_t)``, t = 0..K-1
            (a tensor attached to the rule's weights' graph when grad is enabled).
        params, state: optimizee parameters and rule state after the K updates.
        losses: the K optimizee losses as floats.
        finite: False if a loss or a parameter became NaN/Inf (the unroll stops there).
    """

    meta_loss: Tensor
    params: ParamDict
    state: StateDict
    losses: list[float] = field(default_factory=list)
    finite: bool = True


def detach_state(params: ParamDict, state: StateDict) -> tuple[ParamDict, StateDict]:
    """Cut the graph: detached copies of ``params`` and ``state`` (truncation boundary)."""
    return ({k: v.detach() for k, v in params.items()},
            {k: {kk: vv.detach() for kk, vv in s.items()} for k, s in state.items()})


def unroll(rule: LearnedRule, task: Task, params: ParamDict, state: StateDict, batches: Iterator[Any],
           steps: int, second_order: bool = False, stop_on_nonfinite: bool = True) -> UnrollResult:
    """Apply ``rule`` for ``steps`` steps of ``task``.

    Args:
        rule: the learned update rule.
        task: the optimizee problem (its ``loss(params, batch)`` must be differentiable).
        params: optimizee parameters at the start (usually detached: a truncation boundary).
        state: the rule's state for ``params`` (``rule.init_state(params)`` at episode start).
        batches: the task's batch stream (``task.batches(generator)``); ``steps`` are drawn.
        steps: K, the number of updates.
        second_order: also back-propagate through the optimizee gradients.
        stop_on_nonfinite: stop early (``finite=False``) on a NaN/Inf loss.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    losses: list[float] = []
    terms: list[Tensor] = []
    finite = True
    with torch.enable_grad():
        for _ in range(steps):
            batch = next(batches)
            # A parameter that does not depend on anything yet (a truncation start) needs
            # requires_grad only to get its gradient; that does not connect it to the rule.
            inputs = {k: (v if v.requires_grad else v.detach().requires_grad_(True)) for k, v in params.items()}
            loss = task.loss(inputs, batch)
            value = float(loss.detach())
            losses.append(value)
            terms.append(loss)
            if stop_on_nonfinite and not torch.isfinite(loss.detach()):
                finite = False
                break
            names = list(inputs)
            grad_list = torch.autograd.grad(loss, [inputs[n] for n in names], create_graph=second_order,
                                            retain_graph=True, allow_unused=True)
            grads = {n: (g if g is not None else torch.zeros_like(inputs[n])) for n, g in zip(names, grad_list)}
            if not second_order:
                grads = {n: g.detach() for n, g in grads.items()}
            params, state = rule.update(grads, state, inputs)
    meta_loss = torch.stack(terms).sum() if terms else torch.zeros(())
    if finite and stop_on_nonfinite:
        finite = all(bool(torch.isfinite(p.detach()).all()) for p in params.values())
    return UnrollResult(meta_loss=meta_loss, params=params, state=state, losses=losses, finite=finite)


__all__ = ["UnrollResult", "unroll", "detach_state"]
