"""Explicit gradient regularization: train on L + mu * ||grad L||^2 by double backpropagation.

Barrett and Dherin, "Implicit Gradient Regularization" (ICLR 2021). Backward error analysis
shows that gradient descent with step size h follows, to O(h^2), the gradient flow of the
*modified* loss ``L + (h/4) ||grad L||^2`` rather than the flow of ``L`` (which it follows only
to O(h)): a large learning rate implicitly penalises the gradient norm. Their explicit
version adds the penalty ``mu ||grad L||^2`` to the loss with a free coefficient ``mu``.

The penalty's gradient is ``2 mu H grad L`` (H the Hessian), obtained here by differentiating
the gradient itself (``create_graph=True``), so one regularized step costs about two
backward passes. The wrapper works with any optimizer because it only changes the loss:

    reg = GradientRegularizer(mu=0.01)
    loss = criterion(model(x), y)
    reg(loss, model.parameters()).backward()
    optimizer.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from l2o.tasks.base import Params, Task


def gradient_norm_squared(loss: Tensor, params: Iterable[Tensor], create_graph: bool = True) -> Tensor:
    """``||d loss / d params||^2`` (summed over all parameters), differentiable by default.

    Parameters the loss does not depend on contribute zero. ``create_graph=True`` keeps the
    graph so the result can be backpropagated (double backprop); pass False to only measure.

    Raises:
        ValueError: if ``loss`` is not a scalar or no parameter requires grad.
    """
    params = [p for p in params if p.requires_grad]
    if loss.dim() != 0:
        raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")
    if not params:
        raise ValueError("params must contain at least one tensor that requires grad, got none")
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    terms = [g.pow(2).sum() for g in grads if g is not None]
    if not terms:
        return loss.new_zeros(())
    return torch.stack(terms).sum()


def gradient_flow(loss_fn: Callable[[Tensor], Tensor], w0: Tensor, time: float, dt: float,
                  mu: float = 0.0) -> Tensor:
    """Integrate the gradient flow ``dw/dt = -grad(L + mu ||grad L||^2)`` from ``w0`` with RK4.

    ``loss_fn`` maps a flat parameter tensor to a scalar loss. ``mu = 0`` is the flow of ``L``;
    ``mu = h / 4`` is the modified flow that gradient descent with step ``h`` follows to O(h^2).
    Takes ``round(time / dt)`` classical Runge-Kutta steps; the penalty's gradient comes by
    double backprop (:class:`GradientRegularizer`). Returns the (detached) end point.
    """
    if dt <= 0 or time < 0:
        raise ValueError(f"need dt > 0 and time >= 0, got dt={dt}, time={time}")

    def velocity(w: Tensor) -> Tensor:
        w = w.detach().requires_grad_(True)
        loss = loss_fn(w)
        if mu:
            loss = GradientRegularizer(mu)(loss, [w])
        return -torch.autograd.grad(loss, w)[0]

    w = w0.detach().clone()
    for _ in range(round(time / dt)):
        k1 = velocity(w)
        k2 = velocity(w + dt / 2 * k1)
        k3 = velocity(w + dt / 2 * k2)
        k4 = velocity(w + dt * k3)
        w = w + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return w


class GradientRegularizer:
    """Adds ``mu * ||grad_params L||^2`` to a loss (explicit gradient regularization).

    Args:
        mu: the penalty coefficient (>= 0). The implicit regularization of gradient descent with
            step size ``h`` corresponds to ``mu = h / 4``; see :meth:`implicit`.
        params: the parameters whose gradient norm is penalised, if fixed at construction;
            otherwise pass them at each call. (An iterator such as ``model.parameters()`` is
            turned into a list once.)

    Call it as ``reg(loss, params)``; use :meth:`wrap` for a functional loss of a parameter
    dict (as l2o's tasks use) and :class:`RegularizedTask` to regularize any Task.
    """

    def __init__(self, mu: float, params: Iterable[Tensor] | None = None):
        mu = float(mu)
        if not mu >= 0.0 or mu == float("inf"):
            raise ValueError(f"mu must be a finite number >= 0, got {mu}")
        self.mu = mu
        self.params = None if params is None else list(params)

    @classmethod
    def implicit(cls, lr: float, params: Iterable[Tensor] | None = None) -> GradientRegularizer:
        """The regularizer whose flow gradient descent with step ``lr`` follows: ``mu = lr / 4``."""
        lr = float(lr)
        if not lr > 0.0:
            raise ValueError(f"lr must be > 0, got {lr}")
        return cls(lr / 4.0, params)

    def penalty(self, loss: Tensor, params: Iterable[Tensor] | None = None) -> Tensor:
        """``mu * ||grad L||^2`` alone (differentiable)."""
        params = self._resolve(params)
        if self.mu == 0.0:
            return loss.new_zeros(())
        return self.mu * gradient_norm_squared(loss, params, create_graph=True)

    def __call__(self, loss: Tensor, params: Iterable[Tensor] | None = None) -> Tensor:
        """The regularized loss ``loss + mu * ||grad_params loss||^2``."""
        return loss + self.penalty(loss, params)

    def wrap(self, loss_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        """Turn ``loss_fn(params: dict, *args)`` into its regularized version (same signature).

        The gradient norm is taken over the dict's tensors that require grad.
        """

        def regularized(params: Params, *args: Any, **kwargs: Any) -> Tensor:
            loss = loss_fn(params, *args, **kwargs)
            return self(loss, [p for p in params.values() if p.requires_grad])

        return regularized

    def _resolve(self, params: Iterable[Tensor] | None) -> list[Tensor]:
        if params is not None:
            return list(params)
        if self.params is None:
            raise ValueError("params is None: pass the parameters at construction or at the call")
        return self.params

    def __repr__(self) -> str:
        return f"GradientRegularizer(mu={self.mu})"


class RegularizedTask(Task):
    """Any Task trained on ``loss + mu * ||grad loss||^2``; evaluation is the task's own.

    Use it to train with explicit gradient regularization through ``l2o.train.train`` or the
    benchmark harness. The penalty is taken with respect to the parameters that require grad.

    Args:
        task: the task to regularize.
        mu: the penalty coefficient.
    """

    def __init__(self, task: Task, mu: float):
        self.task = task
        self.regularizer = GradientRegularizer(mu)
        self.name = f"{task.name}+egr{self.regularizer.mu:g}"
        self.steps, self.batch_size, self.metric = task.steps, task.batch_size, task.metric

    def init_params(self, generator: torch.Generator) -> Params:
        return self.task.init_params(generator)

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        return self.task.batches(generator)

    def loss(self, params: Params, batch: Any) -> Tensor:
        loss = self.task.loss(params, batch)
        trainable = [p for p in params.values() if p.requires_grad]
        if not trainable or not torch.is_grad_enabled():
            return loss  # nothing to differentiate (e.g. under no_grad): the plain loss
        return self.regularizer(loss, trainable)

    def evaluate(self, params: Params, split: str = "test") -> dict[str, float]:
        return self.task.evaluate(params, split)

    def describe(self) -> dict[str, Any]:
        return {**self.task.describe(), "name": self.name, "egr_mu": self.regularizer.mu}
