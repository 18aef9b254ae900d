"""Few-shot task families for meta-learning (seeded, offline) and a batched functional MLP.

A meta-batch is a :class:`TaskBatch`: support and query sets of ``B`` tasks stacked along a first
dimension, so that the inner loops of :mod:`l2o.hyper.imaml` adapt all ``B`` tasks at once with
per-task parameters ``[B, ...]`` (the loss is a sum of per-task losses, so its gradient with respect
to the stacked parameters is every task's own gradient, and so are its Hessian-vector products).

* :class:`SinusoidFamily`: regression on ``y = A sin(x - phi)``, ``A ~ U[0.1, 5]``,
  ``phi ~ U[0, pi]``, ``x ~ U[-5, 5]`` (Finn et al. 2017), K-shot.
* :class:`ClassFewShotFamily`: N-way K-shot classification from images grouped by class; labels
  are a fresh permutation per task. :func:`digits_families` builds it on scikit-learn's digits
  with meta-training classes 0-4 and meta-test classes 5-9 (disjoint);
  :func:`l2o.data.omniglot.load_omniglot` gives the arrays for Omniglot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

Params = dict[str, Tensor]


@dataclass
class TaskBatch:
    """``B`` tasks: support ``(x_s, y_s)`` for adaptation, query ``(x_q, y_q)`` for the meta-loss."""

    x_s: Tensor
    y_s: Tensor
    x_q: Tensor
    y_q: Tensor

    @property
    def size(self) -> int:
        return int(self.x_s.shape[0])

    def to(self, dtype: torch.dtype) -> TaskBatch:
        cast = lambda t: t.to(dtype) if t.is_floating_point() else t  # noqa: E731
        return TaskBatch(cast(self.x_s), cast(self.y_s), cast(self.x_q), cast(self.y_q))


class BatchedMLP:
    """A functional MLP whose parameters may carry a leading task dimension.

    ``forward(params, x)``: unbatched weights ``[out, in]`` with ``x`` of shape ``[n, in]``, or
    per-task weights ``[B, out, in]`` with ``x`` of shape ``[B, n, in]``.
    The loss is mean squared error (``regression=True``) or cross-entropy, per task.
    """

    def __init__(self, sizes: list[int], activation: str = "relu", regression: bool = False):
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list >= 2 positive widths, got {sizes}")
        acts = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}
        if activation not in acts:
            raise ValueError(f"activation must be one of {sorted(acts)}, got {activation!r}")
        self.sizes, self.activation, self.regression = list(sizes), activation, regression
        self._act = acts[activation]

    def init(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        params = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            bound = 1.0 / math.sqrt(fan_in)
            params[f"layer{i}.weight"] = ((torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound).to(dtype)
            params[f"layer{i}.bias"] = torch.zeros(fan_out, dtype=dtype)
        return params

    def forward(self, params: Params, x: Tensor) -> Tensor:
        n = len(self.sizes) - 1
        for i in range(n):
            w, b = params[f"layer{i}.weight"], params[f"layer{i}.bias"]
            x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)) if w.dim() == 3 else F.linear(x, w, b)
            if i < n - 1:
                x = self._act(x)
        return x

    def task_losses(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """The loss of each task, ``[B]`` (or a scalar for unbatched inputs)."""
        out = self.forward(params, x)
        if self.regression:
            return ((out.squeeze(-1) - y) ** 2).mean(-1)
        if out.dim() == 2:
            return F.cross_entropy(out, y)
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none").reshape(y.shape).mean(-1)

    def task_metric(self, params: Params, x: Tensor, y: Tensor) -> Tensor:
        """Per-task MSE (regression) or accuracy (classification), ``[B]``."""
        with torch.no_grad():
            out = self.forward(params, x)
            if self.regression:
                return ((out.squeeze(-1) - y) ** 2).mean(-1)
            return (out.argmax(-1) == y).to(out.dtype).mean(-1)


class SinusoidFamily:
    """Sinusoid regression tasks (Finn et al. 2017): ``k_shot`` support and ``k_query`` query points."""

    name = "sinusoid"
    regression = True
    input_dim = 1
    n_out = 1

    def __init__(self, k_shot: int = 10, k_query: int = 10, amplitude=(0.1, 5.0), phase=(0.0, math.pi),
                 x_range=(-5.0, 5.0)):
        if k_shot < 1 or k_query < 1:
            raise ValueError(f"k_shot and k_query must be >= 1, got {k_shot}, {k_query}")
        self.k_shot, self.k_query, self.amplitude, self.phase, self.x_range = k_shot, k_query, amplitude, phase, x_range

    def sample(self, generator: torch.Generator, size: int) -> TaskBatch:
        if size < 1:
            raise ValueError(f"a meta-batch needs >= 1 task, got {size}")
        u = lambda lo_hi, *shape: lo_hi[0] + (lo_hi[1] - lo_hi[0]) * torch.rand(*shape, generator=generator)  # noqa: E731
        amp, phase = u(self.amplitude, size, 1), u(self.phase, size, 1)
        x = u(self.x_range, size, self.k_shot + self.k_query)
        y = amp * torch.sin(x - phase)
        k = self.k_shot
        return TaskBatch(x[:, :k, None], y[:, :k], x[:, k:, None], y[:, k:])


class ClassFewShotFamily:
    """N-way K-shot classification over a set of classes (each a tensor of flattened images).

    Each task draws ``n_way`` classes, assigns them labels 0..n_way-1 in a random order, and
    draws ``k_shot`` support and ``k_query`` query images per class, without overlap.
    """

    regression = False

    def __init__(self, classes: list[Tensor], n_way: int = 5, k_shot: int = 1, k_query: int = 15, name: str = "fewshot"):
        if n_way < 2:
            raise ValueError(f"n_way must be >= 2, got {n_way}")
        if k_shot < 1 or k_query < 1:
            raise ValueError(f"k_shot and k_query must be >= 1, got {k_shot}, {k_query}")
        if len(classes) < n_way:
            raise ValueError(f"{n_way}-way tasks need >= {n_way} classes, got {len(classes)}")
        short = [i for i, c in enumerate(classes) if c.shape[0] < k_shot + k_query]
        if short:
            raise ValueError(f"class {short[0]} has {classes[short[0]].shape[0]} examples, fewer than "
                             f"k_shot + k_query = {k_shot + k_query}")
        self.classes = [c.reshape(c.shape[0], -1).float() for c in classes]
        self.n_way, self.k_shot, self.k_query, self.name = n_way, k_shot, k_query, name
        self.input_dim = int(self.classes[0].shape[1])
        self.n_out = n_way

    def sample(self, generator: torch.Generator, size: int) -> TaskBatch:
        if size < 1:
            raise ValueError(f"a meta-batch needs >= 1 task, got {size}")
        xs, ys, xq, yq = [], [], [], []
        n, k, q = self.n_way, self.k_shot, self.k_query
        for _ in range(size):
            chosen = torch.randperm(len(self.classes), generator=generator)[:n]
            sx, sy, qx, qy = [], [], [], []
            for label, c in enumerate(chosen.tolist()):
                images = self.classes[c]
                idx = torch.randperm(images.shape[0], generator=generator)[:k + q]
                sx.append(images[idx[:k]])
                qx.append(images[idx[k:]])
                sy.append(torch.full((k,), label))
                qy.append(torch.full((q,), label))
            xs.append(torch.cat(sx)), ys.append(torch.cat(sy)), xq.append(torch.cat(qx)), yq.append(torch.cat(qy))
        return TaskBatch(torch.stack(xs), torch.stack(ys), torch.stack(xq), torch.stack(yq))


def digits_families(n_way: int = 5, k_shot: int = 1, k_query: int = 15,
                    train_classes=(0, 1, 2, 3, 4), test_classes=(5, 6, 7, 8, 9)):
    """Meta-training and meta-test N-way K-shot families on scikit-learn's digits, with disjoint classes."""
    if set(train_classes) & set(test_classes):
        raise ValueError("meta-training and meta-test classes must be disjoint")
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy((data.data / 16.0).astype(np.float32))
    y = torch.from_numpy(data.target.astype(np.int64))
    pick = lambda cs: [x[y == c] for c in cs]  # noqa: E731
    return (ClassFewShotFamily(pick(train_classes), n_way, k_shot, k_query, name="digits-train"),
            ClassFewShotFamily(pick(test_classes), n_way, k_shot, k_query, name="digits-test"))
