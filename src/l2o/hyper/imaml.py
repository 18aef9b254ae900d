"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine, NeurIPS 2019), with MAML and first-order MAML.

For each task the inner problem is proximal,

    phi*(theta) = argmin_phi  L_train(phi) + (lam / 2) ||phi - theta||^2,

solved approximately by ``inner_steps`` steps of gradient descent from ``phi = theta``. Its
stationarity condition gives ``d phi* / d theta = (I + H / lam)^-1`` with ``H`` the Hessian of
``L_train`` at ``phi*``, so the meta-gradient of ``L_test(phi*)`` is

    g = (I + H / lam)^-1 grad L_test(phi*),

found by ``cg_steps`` iterations of conjugate gradient on ``(I + H / lam) v = grad L_test`` with
Hessian-vector products (double backward). Nothing of the inner loop is kept, so memory does not
grow with ``inner_steps``. The baselines share the code: MAML differentiates through the
unregularized inner steps (graph kept, memory grows with the steps), first-order MAML uses
``grad L_test(phi)`` as the meta-gradient.

The damping is exactly the proximal ``lam``: the matrix-vector product is ``v + H v / lam`` and
nothing else (the authors' reference code passes its damping argument so that it solves
``2 (I + H / 24) v = g`` when ``lam = 2``; see docs/methods/imaml.md).

A meta-batch's tasks are adapted together with per-task parameters stacked along a first
dimension (:mod:`l2o.hyper.fewshot`); :func:`batched_conjugate_gradient` runs one CG per task
(its own step sizes) on all of them at once. :func:`implicit_meta_gradient` is the one-task form
on any functional loss, solved by :func:`l2o.linalg.conjugate_gradient`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from l2o.hyper.fewshot import BatchedMLP, TaskBatch
from l2o.linalg import conjugate_gradient, hvp

Params = dict[str, Tensor]
METHODS = ("imaml", "maml", "fomaml")


def check_settings(lam: float | None = None, cg_steps: int | None = None, inner_steps: int | None = None,
                   inner_lr: float | None = None) -> None:
    """Reject impossible settings with a clear message."""
    if lam is not None and not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"the proximal regularization lam must be a finite number > 0, got {lam!r}")
    if cg_steps is not None and (int(cg_steps) != cg_steps or cg_steps < 1):
        raise ValueError(f"cg_steps must be a whole number >= 1 (the implicit gradient needs a linear solve), "
                         f"got {cg_steps!r}")
    if inner_steps is not None and (int(inner_steps) != inner_steps or inner_steps < 0):
        raise ValueError(f"inner_steps must be a whole number >= 0, got {inner_steps!r}")
    if inner_lr is not None and not (math.isfinite(inner_lr) and inner_lr > 0):
        raise ValueError(f"inner_lr must be a finite number > 0, got {inner_lr!r}")


class MetaTrainingDiverged(ValueError):
    """The meta-gradient stopped being finite (the inner learning rate is too large)."""


def _bdot(a: Params, b: Params) -> Tensor:
    """Per-task inner products of two stacked vectors: ``[B]``."""
    return sum(torch.sum((a[k] * b[k]).reshape(a[k].shape[0], -1), dim=1) for k in a)


def _bscale(s: Tensor, v: Tensor) -> Tensor:
    return s.reshape((-1,) + (1,) * (v.dim() - 1)) * v


def batched_conjugate_gradient(matvec: Callable[[Params], Params], b: Params, iters: int,
                               stats: dict | None = None) -> Params:
    """Solve ``A_i x_i = b_i`` for every task ``i`` (first dimension of each tensor) by ``iters``
    steps of conjugate gradient, each task with its own step sizes (the same iterates as running
    :func:`l2o.linalg.conjugate_gradient` on each task alone). ``matvec`` applies every ``A_i``.

    A task whose matrix shows non-positive curvature along a search direction (``p^T A p <= 0``: a
    Hessian with an eigenvalue below ``-lam`` makes ``I + H / lam`` indefinite) stops there and keeps
    its current iterate, as truncated CG does, or, if that happens at the first iteration, takes
    ``x_i = b_i`` (the first-order meta-gradient) rather than zero; ``stats["stopped"]`` counts
    such tasks."""
    check_settings(cg_steps=iters)
    x = {k: torch.zeros_like(v) for k, v in b.items()}
    r = dict(b)
    p = dict(b)
    rr = _bdot(r, r)
    active = rr > 0
    stopped = torch.zeros_like(active)
    for iteration in range(int(iters)):
        ap = matvec(p)
        pap = _bdot(p, ap)
        bad = active & ~(pap > 0)
        stopped |= bad
        active = active & ~bad
        safe = torch.where(active, pap, torch.ones_like(pap))
        alpha = torch.where(active, rr / safe, torch.zeros_like(pap))
        if iteration == 0:
            alpha = torch.where(bad, torch.ones_like(alpha), alpha)
        x = {k: x[k] + _bscale(alpha, p[k]) for k in x}
        r = {k: r[k] - _bscale(alpha, ap[k]) for k in r}
        rr_new = _bdot(r, r)
        beta = torch.where(active & (rr > 0), rr_new / torch.where(rr > 0, rr, torch.ones_like(rr)),
                           torch.zeros_like(rr))
        p = {k: r[k] + _bscale(beta, p[k]) for k in p}
        rr = rr_new
        active = active & (rr_new > 0)
    if stats is not None:
        stats["stopped"] = int(stopped.sum())
    return x


def implicit_meta_gradient(train_loss: Callable[[Params], Tensor], test_loss: Callable[[Params], Tensor],
                           phi: Params, lam: float, cg_steps: int) -> Params:
    """``(I + H / lam)^-1 grad test_loss(phi)`` for one task, ``H`` the Hessian of ``train_loss`` at ``phi``
    (the adapted parameters, ideally the proximal inner solution), by :func:`l2o.linalg.conjugate_gradient`."""
    check_settings(lam=lam, cg_steps=cg_steps)
    names = list(phi)
    with torch.enable_grad():
        leaves = [phi[n].detach().requires_grad_(True) for n in names]
        params = dict(zip(names, leaves))
        g_test = torch.autograd.grad(test_loss(params), leaves, allow_unused=True)
        g_test = tuple(torch.zeros_like(p) if g is None else g for g, p in zip(g_test, leaves))
        loss = train_loss(params)
        grads = torch.autograd.grad(loss, leaves, create_graph=True)

        def matvec(v):
            hv = hvp(loss, leaves, v, grads=grads)
            return tuple(vi + h / lam for vi, h in zip(v, hv))

        result = conjugate_gradient(matvec, g_test, max_iter=cg_steps)
    return {n: x.detach() for n, x in zip(names, result.x)}


@dataclass
class InnerConfig:
    """The inner loop and the meta-gradient's settings.

    Attributes:
        method: ``"imaml"``, ``"maml"`` or ``"fomaml"``.
        inner_steps: gradient steps of adaptation.
        inner_lr: their step size.
        lam: iMAML's proximal regularization (paper: 2 on Omniglot); unused by the baselines.
        cg_steps: iMAML's conjugate-gradient iterations (paper: 5).
    """

    method: str = "imaml"
    inner_steps: int = 5
    inner_lr: float = 0.01
    lam: float = 2.0
    cg_steps: int = 5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        check_settings(inner_steps=self.inner_steps, inner_lr=self.inner_lr)
        if self.method == "imaml":
            check_settings(lam=self.lam, cg_steps=self.cg_steps)

    def as_dict(self) -> dict:
        return asdict(self)


def _expand(theta: Params, size: int) -> Params:
    return {k: v.unsqueeze(0).expand(size, *v.shape) for k, v in theta.items()}


def adapt(model: BatchedMLP, theta: Params, batch: TaskBatch, config: InnerConfig, *,
          create_graph: bool = False, proximal: bool | None = None, steps: int | None = None) -> Params:
    """Per-task adapted parameters ``[B, ...]``: ``steps`` (default ``config.inner_steps``) gradient steps
    on the support loss from ``theta``, plus ``lam/2 ||phi - theta||^2`` when ``proximal`` (default: for
    iMAML). With ``create_graph`` the result stays differentiable in ``theta`` (MAML)."""
    proximal = config.method == "imaml" if proximal is None else proximal
    steps = config.inner_steps if steps is None else steps
    size = batch.size
    if create_graph:  # differentiable in theta through the start and the proximal anchor
        anchor = phi = _expand(theta, size)
    else:
        anchor = {k: v.detach() for k, v in _expand(theta, size).items()}
        phi = {k: v.clone() for k, v in anchor.items()}
    for _ in range(steps):
        with torch.enable_grad():
            if not create_graph:
                phi = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
            loss = model.task_losses(phi, batch.x_s, batch.y_s).sum()
            if proximal:
                loss = loss + 0.5 * config.lam * sum(torch.sum((phi[k] - anchor[k]) ** 2) for k in phi)
            grads = torch.autograd.grad(loss, list(phi.values()), create_graph=create_graph)
        phi = {k: v - config.inner_lr * g for (k, v), g in zip(phi.items(), grads)}
        if not create_graph:
            phi = {k: v.detach() for k, v in phi.items()}
    return phi


def meta_gradient(model: BatchedMLP, theta: Params, batch: TaskBatch, config: InnerConfig) -> tuple[Params, dict]:
    """The meta-gradient (mean over the batch's tasks) of the query loss after adaptation, and stats
    (``query_loss``: mean query loss after adaptation)."""
    size = batch.size
    names = list(theta)
    if config.method == "maml":
        with torch.enable_grad():
            leaves = {k: v.detach().requires_grad_(True) for k, v in theta.items()}
            phi = adapt(model, leaves, batch, config, create_graph=True)
            query = model.task_losses(phi, batch.x_q, batch.y_q).mean()
            grads = torch.autograd.grad(query, [leaves[k] for k in names])
        return dict(zip(names, grads)), {"query_loss": float(query.detach())}
    phi = adapt(model, theta, batch, config)
    with torch.enable_grad():
        phi = {k: v.detach().requires_grad_(True) for k, v in phi.items()}
        query = model.task_losses(phi, batch.x_q, batch.y_q).sum()
        g_test = dict(zip(names, torch.autograd.grad(query, [phi[k] for k in names])))
    if config.method == "fomaml":
        return {k: g.mean(0) for k, g in g_test.items()}, {"query_loss": float(query.detach()) / size}
    with torch.enable_grad():
        support = model.task_losses(phi, batch.x_s, batch.y_s).sum()
        first = torch.autograd.grad(support, [phi[k] for k in names], create_graph=True)

    def matvec(v: Params) -> Params:
        hv = hvp(support, [phi[k] for k in names], [v[k] for k in names], grads=first)
        return {k: v[k] + h.detach() / config.lam for k, h in zip(names, hv)}

    cg_stats: dict = {}
    solution = batched_conjugate_gradient(matvec, g_test, config.cg_steps, cg_stats)
    return ({k: s.mean(0) for k, s in solution.items()},
            {"query_loss": float(query.detach()) / size, "cg_stopped": cg_stats["stopped"]})


def evaluate(model: BatchedMLP, theta: Params, batch: TaskBatch, config: InnerConfig) -> Tensor:
    """Per-task query metric (MSE or accuracy) after the method's own adaptation, ``[B]``."""
    phi = adapt(model, theta, batch, config)
    return model.task_metric(phi, batch.x_q, batch.y_q)


class Adam:
    """Adam on a dict of tensors, with its state as plain tensors (so checkpoints are safetensors)."""

    def __init__(self, params: Params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        if not lr > 0:
            raise ValueError(f"the meta learning rate must be > 0, got {lr!r}")
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: Params, grads: Params) -> Params:
        self.t += 1
        b1, b2 = self.betas
        out = {}
        for k, p in params.items():
            self.m[k] = b1 * self.m[k] + (1 - b1) * grads[k]
            self.v[k] = b2 * self.v[k] + (1 - b2) * grads[k] ** 2
            m_hat = self.m[k] / (1 - b1**self.t)
            v_hat = self.v[k] / (1 - b2**self.t)
            out[k] = p - self.lr * m_hat / (v_hat.sqrt() + self.eps)
        return out

    def state_tensors(self) -> dict[str, Tensor]:
        return {**{f"adam.m.{k}": v for k, v in self.m.items()}, **{f"adam.v.{k}": v for k, v in self.v.items()}}

    def load_tensors(self, tensors: dict[str, Tensor], t: int) -> None:
        self.m = {k: tensors[f"adam.m.{k}"] for k in self.m}
        self.v = {k: tensors[f"adam.v.{k}"] for k in self.v}
        self.t = int(t)


def meta_train(model: BatchedMLP, family, config: InnerConfig, *, steps: int, meta_batch: int, meta_lr: float,
               seed: int, checkpoint: str | None = None, checkpoint_every: int = 50, resume: bool = False,
               progress: bool = False, dtype: torch.dtype = torch.float32) -> tuple[Params, list[float]]:
    """Meta-train ``theta`` by Adam over meta-batches (the task draws of step ``s`` come from seed
    ``(seed, s)``, so a resumed run sees the same tasks). Returns ``theta`` and the per-step mean query
    losses. With ``checkpoint`` (a ``.safetensors`` path) the state is saved every ``checkpoint_every``
    steps and at the end, atomically; ``resume`` continues from it."""
    from l2o.io import load_tensors, save_tensors

    if steps < 0 or meta_batch < 1:
        raise ValueError(f"need steps >= 0 and meta_batch >= 1, got {steps}, {meta_batch}")
    theta = model.init(torch.Generator().manual_seed(int(seed)), dtype)
    opt = Adam(theta, meta_lr)
    history: list[float] = []
    start = 0
    if resume and checkpoint is not None:
        from pathlib import Path

        if Path(checkpoint).is_file():
            tensors, meta = load_tensors(checkpoint)
            if meta.get("config") != config.as_dict() or meta.get("seed") != seed:
                raise ValueError(f"checkpoint {checkpoint} was written for another configuration; "
                                 "remove it or run without resume")
            theta = {k: tensors[f"theta.{k}"] for k in theta}
            opt.load_tensors(tensors, meta["adam_t"])
            start, history = int(meta["step"]), list(meta["history"])
    from tqdm import tqdm

    bar = tqdm(range(start, steps), disable=not progress, leave=False, desc=f"{config.method} seed {seed}")
    for step in bar:
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + step)
        batch = family.sample(gen, meta_batch).to(dtype)
        grads, stats = meta_gradient(model, theta, batch, config)
        if not all(bool(torch.isfinite(g).all()) for g in grads.values()):
            raise MetaTrainingDiverged(f"{config.method}: the meta-gradient is not finite at step {step} "
                             "(inner learning rate too large?)")
        theta = opt.step(theta, grads)
        history.append(stats["query_loss"])
        done = step + 1
        if checkpoint is not None and (done % checkpoint_every == 0 or done == steps):
            tensors = {**{f"theta.{k}": v for k, v in theta.items()}, **opt.state_tensors()}
            save_tensors(checkpoint, tensors, {"step": done, "adam_t": opt.t, "history": history,
                                               "config": config.as_dict(), "seed": seed})
    return theta, history


@contextmanager
def graph_memory():
    """Track the bytes of tensors held by autograd graphs (saved for backward), deduplicated by storage;
    yields a dict whose ``"peak"`` is the most held at once while the block ran."""
    live: dict[int, list[int]] = {}
    stats = {"current": 0, "peak": 0}

    class Saved:
        __slots__ = ("tensor", "__weakref__")

        def __init__(self, tensor):
            self.tensor = tensor

    def release(key):
        entry = live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            stats["current"] -= entry[1]
            del live[key]

    def pack(t):
        storage = t.untyped_storage()
        key = storage.data_ptr()
        entry = live.get(key)
        if entry is None:
            live[key] = [1, storage.nbytes()]
            stats["current"] += storage.nbytes()
            stats["peak"] = max(stats["peak"], stats["current"])
        else:
            entry[0] += 1
        saved = Saved(t)
        weakref.finalize(saved, release, key)
        return saved

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda s: s.tensor):
        yield stats
