"""Task streams for continual learning, seeded and offline.

A :class:`Stream` is an ordered list of :class:`ContinualTask` (train, validation and test
splits, a task id, the number of classes of its head) and says whether the tasks share one
output head (``multi_head=False``: permuted and rotated digits, permuted MNIST) or each has its
own (``multi_head=True``: split digits, labels renumbered 0..k-1 inside each task).

Scenarios:

- ``permuted-digits``: scikit-learn's 8x8 digits, task 0 as is, task t>0 with a fixed random
  pixel permutation drawn from the seed.
- ``rotated-digits``: task t rotated by ``t * rotation_step`` degrees (bilinear, about the image
  centre, zero padding).
- ``split-digits``: task t holds classes 2t and 2t+1 (at most 5 tasks), head per task.
- ``permuted-mnist``: MNIST read from local IDX files (:func:`l2o.data.mnist.load_mnist`),
  permuted like the digits; ``mnist_train``/``mnist_test`` cap the examples used.

The digits are split 60/20/20 into train/validation/test by the seed; MNIST's training file is
split into train/validation, its test file is the test split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

SCENARIOS = ("permuted-digits", "rotated-digits", "split-digits", "permuted-mnist")


@dataclass
class ContinualTask:
    """One task of a stream: its splits (inputs flattened, float32; labels int64, local to the
    task's head), its id and its head's number of classes."""

    task_id: int
    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: int

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}: expected train, val or test")
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")


@dataclass
class Stream:
    """An ordered sequence of tasks with a common input size."""

    scenario: str
    tasks: list[ContinualTask]
    multi_head: bool
    in_features: int
    image_shape: tuple[int, int]
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, t: int) -> ContinualTask:
        if not isinstance(t, (int, np.integer)) or not 0 <= t < len(self.tasks):
            raise ValueError(f"task id {t!r} not in this stream of {len(self.tasks)} tasks (ids 0..{len(self.tasks) - 1})")
        return self.tasks[int(t)]

    @property
    def classes(self) -> int:
        """Outputs per head (the same for every task of a stream)."""
        return self.tasks[0].classes


@lru_cache(maxsize=1)
def _digits_arrays():
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.float32) / 16.0, data.target.astype(np.int64)


def _digits(seed: int):
    xa, ya = _digits_arrays()
    x, y = torch.from_numpy(xa.copy()), torch.from_numpy(ya.copy())
    order = torch.from_numpy(np.random.RandomState(seed).permutation(len(x)))
    n = len(x)
    n_val, n_test = int(round(0.2 * n)), int(round(0.2 * n))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return (x[train], y[train]), (x[val], y[val]), (x[test], y[test])


def rotate_images(x: Tensor, degrees: float, shape: tuple[int, int]) -> Tensor:
    """Rotate flattened images ``x`` [N, H*W] by ``degrees`` about their centre (bilinear, zeros outside)."""
    import torch.nn.functional as F

    if degrees == 0:
        return x.clone()
    h, w = shape
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    mat = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(mat, (len(x), 1, h, w), align_corners=False)
    out = F.grid_sample(x.view(len(x), 1, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(len(x), h * w)


def make_stream(scenario: str, n_tasks: int = 5, seed: int = 0, *, rotation_step: float = 30.0,
                mnist_dir: str | None = None, mnist_train: int = 10000, mnist_test: int = 2000) -> Stream:
    """The stream ``scenario`` with ``n_tasks`` tasks, every random choice (split, permutations)
    fixed by ``seed``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}: expected one of {', '.join(SCENARIOS)}")
    if not isinstance(n_tasks, (int, np.integer)) or n_tasks < 1:
        raise ValueError(f"the number of tasks must be a positive integer, got {n_tasks!r}")
    rng = np.random.RandomState(seed + 7919)
    if scenario == "permuted-mnist":
        from l2o.data.mnist import load_mnist

        xtr, ytr, xte, yte = load_mnist(mnist_dir)
        order = torch.from_numpy(np.random.RandomState(seed).permutation(len(xtr)))
        n_val = max(1, min(len(xtr) // 6, mnist_train // 5))
        val, train = order[:n_val], order[n_val:n_val + mnist_train]
        base = ((xtr[train], ytr[train]), (xtr[val], ytr[val]), (xte[:mnist_test], yte[:mnist_test]))
        side = int(round(math.sqrt(xtr.shape[1])))
        shape = (side, xtr.shape[1] // side)
    else:
        base = _digits(seed)
        shape = (8, 8)
    d = base[0][0].shape[1]
    tasks = []
    if scenario == "split-digits":
        if n_tasks > 5:
            raise ValueError(f"split-digits has at most 5 tasks (2 classes each), got {n_tasks}")
        for t in range(n_tasks):
            parts = []
            for x, y in base:
                keep = (y == 2 * t) | (y == 2 * t + 1)
                parts += [x[keep].clone(), y[keep] - 2 * t]
            tasks.append(ContinualTask(t, f"digits {2 * t}/{2 * t + 1}", *parts, classes=2))
        return Stream(scenario, tasks, True, d, shape)
    for t in range(n_tasks):
        if scenario == "rotated-digits":
            angle = t * rotation_step
            parts = []
            for x, y in base:
                parts += [rotate_images(x, angle, shape), y.clone()]
            tasks.append(ContinualTask(t, f"rotated {angle:g} deg", *parts, classes=10))
        else:
            perm = torch.arange(d) if t == 0 else torch.from_numpy(rng.permutation(d))
            parts = []
            for x, y in base:
                parts += [x[:, perm].contiguous(), y.clone()]
            tasks.append(ContinualTask(t, "identity" if t == 0 else f"permutation {t}", *parts, classes=10))
    info = {"rotation_step": rotation_step} if scenario == "rotated-digits" else {}
    return Stream(scenario, tasks, False, d, shape, info)
