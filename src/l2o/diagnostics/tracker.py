"""Track the gradient noise scale along any training loop.

    tracker = NoiseScaleTracker(model, loss_fn, every=10)
    for step, (x, y) in enumerate(loader):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        tracker.update(x, y)          # between backward() and step(): reads p.grad, does not change it
        optimizer.step()
    print(tracker.b_simple, tracker.history[-1])

Any ``torch.optim`` optimizer works: the tracker only reads the gradients of the batch.

Methods and their cost on a measuring step (``every`` steps apart; other steps cost nothing):

- ``"two_batch"`` (default): ``|G_B|²`` of the batch from ``p.grad`` (the loop's own backward) and
  ``|G_{B/2}|²`` of its first half from one extra forward and backward over half the batch:
  about half a training step's gradient work. McCandlish et al.'s two-size estimator.
- ``"exact"``: per-example gradients of the batch (``vmap``) plus one batch gradient; a few
  training steps' worth (see ``benchmarks/noise_tracker_cost.py`` for measured ratios).

Single-batch estimates are noisy; the tracker keeps exponential moving averages of ``tr(Σ)`` and
``|G|²`` (bias-corrected, as Adam's moments) and reports their ratio, as McCandlish et al. do.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from l2o.diagnostics.noise_scale import (
    _check_data, exact_noise_scale, module_loss, two_batch_estimate)


def _sq_norm(tensors) -> float:
    """Σ |t|² over the tensors that are not None, summed in float64 (one read per tensor)."""
    present = [t for t in tensors if t is not None]
    if not present:
        return 0.0
    return float(torch.stack([n.double() for n in torch._foreach_norm(present)]).square().sum())


class NoiseScaleTracker:
    """Exponential moving averages of ``tr(Σ)`` and ``|G|²`` over training, and ``B_simple`` from them.

    Args:
        model: the ``nn.Module`` being trained.
        loss_fn: ``loss_fn(outputs, targets)``, the mean loss over the batch (the one ``backward()``
            was called on).
        every: measure on every ``every``-th call of :meth:`update` (1: every step).
        method: ``"two_batch"`` or ``"exact"`` (see the module's docstring for their cost).
        beta: the moving averages' decay (0: no averaging, each measurement on its own).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], *, every: int = 10,
                 method: str = "two_batch", beta: float = 0.9):
        if method not in ("two_batch", "exact"):
            raise ValueError(f"method must be 'two_batch' or 'exact', got {method!r}")
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.model, self.loss_fn, self.every, self.method, self.beta = model, loss_fn, int(every), method, float(beta)
        self.calls = 0
        self.measurements = 0
        self._trace = self._g2 = 0.0
        self.history: list[dict] = []

    @property
    def trace_cov(self) -> float:
        return self._trace / (1 - self.beta**self.measurements) if self.measurements else math.nan

    @property
    def grad_sq_norm(self) -> float:
        return self._g2 / (1 - self.beta**self.measurements) if self.measurements else math.nan

    @property
    def b_simple(self) -> float:
        """``tr(Σ)/|G|²`` of the moving averages (nan before the first measurement, inf while the
        averaged ``|G|²`` is not positive)."""
        if not self.measurements:
            return math.nan
        g2 = self.grad_sq_norm
        return self.trace_cov / g2 if g2 > 0 else math.inf

    def _params(self) -> list[tuple[str, Tensor]]:
        return [(k, p) for k, p in self.model.named_parameters() if p.requires_grad]

    def _measure_two_batch(self, inputs: Tensor, targets: Tensor) -> tuple[float, float]:
        params = [p for _, p in self._params()]
        grads = [p.grad for p in params]
        if all(g is None for g in grads):
            raise ValueError("method='two_batch' reads the batch's gradients from p.grad: call update() after "
                             "loss.backward() and before optimizer.step() / zero_grad()")
        big = int(inputs.shape[0])
        small = big // 2
        with torch.enable_grad():
            loss = self.loss_fn(self.model(inputs[:small]), targets[:small])
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                raise ValueError("the loss must be a scalar, the mean over the batch (reduction='mean')")
            half = torch.autograd.grad(loss, params, allow_unused=True)
        return two_batch_estimate(_sq_norm(half), _sq_norm(grads), small, big)

    def update(self, inputs: Tensor, targets: Tensor, step: int | None = None) -> float | None:
        """Call once per training step with that step's batch. On a measuring step, return the
        current ``B_simple`` (moving averages) and append a row to :attr:`history`; else None."""
        self.calls += 1
        step = self.calls - 1 if step is None else int(step)
        if (self.calls - 1) % self.every:
            return None
        _check_data(inputs, targets)
        if self.method == "two_batch":
            trace, g2 = self._measure_two_batch(inputs, targets)
        else:
            loss_of, params = module_loss(self.model, self.loss_fn)
            single = exact_noise_scale(loss_of, params, inputs, targets)
            trace, g2 = single.trace_cov, single.grad_sq_norm
        self.measurements += 1
        self._trace = self.beta * self._trace + (1 - self.beta) * trace
        self._g2 = self.beta * self._g2 + (1 - self.beta) * g2
        row = {"step": step, "b_simple": self.b_simple, "trace_cov": self.trace_cov,
               "grad_sq_norm": self.grad_sq_norm, "batch_trace_cov": float(trace), "batch_grad_sq_norm": float(g2)}
        self.history.append(row)
        return row["b_simple"]

    def state_dict(self) -> dict:
        return {"calls": self.calls, "measurements": self.measurements, "trace": self._trace, "g2": self._g2,
                "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.calls, self.measurements = int(state["calls"]), int(state["measurements"])
        self._trace, self._g2 = float(state["trace"]), float(state["g2"])
        self.history = list(state["history"])


__all__ = ["NoiseScaleTracker"]
