"""Exact reversible-learning hypergradients (Maclaurin, Duvenaud & Adams, ICML 2015).

SGD with momentum,

    v_{t+1} = gamma_t v_t - (1 - gamma_t) grad L_t(w_t, lambda),     w_{t+1} = w_t + alpha_t v_{t+1},

runs forward in exact fixed-point arithmetic (:mod:`l2o.hyper.fixed_point`); only the final
iterate and an information buffer (the bits that ``gamma_t`` discards) are kept. The reverse pass
(the paper's Algorithm 2) undoes the steps exactly, recomputing each gradient, and accumulates the
gradient of a meta-objective ``f(w_T)`` with respect to

* ``lr``:         alpha, one per step and per parameter group, shape ``[T, G]``;
* ``momentum``:   gamma, one per step and per group, shape ``[T, G]``;
* ``init_scale``: the initial weights are ``init_scale[g] * raw[name]``, shape ``[G]``;
* ``l2``:         the training loss carries ``0.5 * l2[g] * ||w_g||^2``, shape ``[G]``;
* the initial parameters and velocity themselves,

with Hessian-vector products (double backward) of the training loss. Memory does not grow with
the stored trajectory: the buffer holds about ``log2(1/gamma)`` bits per element and step.

Any model written as a functional loss ``loss_fn(params, batch)`` (the :class:`l2o.tasks.Task`
protocol's ``loss``) works; the batches of the ``T`` steps are given as a list so that the reverse
pass replays exactly the same ones.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from l2o.hyper.fixed_point import ExactTensor, FixedPointOverflowError, rational

__all__ = ["Hyperparameters", "HypergradResult", "ChaoticHypergradientWarning", "HypergradientError",
           "FixedPointOverflowError", "layer_groups", "reversible_hypergradient", "unrolled_hypergradient",
           "rounded_momentum"]


class ChaoticHypergradientWarning(RuntimeWarning):
    """The hypergradient grew by orders of magnitude through the reverse pass: the meta-objective is
    chaotic in the hyperparameters there (the paper's §4.5) and its gradient is of little use."""


class HypergradientError(ValueError):
    """A training loss or hypergradient that is not finite."""


def layer_groups(names: Sequence[str]) -> list[list[str]]:
    """Parameter names grouped by layer: ``layer0.weight`` and ``layer0.bias`` form one group
    (the text before the last dot), in first-seen order."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.rsplit(".", 1)[0], []).append(name)
    return list(groups.values())


@dataclass
class Hyperparameters:
    """The hyperparameters of one reversible SGD-with-momentum run (float64 tensors).

    Attributes:
        lr: learning rates, ``[T, G]`` (steps by groups).
        momentum: momentum decays in (0, 1), ``[T, G]``; rounded to multiples of ``2**-16``
            (see :func:`rounded_momentum`) so they can be undone exactly.
        init_scale: per-group factors of the raw initial weights, ``[G]``.
        l2: per-group L2 penalty coefficients (``0.5 * l2 * ||w||^2`` in the training loss), ``[G]``.
    """

    lr: Tensor
    momentum: Tensor
    init_scale: Tensor
    l2: Tensor

    @classmethod
    def constant(cls, steps: int, groups: int, *, lr: float, momentum: float = 0.9, init_scale: float = 1.0,
                 l2: float = 0.0) -> Hyperparameters:
        full = lambda v, shape: torch.full(shape, float(v), dtype=torch.float64)  # noqa: E731
        return cls(full(lr, (steps, groups)), full(momentum, (steps, groups)), full(init_scale, (groups,)),
                   full(l2, (groups,)))

    def validate(self, steps: int, groups: int) -> None:
        for name, shape in (("lr", (steps, groups)), ("momentum", (steps, groups)),
                            ("init_scale", (groups,)), ("l2", (groups,))):
            value = getattr(self, name)
            if not isinstance(value, Tensor):
                raise ValueError(f"{name} must be a tensor, got {type(value).__name__}")
            if tuple(value.shape) != shape:
                what = "steps x groups" if len(shape) == 2 else "groups"
                raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {shape} ({what}: "
                                 f"{steps} batches were given and there are {groups} parameter groups)")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} has non-finite entries")
        if bool((self.momentum <= 0).any()) or bool((self.momentum >= 1).any()):
            raise ValueError("momentum must be in (0, 1) at every step and group")
        if bool((self.l2 < 0).any()):
            raise ValueError("l2 must be >= 0")


def rounded_momentum(momentum: Tensor, denominator_bits: int = 16) -> Tensor:
    """``momentum`` rounded as the exact run uses it: to the nearest ``n / 2**denominator_bits``."""
    d = 2.0**denominator_bits
    return torch.round(momentum.to(torch.float64) * d) / d


@dataclass
class HypergradResult:
    """What a reversible (or unrolled) run returns.

    Attributes:
        meta_loss: ``f(w_T)``.
        final_params: ``w_T`` (float64).
        train_losses: the training loss before each step (without the L2 penalty).
        grads: ``{"lr": [T, G], "momentum": [T, G], "init_scale": [G], "l2": [G]}``, and
            ``"params0"`` / ``"velocity0"``: dicts of the gradients w.r.t. the initial weights
            (after scaling) and the initial velocity.
        buffer_bits: information-buffer size (bits) after each forward step (reversible run only).
        exact_reversal: the reverse pass ended on the initial weights and velocity bit for bit.
        growth: ``||d w_0|| / ||d w_T||``, how much the reverse pass amplified the gradient.
    """

    meta_loss: float
    final_params: dict[str, Tensor]
    train_losses: list[float]
    grads: dict[str, Any]
    buffer_bits: list[int] = field(default_factory=list)
    buffer_bytes: int = 0
    exact_reversal: bool | None = None
    growth: float = float("nan")


def _to64(batch: Any) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(torch.float64) if batch.is_floating_point() else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to64(b) for b in batch)
    return batch


def _setup(raw_params, batches, hyper, groups):
    names = list(raw_params)
    if groups is None:
        groups = layer_groups(names)
    flat = [n for g in groups for n in g]
    if sorted(flat) != sorted(names) or len(set(flat)) != len(flat):
        raise ValueError("groups must list every parameter name exactly once")
    steps = len(batches)
    if steps < 1:
        raise ValueError("need at least one batch (one step)")
    hyper.validate(steps, len(groups))
    group_of = {n: gi for gi, g in enumerate(groups) for n in g}
    return names, groups, group_of, steps


def _train_loss(loss_fn, params, batch, l2, groups):
    loss = loss_fn(params, batch)
    penalty = 0.0
    for gi, g in enumerate(groups):
        penalty = penalty + 0.5 * l2[gi] * sum(torch.sum(params[n] ** 2) for n in g)
    return loss, loss + penalty


def reversible_hypergradient(loss_fn: Callable[[dict[str, Tensor], Any], Tensor], raw_params: dict[str, Tensor],
                             batches: Sequence[Any], hyper: Hyperparameters,
                             meta_loss_fn: Callable[[dict[str, Tensor]], Tensor], *,
                             groups: list[list[str]] | None = None, velocity0: dict[str, Tensor] | None = None,
                             radix_bits: int = 52, denominator_bits: int = 16, check_reversal: bool = True,
                             chaos_growth: float = 1e6, track_buffer: bool = False) -> HypergradResult:
    """Train by exact reversible SGD with momentum and return the hypergradients of ``meta_loss_fn``.

    Args:
        loss_fn: the training loss ``loss_fn(params, batch)`` (e.g. ``task.loss``).
        raw_params: the raw initial weights; the run starts from ``init_scale[g] * raw``.
        batches: the ``T`` training batches, one per step (floating tensors are cast to float64).
        hyper: the :class:`Hyperparameters`, ``lr`` and ``momentum`` of length ``T``.
        meta_loss_fn: the meta-objective of the final weights (e.g. a validation loss).
        groups: parameter-name groups sharing hyperparameters (default: by layer).
        velocity0: the initial velocity (default zero).
        radix_bits, denominator_bits: the fixed-point format (see :class:`ExactTensor`).
        check_reversal: keep a copy of the initial integers to report ``exact_reversal``.
        track_buffer: record the information buffer's size after every step (``buffer_bits``;
            costs a pass over every element per step).
        chaos_growth: warn with :class:`ChaoticHypergradientWarning` when the reverse pass
            amplifies ``||dw||`` by more than this factor.

    Raises:
        FixedPointOverflowError: a weight or velocity left the fixed-point range.
        HypergradientError: a training loss or the hypergradient is not finite.
    """
    names, groups, group_of, steps = _setup(raw_params, batches, hyper, groups)
    batches = [_to64(b) for b in batches]
    lr = hyper.lr.detach().to(torch.float64)
    gamma = rounded_momentum(hyper.momentum.detach(), denominator_bits)
    fracs = [[rational(float(gamma[t, gi]), denominator_bits) for gi in range(len(groups))] for t in range(steps)]
    scale = hyper.init_scale.detach().to(torch.float64)
    l2 = hyper.l2.detach().to(torch.float64)
    raw = {n: raw_params[n].detach().to(torch.float64) for n in names}
    kw = dict(radix_bits=radix_bits, denominator_bits=denominator_bits)
    W = {n: ExactTensor(scale[group_of[n]] * raw[n], name=f"weights {n}", **kw) for n in names}
    V = {n: ExactTensor(torch.zeros_like(raw[n]) if velocity0 is None else velocity0[n], name=f"velocity {n}", **kw)
         for n in names}
    start = {n: (W[n].intrep.clone(), V[n].intrep.clone()) for n in names} if check_reversal else None

    def gradient(t, create_graph=False, l2_param=None):
        params = {n: W[n].val.requires_grad_(True) for n in names}
        lam = l2 if l2_param is None else l2_param
        with torch.enable_grad():
            plain, total = _train_loss(loss_fn, params, batches[t], lam, groups)
            grads = torch.autograd.grad(total, [params[n] for n in names], create_graph=create_graph)
        if not math.isfinite(float(plain.detach())):
            raise HypergradientError(f"the training loss is not finite at step {t} (learning rate too large?)")
        return params, dict(zip(names, grads)), float(plain.detach()), total

    losses, bits = [], []
    for t in range(steps):
        _, g, loss, _ = gradient(t)
        losses.append(loss)
        for n in names:
            gi = group_of[n]
            num, den = fracs[t][gi]
            V[n].mul(num, den).sub((1.0 - gamma[t, gi]) * g[n])
            W[n].add(lr[t, gi] * V[n].val)
        if track_buffer:
            bits.append(sum(V[n].buffer.bits() for n in names))
    buffer_bytes = sum(V[n].buffer.nbytes() for n in names) if track_buffer else 0

    final = {n: W[n].val for n in names}
    with torch.enable_grad():
        wT = {n: final[n].clone().requires_grad_(True) for n in names}
        meta = meta_loss_fn(wT)
        dw_list = torch.autograd.grad(meta, [wT[n] for n in names], allow_unused=True)
    meta_loss = float(meta.detach())
    if not math.isfinite(meta_loss):
        raise HypergradientError("the meta-objective of the final weights is not finite")
    dw = {n: (torch.zeros_like(raw[n]) if d is None else d.detach()) for n, d in zip(names, dw_list)}
    dv = {n: torch.zeros_like(raw[n]) for n in names}
    d_lr = torch.zeros_like(lr)
    d_gamma = torch.zeros_like(gamma)
    d_l2 = torch.zeros_like(l2)
    norm_end = math.sqrt(sum(float(torch.sum(d * d)) for d in dw.values()))

    for t in reversed(range(steps)):
        for n in names:
            gi = group_of[n]
            d_lr[t, gi] += torch.sum(dw[n] * V[n].val)
            W[n].sub(lr[t, gi] * V[n].val)
        lam = l2.clone().requires_grad_(True)
        params, g, _, _ = gradient(t, create_graph=True, l2_param=lam)
        for n in names:
            gi = group_of[n]
            num, den = fracs[t][gi]
            V[n].add((1.0 - gamma[t, gi]) * g[n].detach()).div(num, den)
            dv[n] = dv[n] + lr[t, gi] * dw[n]
            d_gamma[t, gi] += torch.sum(dv[n] * (V[n].val + g[n].detach()))
        # the step's gradient entered v with weight (1 - gamma) of its own group: weight dv so,
        # then one double backward gives H (1-gamma) dv and the mixed l2 term together
        dot = sum(torch.sum(g[n] * ((1.0 - gamma[t, group_of[n]]) * dv[n])) for n in names)
        second = torch.autograd.grad(dot, [params[n] for n in names] + [lam], allow_unused=True)
        for i, n in enumerate(names):
            if second[i] is not None:
                dw[n] = dw[n] - second[i].detach()
            dv[n] = gamma[t, group_of[n]] * dv[n]
        if second[-1] is not None:
            d_l2 -= second[-1].detach()

    exact = None
    if start is not None:
        exact = all(bool(torch.equal(W[n].intrep, start[n][0])) and bool(torch.equal(V[n].intrep, start[n][1]))
                    for n in names)
    d_scale = torch.stack([sum(torch.sum(dw[n] * raw[n]) for n in g) for g in groups])
    total = torch.cat([d_lr.reshape(-1), d_gamma.reshape(-1), d_scale, d_l2])
    if not bool(torch.isfinite(total).all()):
        raise HypergradientError("the hypergradient is not finite (the reverse pass blew up: learning rate too large)")
    norm_start = math.sqrt(sum(float(torch.sum(d * d)) for d in dw.values()))
    growth = norm_start / norm_end if norm_end > 0 else float("inf") if norm_start > 0 else 1.0
    if growth > chaos_growth:
        warnings.warn(f"the reverse pass amplified the gradient {growth:.3g}-fold (> {chaos_growth:g}): the "
                      "meta-objective is chaotic in the hyperparameters here (learning rates too large or too "
                      "many steps); its hypergradient is unreliable", ChaoticHypergradientWarning, stacklevel=2)
    grads = {"lr": d_lr, "momentum": d_gamma, "init_scale": d_scale, "l2": d_l2,
             "params0": dict(dw),
             "velocity0": dict(dv)}
    return HypergradResult(meta_loss, final, losses, grads, bits, buffer_bytes, exact, growth)


def unrolled_hypergradient(loss_fn: Callable[[dict[str, Tensor], Any], Tensor], raw_params: dict[str, Tensor],
                           batches: Sequence[Any], hyper: Hyperparameters,
                           meta_loss_fn: Callable[[dict[str, Tensor]], Tensor], *,
                           groups: list[list[str]] | None = None, denominator_bits: int = 16) -> HypergradResult:
    """The same run in plain float64 with autograd through every step (storing the whole trajectory):
    the reference that :func:`reversible_hypergradient` is tested against. Momentum is rounded the
    same way so that both compute the same function."""
    names, groups, group_of, steps = _setup(raw_params, batches, hyper, groups)
    batches = [_to64(b) for b in batches]
    lr = hyper.lr.detach().to(torch.float64).clone().requires_grad_(True)
    gamma = rounded_momentum(hyper.momentum.detach(), denominator_bits).requires_grad_(True)
    scale = hyper.init_scale.detach().to(torch.float64).clone().requires_grad_(True)
    l2 = hyper.l2.detach().to(torch.float64).clone().requires_grad_(True)
    raw = {n: raw_params[n].detach().to(torch.float64) for n in names}
    with torch.enable_grad():
        w0 = {n: (scale[group_of[n]] * raw[n]).detach().requires_grad_(True) for n in names}
        v0 = {n: torch.zeros_like(raw[n], requires_grad=True) for n in names}
        # the scaled start as a function of init_scale, with w0 a leaf for d/dw0
        w = {n: w0[n] + (scale[group_of[n]] * raw[n] - (scale[group_of[n]] * raw[n]).detach()) for n in names}
        v = dict(v0)
        losses = []
        for t in range(steps):
            plain, total = _train_loss(loss_fn, w, batches[t], l2, groups)
            losses.append(float(plain.detach()))
            g = torch.autograd.grad(total, [w[n] for n in names], create_graph=True)
            for n, gn in zip(names, g):
                gi = group_of[n]
                v[n] = gamma[t, gi] * v[n] - (1.0 - gamma[t, gi]) * gn
                w[n] = w[n] + lr[t, gi] * v[n]
        meta = meta_loss_fn(w)
        inputs = [lr, gamma, scale, l2] + [w0[n] for n in names] + [v0[n] for n in names]
        out = torch.autograd.grad(meta, inputs, allow_unused=True)
    out = [torch.zeros_like(i) if o is None else o for o, i in zip(out, inputs)]
    k = len(names)
    grads = {"lr": out[0], "momentum": out[1], "init_scale": out[2], "l2": out[3],
             "params0": dict(zip(names, out[4:4 + k])), "velocity0": dict(zip(names, out[4 + k:]))}
    return HypergradResult(float(meta.detach()), {n: w[n].detach() for n in names}, losses, grads)
