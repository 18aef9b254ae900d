"""The Task protocol: an optimizee problem, in functional form.

A Task creates its initial parameters from a ``torch.Generator`` (a dict of tensors), yields
training batches from a generator, computes ``loss(params, batch)`` as a pure function of the
parameter dict, and evaluates loss/accuracy on a data split. Everything is seeded: the same
generator state gives the same numbers.

A TaskFamily samples Tasks (new data draws, widths, activations, ...).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

Params = dict[str, Tensor]


def seed_from(generator: torch.Generator) -> int:
    """Draw a fresh integer seed from ``generator`` (to seed numpy or a nested generator)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


def init_linear_layers(sizes: list[int], generator: torch.Generator) -> dict[str, Tensor]:
    """Weights and biases of a stack of linear layers of the given widths, as ``layer{i}.weight``
    and ``layer{i}.bias``, drawn like ``nn.Linear``'s default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        bound = 1.0 / math.sqrt(fan_in)
        params[f"layer{i}.weight"] = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
        params[f"layer{i}.bias"] = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
    return params


class Task(ABC):
    """An optimizee problem.

    Attributes:
        name: short identifier used in reports.
        steps: the default training budget (optimizer steps).
        batch_size: minibatch size, or None for a deterministic full-batch loss.
        metric: the number a benchmark reports for this task: ``"test_loss"`` or
            ``"test_accuracy"``.
    """

    name: str = "task"
    steps: int = 100
    batch_size: int | None = None
    metric: str = "test_loss"

    @abstractmethod
    def init_params(self, generator: torch.Generator) -> Params:
        """Initial parameters (plain tensors, not requiring grad)."""

    @abstractmethod
    def loss(self, params: Params, batch: Any) -> Tensor:
        """Scalar training loss of ``params`` on ``batch``; differentiable in ``params``."""

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        """An endless stream of training batches. Deterministic tasks yield ``None``."""
        while True:
            yield None

    def evaluate(self, params: Params, split: str = "test") -> dict[str, float]:
        """Loss (and accuracy where it applies) on ``split`` ("train" or "test")."""
        with torch.no_grad():
            return {"loss": float(self.loss(params, None))}

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (for reports and results stores)."""
        return {"name": self.name, "steps": self.steps, "batch_size": self.batch_size, "metric": self.metric}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class TaskFamily(ABC):
    """A distribution over Tasks."""

    name: str = "family"

    @abstractmethod
    def sample(self, generator: torch.Generator) -> Task:
        """Draw one Task."""

    def sample_batch(self, generator: torch.Generator, size: int) -> list[Task]:
        """``size`` tasks for one batched episode of family meta-training (:class:`l2o.meta.trainer.MetaTrainer`),
        whose parameters are stacked: by default ``size`` draws of :meth:`sample`, which must then
        give tasks with the same parameter names and shapes (a family of several architectures
        overrides this to draw one architecture per batch, as ``MLPProblemFamily`` does)."""
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        return [self.sample(generator) for _ in range(size)]


class FixedFamily(TaskFamily):
    """A family that always returns tasks built by ``factory(seed)`` with a fresh seed."""

    def __init__(self, factory: Callable[[int], Task], name: str = "family"):
        self.factory = factory
        self.name = name

    def sample(self, generator: torch.Generator) -> Task:
        return self.factory(seed_from(generator))


class SupervisedTask(Task):
    """Shared machinery for classification/regression on in-memory tensors.

    Subclasses implement ``forward(params, x)``; the loss is cross-entropy for integer
    targets and mean squared error otherwise.
    """

    metric = "test_loss"

    def __init__(self, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, batch_size: int | None):
        if x_train.shape[0] != y_train.shape[0] or x_test.shape[0] != y_test.shape[0]:
            raise ValueError("inputs and targets must have the same number of rows")
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
        self.batch_size = batch_size
        self.classification = not torch.is_floating_point(y_train)

    @abstractmethod
    def forward(self, params: Params, x: Tensor) -> Tensor: ...

    def _criterion(self, out: Tensor, y: Tensor) -> Tensor:
        if self.classification:
            return nn.functional.cross_entropy(out, y)
        return nn.functional.mse_loss(out.reshape(y.shape), y)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        n = self.x_train.shape[0]
        if self.batch_size is None or self.batch_size >= n:
            while True:
                yield self.x_train, self.y_train
        while True:
            idx = torch.randint(0, n, (self.batch_size,), generator=generator)
            yield self.x_train[idx], self.y_train[idx]

    def loss(self, params: Params, batch: tuple[Tensor, Tensor] | None) -> Tensor:
        x, y = batch if batch is not None else (self.x_train, self.y_train)
        return self._criterion(self.forward(params, x), y)

    def evaluate(self, params: Params, split: str = "test") -> dict[str, float]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        with torch.no_grad():
            out = self.forward(params, x)
            result = {"loss": float(self._criterion(out, y))}
            if self.classification:
                result["accuracy"] = float((out.argmax(-1) == y).float().mean())
        return result


class ModuleTask(SupervisedTask):
    """Makes any ``nn.Module`` plus a data set a Task, via ``torch.func.functional_call``.

    Args:
        module_factory: builds a fresh module; called under a seed drawn from the generator
            given to ``init_params``, so initialisation is reproducible.
        x_train, y_train, x_test, y_test: the data (integer ``y`` means classification).
        batch_size: minibatch size (None: full batch).
        steps: default budget.
    """

    def __init__(self, module_factory: Callable[[], nn.Module], x_train, y_train, x_test, y_test,
                 batch_size: int | None = 128, steps: int = 100, name: str = "module_task",
                 metric: str = "test_loss"):
        super().__init__(x_train, y_train, x_test, y_test, batch_size)
        self.module_factory = module_factory
        self.steps, self.name, self.metric = steps, name, metric
        self._module: nn.Module | None = None

    def init_params(self, generator: torch.Generator) -> Params:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed_from(generator))
            module = self.module_factory()
        self._module = module
        return {k: v.detach().clone() for k, v in module.named_parameters()}

    def forward(self, params: Params, x: Tensor) -> Tensor:
        if self._module is None:
            self._module = self.module_factory()
        return torch.func.functional_call(self._module, params, (x,))
