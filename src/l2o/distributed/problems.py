"""Small seeded problems split across K workers, shared by the simulator and real processes.

Each worker holds its own shard of the data (the examples are dealt out after a seeded shuffle)
and draws its minibatch of a step from a generator seeded by (seed, step, worker), so a worker's
batches are the same whichever way the algorithm runs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Problem:
    """``make_model()``, ``worker_batch(worker, step)``, ``loss(model, batch)``, ``full_loss(model)``."""

    name = "problem"

    def __init__(self, workers: int, batch_size: int | None, seed: int = 0, dtype: torch.dtype = torch.float32):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.workers, self.batch_size, self.seed, self.dtype = workers, batch_size, seed, dtype
        x, y = self._data()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        self.x, self.y = x[order], y[order]
        self.shards = [torch.arange(w, len(x), workers) for w in range(workers)]

    def _data(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _module(self) -> nn.Module:
        raise NotImplementedError

    def make_model(self) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self._module().to(self.dtype)

    def worker_batch(self, worker: int, step: int) -> tuple[Tensor, Tensor]:
        shard = self.shards[worker]
        if self.batch_size is None or self.batch_size >= len(shard):
            return self.x[shard], self.y[shard]
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step) * 10_007 + worker)
        pick = shard[torch.randint(len(shard), (self.batch_size,), generator=gen)]
        return self.x[pick], self.y[pick]

    def loss(self, model: nn.Module, batch) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def full_loss(self, model: nn.Module) -> float:
        return float(self.loss(model, (self.x, self.y)))


class LeastSquares(Problem):
    """Linear regression ``½ mean (aᵀx − b)²`` on synthetic data; full local gradients (σ = 0)."""

    name = "least_squares"

    def __init__(self, workers=4, dim=100, examples=1200, batch_size=None, seed=0, dtype=torch.float32):
        self.dim, self.examples = dim, examples
        super().__init__(workers, batch_size, seed, dtype)

    def _data(self):
        gen = torch.Generator().manual_seed(10_000 + self.seed)
        a = torch.randn(self.examples, self.dim, generator=gen, dtype=torch.float64)
        x_star = torch.randn(self.dim, generator=gen, dtype=torch.float64)
        b = a @ x_star + 0.1 * torch.randn(self.examples, generator=gen, dtype=torch.float64)
        return a.to(self.dtype), b.to(self.dtype)

    def _module(self):
        model = nn.Linear(self.dim, 1, bias=False)
        nn.init.zeros_(model.weight)
        return model

    def loss(self, model, batch):
        x, y = batch
        return 0.5 * (model(x).squeeze(-1) - y).pow(2).mean()

    def optimum(self) -> float:
        """The least-squares minimum (float64 solve), for suboptimality plots."""
        a, b = self.x.double(), self.y.double()
        sol = torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1)
        return float(0.5 * (a @ sol - b).pow(2).mean())


class _Digits(Problem):
    def _data(self):
        from l2o.data.digits import load_digits_split

        x, y, _, _ = load_digits_split(seed=0)
        return x.to(self.dtype), y

    def loss(self, model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)


class DigitsLogistic(_Digits):
    """Multinomial logistic regression on scikit-learn's digits (64 → 10), zero init."""

    name = "digits_logistic"

    def __init__(self, workers=4, batch_size=32, seed=0, dtype=torch.float32):
        super().__init__(workers, batch_size, seed, dtype)

    def _module(self):
        model = nn.Linear(64, 10)
        nn.init.zeros_(model.weight)
        nn.init.zeros_(model.bias)
        return model


class DigitsMLP(_Digits):
    """A 64 → hidden → 10 ReLU MLP on the digits (PyTorch's default init under the seed)."""

    name = "digits_mlp"

    def __init__(self, workers=8, batch_size=32, hidden=64, seed=0, dtype=torch.float32):
        self.hidden = hidden
        super().__init__(workers, batch_size, seed, dtype)

    def _module(self):
        return nn.Sequential(nn.Linear(64, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 10))


PROBLEMS = {"least_squares": LeastSquares, "digits_logistic": DigitsLogistic, "digits_mlp": DigitsMLP}


def make_problem(name: str, **kwargs) -> Problem:
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; choose from {', '.join(PROBLEMS)}")
    return PROBLEMS[name](**kwargs)
