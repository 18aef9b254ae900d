"""The paper's 10-dimensional quadratic: f(theta) = ||W theta - y||^2 with Gaussian W and y."""

from __future__ import annotations

import torch

from l2o.tasks.base import Params, Task, TaskFamily, seed_from


class QuadraticTask(Task):
    """f(theta) = ||W theta - y||_2^2 (Andrychowicz et al. 2016, section 3.1).

    W (dim x dim) and y (dim) have IID standard normal entries, drawn from ``seed``: each seed
    is a new task. theta starts at N(0, init_scale^2) (0.01, as in the authors' code). The loss
    is deterministic, so ``batches`` yields None and test loss equals training loss.
    """

    name = "quadratic"
    steps = 100
    batch_size = None
    metric = "test_loss"

    def __init__(self, dim: int = 10, seed: int = 0, init_scale: float = 0.01, steps: int = 100):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        g = torch.Generator().manual_seed(int(seed))
        self.dim, self.seed, self.init_scale, self.steps = dim, seed, init_scale, steps
        self.W = torch.randn(dim, dim, generator=g)
        self.y = torch.randn(dim, generator=g)

    def init_params(self, generator: torch.Generator) -> Params:
        return {"theta": self.init_scale * torch.randn(self.dim, generator=generator)}

    def loss(self, params: Params, batch=None) -> torch.Tensor:
        r = self.W @ params["theta"] - self.y
        return (r * r).sum()

    def describe(self):
        return {**super().describe(), "dim": self.dim, "seed": self.seed}


class QuadraticFamily(TaskFamily):
    """New W, y per sampled task."""

    name = "quadratic"

    def __init__(self, dim: int = 10, steps: int = 100):
        self.dim, self.steps = dim, steps

    def sample(self, generator: torch.Generator) -> QuadraticTask:
        return QuadraticTask(dim=self.dim, seed=seed_from(generator), steps=self.steps)
