"""DeepOBS's small test problems: ``quadratic_deep`` and the noisy 2-D Rosenbrock, Beale, Branin.

Built from the definitions in DeepOBS (Schneider, Balles & Hennig, ICLR 2019), so that its
published baselines can be reproduced; see ``docs/methods/deepobs_tasks.md`` for the
construction, the budgets and every difference.

Data are drawn once, with numpy ``RandomState`` seeds fixed by the problem (as in DeepOBS);
the run seed only shuffles the training batches (epochs without replacement, last partial
batch dropped) and has nothing to initialise, since all four problems start from a fixed
point.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from l2o.tasks.base import Params, Task

# DeepOBS draws its problems from these fixed numpy seeds.
TRAIN_SEED, TEST_SEED, VALID_SEED = 42, 43, 44


def _epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index batches: each epoch a fresh permutation, the last partial batch dropped."""
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size must be <= the training set size {n}, got {batch_size}")
    while True:
        order = torch.randperm(n, generator=generator)
        for b in range(per_epoch):
            yield order[b * batch_size:(b + 1) * batch_size]


def deepobs_random_rotation(dim: int, rng: np.random.RandomState) -> np.ndarray:
    """A Haar-random rotation in SO(dim) by the subgroup algorithm (Diaconis & Shahshahani, 1987).

    Draws from ``rng`` in the same order as DeepOBS's ``random_rotation`` so that the same
    ``RandomState`` gives the same matrix: one uniform angle for SO(2), then one Gaussian
    vector of size d+1 per step d = 2..dim-1, each step embedding the current rotation in one
    more dimension and applying the Householder reflection that maps e1 to the drawn unit
    vector.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2, got {dim}")
    angle = 2 * np.pi * rng.uniform()
    rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    for d in range(2, dim):
        v = rng.normal(size=(d + 1, 1))
        v = v / np.sqrt((v.T @ v).item())
        e1 = np.zeros((d + 1, 1))
        e1[0, 0] = 1.0
        w = (e1 - v) / np.sqrt(((e1 - v).T @ (e1 - v)).item())
        embedded = np.eye(d + 1)
        embedded[1:, 1:] = rot
        rot = embedded - 2 * w @ (w.T @ embedded)
    return -rot


@lru_cache(maxsize=4)
def deepobs_quadratic_hessian(dim: int = 100, n_small: int = 90, n_large: int = 10) -> np.ndarray:
    """Q = R^T D R with D = diag(90 x U(0,1), 10 x U(30,60)) and R a random rotation.

    One ``RandomState(42)`` stream feeds the eigenvalues and then the rotation, which is what
    the first ``quadratic_deep`` built in a DeepOBS process gets (DeepOBS keeps that generator
    at module level, so later instances in the same process would differ; we always build the
    first one).
    """
    if n_small + n_large != dim:
        raise ValueError(f"n_small + n_large must equal dim, got {n_small} + {n_large} != {dim}")
    rng = np.random.RandomState(TRAIN_SEED)
    eigenvalues = np.concatenate((rng.uniform(0.0, 1.0, n_small), rng.uniform(30.0, 60.0, n_large)))
    rot = deepobs_random_rotation(dim, rng)
    return rot.T @ np.diag(eigenvalues) @ rot


class QuadraticDeep(Task):
    """DeepOBS ``quadratic_deep``: 0.5 (theta - x)^T Q (theta - x), batch mean, theta in R^100.

    theta starts at 1 (every coordinate). The data x ~ N(0, 0.6^2 I): 1,000 training points
    (RandomState 42), 1,000 test points (43); we add 1,000 validation points (44, DeepOBS's
    seed for its 2-D validation sets) for tuning. Budget: 100 epochs of batch 128 with the last
    partial batch dropped = 700 steps. Test loss, as DeepOBS computes it, is the mean over the
    test batches of 128 (the first 896 points, its test loader drops the last partial batch
    too); set ``eval_drop_last=False`` for all 1,000.

    Args:
        batch_size: minibatch size (128).
        epochs: passes over the training set (100).
        steps: overrides the budget derived from ``epochs``.
        noise_level: standard deviation of x (0.6).
        eval_drop_last: evaluate on whole batches only, like DeepOBS.
    """

    name = "quadratic_deep"
    metric = "test_loss"

    def __init__(self, batch_size: int = 128, epochs: int = 100, steps: int | None = None,
                 noise_level: float = 0.6, train_size: int = 1000, eval_drop_last: bool = True):
        if batch_size < 1 or batch_size > train_size:
            raise ValueError(f"batch_size must be in [1, {train_size}], got {batch_size}")
        self.dim = 100
        self.batch_size, self.epochs, self.noise_level = batch_size, epochs, noise_level
        self.train_size, self.eval_drop_last = train_size, eval_drop_last
        self.steps_per_epoch = train_size // batch_size
        self.steps = int(steps) if steps is not None else epochs * self.steps_per_epoch
        self.hessian = torch.from_numpy(deepobs_quadratic_hessian()).float()
        self.data = {
            split: torch.from_numpy(np.float32(
                np.random.RandomState(seed).normal(0.0, noise_level, (train_size, self.dim))))
            for split, seed in (("train", TRAIN_SEED), ("test", TEST_SEED), ("valid", VALID_SEED))
        }

    def init_params(self, generator: torch.Generator) -> Params:
        return {"theta": torch.ones(self.dim)}

    def batches(self, generator: torch.Generator) -> Iterator[Tensor]:
        x = self.data["train"]
        for idx in _epoch_batches(x.shape[0], self.batch_size, generator):
            yield x[idx]

    def loss(self, params: Params, batch: Tensor | None) -> Tensor:
        x = self.data["train"] if batch is None else batch
        diff = params["theta"] - x
        return 0.5 * ((diff @ self.hessian) * diff).sum(dim=1).mean()

    def evaluate(self, params: Params, split: str = "test") -> dict[str, float]:
        if split not in self.data:
            raise ValueError(f"split must be one of {sorted(self.data)}, got {split!r}")
        x = self.data[split]
        if self.eval_drop_last:
            x = x[: (x.shape[0] // self.batch_size) * self.batch_size]
        with torch.no_grad():
            return {"loss": float(self.loss(params, x))}

    def describe(self):
        return {**super().describe(), "epochs": self.epochs, "noise_level": self.noise_level}


def _rosenbrock(u: Tensor, v: Tensor) -> Tensor:
    return (1 - u) ** 2 + 100 * (v - u ** 2) ** 2


def _beale(u: Tensor, v: Tensor) -> Tensor:
    return (1.5 - u + u * v) ** 2 + (2.25 - u + u * v ** 2) ** 2 + (2.625 - u + u * v ** 3) ** 2


def _branin(u: Tensor, v: Tensor) -> Tensor:
    b, c, r, s, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return (v - b * u ** 2 + c * u - r) ** 2 + s * (1 - t) * torch.cos(u) + s


class NoisyTwoD(Task):
    """A DeepOBS 2-D problem: f(u, v) + u*x + v*y with (x, y) ~ N(0, 1), batch mean.

    10,000 training pairs (RandomState 42), 10,000 validation pairs (44); the test set is all
    zeros, so the test loss is the noise-free f(u, v) (as in DeepOBS). Start points are
    DeepOBS's. Subclasses set ``function``, ``start`` and ``default_steps``.
    """

    metric = "test_loss"
    start: tuple[float, float] = (0.0, 0.0)
    default_steps = 1000

    @staticmethod
    def function(u: Tensor, v: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def __init__(self, batch_size: int = 128, steps: int | None = None, noise_level: float = 1.0,
                 train_size: int = 10000):
        if batch_size < 1 or batch_size > train_size:
            raise ValueError(f"batch_size must be in [1, {train_size}], got {batch_size}")
        self.batch_size, self.noise_level, self.train_size = batch_size, noise_level, train_size
        self.steps = int(steps) if steps is not None else self.default_steps
        self.steps_per_epoch = train_size // batch_size
        self.data = {}
        for split, seed in (("train", TRAIN_SEED), ("valid", VALID_SEED)):
            rng = np.random.RandomState(seed)
            x = np.float32(rng.normal(0.0, noise_level, train_size))
            y = np.float32(rng.normal(0.0, noise_level, train_size))
            self.data[split] = torch.from_numpy(np.stack([x, y], axis=1))
        self.data["test"] = torch.zeros(train_size, 2)

    def init_params(self, generator: torch.Generator) -> Params:
        return {"u": torch.tensor(float(self.start[0])), "v": torch.tensor(float(self.start[1]))}

    def batches(self, generator: torch.Generator) -> Iterator[Tensor]:
        xy = self.data["train"]
        for idx in _epoch_batches(xy.shape[0], self.batch_size, generator):
            yield xy[idx]

    def loss(self, params: Params, batch: Tensor | None) -> Tensor:
        xy = self.data["train"] if batch is None else batch
        u, v = params["u"], params["v"]
        # The mean over the batch of f + u x + v y; f does not depend on the batch.
        noise = xy.mean(dim=0)
        return type(self).function(u, v) + u * noise[0] + v * noise[1]

    def evaluate(self, params: Params, split: str = "test") -> dict[str, float]:
        if split not in self.data:
            raise ValueError(f"split must be one of {sorted(self.data)}, got {split!r}")
        with torch.no_grad():
            return {"loss": float(self.loss(params, self.data[split]))}


class NoisyRosenbrock(NoisyTwoD):
    """DeepOBS ``two_d_rosenbrock``: (1-u)^2 + 100 (v-u^2)^2 + noise, from (-0.5, 1.5)."""

    name = "two_d_rosenbrock"
    start = (-0.5, 1.5)
    function = staticmethod(_rosenbrock)


class NoisyBeale(NoisyTwoD):
    """DeepOBS ``two_d_beale``: the Beale function + noise, from (-4.5, 4.5)."""

    name = "two_d_beale"
    start = (-4.5, 4.5)
    function = staticmethod(_beale)


class NoisyBranin(NoisyTwoD):
    """DeepOBS ``two_d_branin``: the Branin function + noise, from (2.5, 12.5)."""

    name = "two_d_branin"
    start = (2.5, 12.5)
    function = staticmethod(_branin)
