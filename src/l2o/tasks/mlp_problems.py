"""A general task family for meta-training optimizers that should work beyond one problem.

:class:`MLPProblemFamily` samples small MLP problems that differ in data set (scikit-learn's
digits, synthetic Gaussian-cluster classification, synthetic teacher-network regression, and
convex quadratics written as linear least squares), width, depth, activation (sigmoid, tanh,
ReLU), batch size and horizon.

Every problem is an :class:`MLPTask`, whose forward pass also accepts parameters and data
stacked along a leading task dimension: :meth:`MLPTask.per_task_loss` evaluates ``B``
instances at once with batched matmuls, which is what batched meta-training uses
(:mod:`l2o.meta.episode`). ``sample_batch`` draws ``B`` instances that share one architecture
(so their parameters stack) but have their own data, initialisation and minibatches.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from l2o.tasks.base import Params, SupervisedTask, TaskFamily, init_linear_layers, seed_from
from l2o.tasks.digits import ACTIVATIONS

DATASETS = ("digits", "classification", "regression", "quadratic")
#: Problem types that exist but are not in the default family (``MLPProblemFamily(datasets=...)``):
#: ``lowdim``, least squares in 1-3 parameters with the data and targets rescaled by random
#: factors over two decades each, i.e. problems whose tensors are a few numbers at any scale.
#: ``illcond``, least squares whose curvature spectrum spans a random condition number of 10 to 10^4
#: (the default ``quadratic`` problems, with twice as many rows as unknowns, are well conditioned).
#: ``consistent``, least squares whose targets a linear model fits up to a residual of about 1e-6 of
#: the initial loss: the other least-squares problems have random targets, so their minimum is near
#: their initial loss and any reasonable step size reaches it (no signal about speed), while a
#: minimum near 0 keeps rewarding progress over six decades, as on a noiseless problem.
EXTRA_DATASETS = ("lowdim", "illcond", "consistent")


class MLPTask(SupervisedTask):
    """A functional MLP on in-memory data; also evaluates stacked instances.

    Args:
        x_train, y_train, x_test, y_test: data (integer targets: classification with
            cross-entropy; float targets: regression with mean squared error).
        hidden: width of each hidden layer.
        layers: number of hidden layers (0: a linear model).
        activation: "sigmoid", "tanh" or "relu".
        batch_size: minibatch size (None: full batch).
        steps: default budget (the horizon).
        name: name used in reports.
        param_scales: one factor per parameter tensor, in the order of :meth:`init_params` (empty:
            none). The optimizer then trains ``phi`` with the network's weights ``s * phi``: the
            same problem, but with gradients ``s`` times as large and a minimum ``1/s`` times as
            far, so the step size it needs is ``1/s`` times as large ("task augmentation").
    """

    def __init__(self, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, hidden: int = 32,
                 layers: int = 1, activation: str = "relu", batch_size: int | None = 64, steps: int = 100,
                 name: str = "mlp_task", param_scales: tuple[float, ...] = ()):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if hidden < 1 or layers < 0:
            raise ValueError(f"need hidden >= 1 and layers >= 0, got hidden={hidden}, layers={layers}")
        super().__init__(x_train, y_train, x_test, y_test, batch_size)
        self.hidden, self.layers, self.activation, self.steps, self.name = hidden, layers, activation, steps, name
        self._act = ACTIVATIONS[activation]
        out = int(y_train.max()) + 1 if self.classification else (1 if y_train.dim() == 1 else y_train.shape[1])
        self.sizes = [x_train.shape[1]] + [hidden] * layers + [out]
        n_tensors = 2 * (len(self.sizes) - 1)
        if param_scales and (len(param_scales) != n_tensors or not all(s > 0 for s in param_scales)):
            raise ValueError(f"param_scales must be {n_tensors} positive factors (one per tensor), got {param_scales}")
        self.param_scales = tuple(float(s) for s in param_scales)

    def init_params(self, generator: torch.Generator) -> Params:
        params = init_linear_layers(self.sizes, generator)
        if self.param_scales:
            params = {k: v / s for (k, v), s in zip(params.items(), self.param_scales)}
        return params

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """Outputs for ``x`` of shape (n, d), or (B, n, d) with every parameter stacked (B, ...)."""
        n = len(self.sizes) - 1
        for i in range(n):
            w, b = params[f"layer{i}.weight"], params[f"layer{i}.bias"]
            if self.param_scales:
                w, b = w * self.param_scales[2 * i], b * self.param_scales[2 * i + 1]
            x = torch.matmul(x, w.transpose(-1, -2)) + b.unsqueeze(-2)
            if i < n - 1:
                x = self._act(x)
        return x

    def per_task_loss(self, params: Params, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Losses of ``B`` stacked instances: params (B, ...), x (B, n, d), y (B, n) -> (B,)."""
        x, y = batch
        out = self.forward(params, x)
        if self.classification:
            # Cross-entropy as logsumexp minus the target's logit: the same number as
            # F.cross_entropy, but log_softmax over a last dimension of a few classes is slow on the
            # CPU (about 2x the whole expression, forward and backward, for a batch of tasks).
            target_logit = out.gather(-1, y.unsqueeze(-1)).squeeze(-1)
            return (torch.logsumexp(out, dim=-1) - target_logit).mean(dim=-1)
        return (out.reshape(y.shape) - y).square().reshape(y.shape[0], -1).mean(dim=-1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "hidden": self.hidden, "layers": self.layers, "activation": self.activation,
                **({"param_scales": list(self.param_scales)} if self.param_scales else {})}


@dataclass(frozen=True)
class TaskConfig:
    """One point of the family: everything that fixes an architecture and a problem type."""

    dataset: str
    hidden: int
    layers: int
    activation: str
    batch_size: int | None
    horizon: int
    in_dim: int = 0
    n_classes: int = 0
    param_scales: tuple[float, ...] = ()


def _classification_data(seed: int, in_dim: int, n_classes: int, n: int = 600):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_classes, in_dim, generator=g) * 1.5
    y = torch.randint(0, n_classes, (2 * n,), generator=g)
    x = centers[y] + torch.randn(2 * n, in_dim, generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def _regression_data(seed: int, in_dim: int, n: int = 600):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, in_dim, generator=g)
    w1 = torch.randn(in_dim, 16, generator=g) / math.sqrt(in_dim)
    w2 = torch.randn(16, generator=g) / 2.0
    y = torch.tanh(x @ w1) @ w2 + 0.1 * torch.randn(2 * n, generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def _lowdim_data(seed: int, dim: int):
    # f(theta) = mean((A theta + b - y)^2) with dim + 1 parameters (a (1, dim) weight and a bias),
    # curvature and optimum scaled by log-uniform factors in [0.1, 10].
    g = torch.Generator().manual_seed(seed)
    a_scale, y_scale = (10.0 ** (2 * float(torch.rand((), generator=g)) - 1) for _ in range(2))
    a = torch.randn(4 * dim, dim, generator=g) * a_scale
    y = torch.randn(4 * dim, generator=g) * y_scale
    return a, y, a, y


def _quadratic_data(seed: int, dim: int):
    # f(theta) = mean((A theta + b - y)^2): a random convex quadratic, full batch.
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(2 * dim, dim, generator=g)
    y = torch.randn(2 * dim, generator=g)
    return a, y, a, y


def _illcond_data(seed: int, dim: int):
    # f(theta) = mean((A theta + b - y)^2) with A = U diag(s) V^T: singular values log-spaced so that
    # the curvature A^T A has a condition number kappa, log-uniform in [10, 1e4], and an overall
    # scale log-uniform in [0.3, 3].
    g = torch.Generator().manual_seed(seed)
    kappa = 10.0 ** (1 + 3 * float(torch.rand((), generator=g)))
    scale = 10.0 ** (float(torch.rand((), generator=g)) - 0.5)
    a = _conditioned_matrix(g, 2 * dim, dim, kappa, scale)  # rows of unit scale on average, as in ``quadratic``
    y = torch.randn(2 * dim, generator=g)
    return a, y, a, y


def _conditioned_matrix(g: torch.Generator, rows: int, dim: int, kappa: float, scale: float) -> Tensor:
    # A = U diag(s) V^T * sqrt(rows), singular values log-spaced so that A^T A has condition number
    # kappa; its rows have a norm of about ``scale`` on average.
    u, _ = torch.linalg.qr(torch.randn(rows, dim, generator=g))
    v, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g))
    s = scale * kappa ** (-0.5 * torch.linspace(0, 1, dim))
    return (u * s) @ v.T * math.sqrt(rows)


def _consistent_data(seed: int, dim: int):
    # f(w, b) = mean((A w + b - y)^2) with y = A w* + b* + noise, the noise 1e-3 of y's RMS (so the
    # minimum is ~1e-6 of the initial loss, above float32 rounding); A's curvature has a condition
    # number log-uniform in [1, 1e3], A and (w*, b*) each scaled by a log-uniform factor in [0.1, 10].
    g = torch.Generator().manual_seed(seed)
    kappa = 10.0 ** (3 * float(torch.rand((), generator=g)))
    a_scale = 10.0 ** (2 * float(torch.rand((), generator=g)) - 1)
    w_scale = 10.0 ** (2 * float(torch.rand((), generator=g)) - 1)
    rows = 2 * dim + 4  # more rows than the dim + 1 parameters: the noise is not fitted exactly
    a = _conditioned_matrix(g, rows, dim, kappa, a_scale)
    clean = a @ (torch.randn(dim, generator=g) * w_scale) + float(torch.randn((), generator=g)) * w_scale
    y = clean + 1e-3 * clean.square().mean().sqrt() * torch.randn(rows, generator=g)
    return a, y, a, y


@lru_cache(maxsize=1)
def _digits_arrays():
    # One copy shared by every digits instance (batched unrolls then gather minibatches at once).
    from l2o.data.digits import load_digits_split

    return load_digits_split(seed=0)


def build_task(config: TaskConfig, data_seed: int) -> MLPTask:
    """The task of ``config`` with data drawn from ``data_seed`` (digits: the fixed split)."""
    if config.dataset == "digits":
        arrays = _digits_arrays()
    elif config.dataset == "classification":
        arrays = _classification_data(data_seed, config.in_dim, config.n_classes)
    elif config.dataset == "regression":
        arrays = _regression_data(data_seed, config.in_dim)
    elif config.dataset == "quadratic":
        arrays = _quadratic_data(data_seed, config.in_dim)
    elif config.dataset == "lowdim":
        arrays = _lowdim_data(data_seed, config.in_dim)
    elif config.dataset == "illcond":
        arrays = _illcond_data(data_seed, config.in_dim)
    elif config.dataset == "consistent":
        arrays = _consistent_data(data_seed, config.in_dim)
    else:
        raise ValueError(f"dataset must be one of {DATASETS + EXTRA_DATASETS}, got {config.dataset!r}")
    return MLPTask(*arrays, hidden=config.hidden, layers=config.layers, activation=config.activation,
                   batch_size=config.batch_size, steps=config.horizon, name=f"{config.dataset}_mlp",
                   param_scales=config.param_scales)


class MLPProblemFamily(TaskFamily):
    """Small MLP problems over data sets, widths, depths, activations, batch sizes, horizons.

    Args:
        datasets: which problem types to draw from (see ``DATASETS``).
        widths, depths, activations, batch_sizes: choices drawn uniformly.
        horizon: (low, high) training budget, drawn log-uniformly.
        param_scale: (low, high): each sampled architecture's parameter tensors get factors drawn
            log-uniformly from it (``MLPTask``'s ``param_scales``; the instances of one
            ``sample_batch`` share them, so that they stack), so the step size each tensor needs
            varies by ``high / low`` (task augmentation, as in VeLO and Celo). (1, 1), the
            default: none, and the same draws as without the option.
    """

    name = "general"

    def __init__(self, datasets=DATASETS, widths=(16, 32, 64), depths=(1, 2),
                 activations=("sigmoid", "tanh", "relu"), batch_sizes=(32, 64, 128), horizon=(100, 1000),
                 param_scale=(1.0, 1.0)):
        bad = [d for d in datasets if d not in DATASETS + EXTRA_DATASETS]
        if bad or not datasets:
            raise ValueError(f"datasets must be a non-empty subset of {DATASETS + EXTRA_DATASETS}, got {list(datasets)}")
        bad = [a for a in activations if a not in ACTIVATIONS]
        if bad or not activations:
            raise ValueError(f"activations must be a non-empty subset of {sorted(ACTIVATIONS)}, got {list(activations)}")
        if not (1 <= horizon[0] <= horizon[1]):
            raise ValueError(f"horizon must be (low, high) with 1 <= low <= high, got {horizon}")
        if not (0 < param_scale[0] <= param_scale[1] < math.inf):
            raise ValueError(f"param_scale must be (low, high) with 0 < low <= high, got {param_scale}")
        self.param_scale = (float(param_scale[0]), float(param_scale[1]))
        self.datasets, self.widths, self.depths = tuple(datasets), tuple(widths), tuple(depths)
        self.activations, self.batch_sizes, self.horizon = tuple(activations), tuple(batch_sizes), tuple(horizon)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datasets": list(self.datasets), "widths": list(self.widths),
                "depths": list(self.depths), "activations": list(self.activations),
                "batch_sizes": list(self.batch_sizes), "horizon": list(self.horizon),
                **({"param_scale": list(self.param_scale)} if self.param_scale != (1.0, 1.0) else {})}

    def sample_config(self, generator: torch.Generator) -> TaskConfig:
        config = self._sample_architecture(generator)
        if self.param_scale == (1.0, 1.0):
            return config
        lo, hi = (math.log(s) for s in self.param_scale)
        n_tensors = 2 * (config.layers + 1)
        scales = torch.exp(lo + (hi - lo) * torch.rand(n_tensors, generator=generator, dtype=torch.float64))
        return dataclasses.replace(config, param_scales=tuple(scales.tolist()))

    def _sample_architecture(self, generator: torch.Generator) -> TaskConfig:
        def pick(options):
            return options[int(torch.randint(0, len(options), (1,), generator=generator))]

        dataset = pick(self.datasets)
        lo, hi = math.log(self.horizon[0]), math.log(self.horizon[1])
        horizon = int(round(math.exp(lo + (hi - lo) * float(torch.rand((), generator=generator)))))
        hidden, layers, activation, batch = pick(self.widths), pick(self.depths), pick(self.activations), pick(self.batch_sizes)
        if dataset in ("quadratic", "illcond"):
            return TaskConfig(dataset, 1, 0, "relu", None, horizon, in_dim=pick((10, 20, 50)))
        if dataset == "lowdim":
            return TaskConfig("lowdim", 1, 0, "relu", None, horizon, in_dim=pick((1, 2, 3)))
        if dataset == "consistent":
            return TaskConfig("consistent", 1, 0, "relu", None, horizon, in_dim=pick((1, 2, 3, 10, 20, 50)))
        if dataset == "classification":
            return TaskConfig(dataset, hidden, layers, activation, batch, horizon,
                              in_dim=pick((8, 16, 32)), n_classes=pick((2, 5, 10)))
        if dataset == "regression":
            return TaskConfig(dataset, hidden, layers, activation, batch, horizon, in_dim=pick((8, 16, 32)))
        return TaskConfig(dataset, hidden, layers, activation, batch, horizon)

    def sample(self, generator: torch.Generator) -> MLPTask:
        return build_task(self.sample_config(generator), seed_from(generator))

    def sample_batch(self, generator: torch.Generator, size: int) -> list[MLPTask]:
        """``size`` instances of one sampled architecture, each with its own data draw."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        config = self.sample_config(generator)
        return [build_task(config, seed_from(generator)) for _ in range(size)]


def config_dict(config: TaskConfig) -> dict[str, Any]:
    return asdict(config)
