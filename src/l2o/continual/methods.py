"""Continual-learning methods: the base class the runner drives, and the baselines.

A method owns its network and hooks into one shared training loop
(:func:`l2o.continual.runner.train_sequence`)::

    setup(stream, seed)                       build the network
    for each task t:
        begin_task(stream, t); opt = make_optimizer()
        for each batch:  loss(x, y, tids, t, b, B).backward(); before_step(t); opt.step(); after_step(t)
        end_task(stream, t, generator)        store what later tasks need
    logits(x, t)                              evaluation

Baselines here: plain fine-tuning (``sgd``), EWC (Kirkpatrick et al. 2017), A-GEM (Chaudhry et
al. 2019) and joint training on every task seen so far (``joint``, the upper bound). OGD and HAT
live in :mod:`l2o.continual.ogd` and :mod:`l2o.continual.hat`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from l2o.continual.nets import MultiHeadMLP


def flat_grad(params: list[Tensor]) -> Tensor:
    """The gradients of ``params`` as one vector (zeros for a None gradient)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def set_flat_grad(params: list[Tensor], vector: Tensor) -> None:
    """Write ``vector`` back into the parameters' ``.grad``."""
    i = 0
    for p in params:
        n = p.numel()
        p.grad = vector[i:i + n].view_as(p).clone()
        i += n


def sample_indices(n: int, m: int, generator: torch.Generator) -> Tensor:
    """``min(n, m)`` distinct indices of ``range(n)``, drawn from ``generator``."""
    return torch.randperm(n, generator=generator)[:min(n, m)]


class Method:
    """Plain fine-tuning: SGD on each task in turn, nothing kept between tasks."""

    name = "sgd"
    #: hyperparameters tuned on validation splits, with their default grids
    grids: dict[str, tuple] = {"lr": (0.01, 0.03, 0.1, 0.3)}
    # (EWC adds its λ grid; every method shares the learning-rate grid)

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, hidden: tuple[int, ...] = (100, 100),
                 dtype: torch.dtype = torch.float32):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.lr, self.momentum, self.hidden, self.dtype = float(lr), float(momentum), tuple(hidden), dtype
        self.model = None

    # -- construction --------------------------------------------------------------------
    def build_model(self, stream):
        return MultiHeadMLP(stream.in_features, self.hidden, stream.classes, len(stream) if stream.multi_head else 1)

    def setup(self, stream, seed: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = self.build_model(stream).to(self.dtype)
        self.stream = stream

    def params(self) -> list[Tensor]:
        return [p for p in self.model.parameters()]

    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.params(), lr=self.lr, momentum=self.momentum)

    # -- the training loop's hooks --------------------------------------------------------
    def train_data(self, stream, t: int) -> tuple[Tensor, Tensor, Tensor]:
        task = stream[t]
        return task.x_train, task.y_train, torch.full((len(task.y_train),), t, dtype=torch.long)

    def begin_task(self, stream, t: int) -> None:
        pass

    def loss(self, x: Tensor, y: Tensor, tids: Tensor, t: int, batch: int, batches: int) -> Tensor:
        return F.cross_entropy(self.model(x.to(self.dtype), tids if self.model.heads > 1 else t), y)

    def before_step(self, t: int) -> None:
        pass

    def after_step(self, t: int) -> None:
        pass

    def end_task(self, stream, t: int, generator: torch.Generator) -> None:
        pass

    def check_task(self, t) -> None:
        """ValueError unless ``t`` is the id of a task of the stream the method was set up for."""
        n = len(self.stream)
        if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < n:
            raise ValueError(f"task id {t!r} never seen: the stream has tasks 0..{n - 1}")

    @torch.no_grad()
    def logits(self, x: Tensor, t: int) -> Tensor:
        self.check_task(t)
        self.model.eval()
        out = self.model(x.to(self.dtype), t)
        self.model.train()
        return out

    def extras(self) -> dict:
        """Method-specific numbers recorded after each task (HAT's mask usage, OGD's basis size)."""
        return {}


class EWC(Method):
    """Elastic weight consolidation: after task t, the diagonal (empirical) Fisher F_t at θ*_t;
    later tasks add (λ/2) Σ_t Σ_i F_t,i (θ_i − θ*_t,i)² to the loss. The Fisher is the mean of
    squared per-example gradients of the log-likelihood of the true label (torch.func vmap)."""

    name = "ewc"
    grids = {"lr": (0.01, 0.03, 0.1, 0.3), "ewc_lambda": (10.0, 100.0, 1000.0)}

    def __init__(self, lr: float = 0.1, ewc_lambda: float = 100.0, fisher_samples: int = 500, **kw):
        super().__init__(lr, **kw)
        if not ewc_lambda >= 0:
            raise ValueError(f"ewc_lambda must be >= 0, got {ewc_lambda}")
        self.ewc_lambda, self.fisher_samples = float(ewc_lambda), int(fisher_samples)
        self.anchors: list[tuple[dict, dict]] = []

    def loss(self, x, y, tids, t, batch, batches):
        loss = super().loss(x, y, tids, t, batch, batches)
        if self.anchors and self.ewc_lambda > 0:
            penalty = 0.0
            for fisher, star in self.anchors:
                for name, p in self.model.named_parameters():
                    penalty = penalty + (fisher[name] * (p - star[name]) ** 2).sum()
            loss = loss + 0.5 * self.ewc_lambda * penalty
        return loss

    def end_task(self, stream, t, generator):
        from torch.func import functional_call, grad, vmap

        task = stream[t]
        idx = sample_indices(len(task.y_train), self.fisher_samples, generator)
        x, y = task.x_train[idx].to(self.dtype), task.y_train[idx]
        params = {k: v.detach() for k, v in self.model.named_parameters()}

        def nll(p, xi, yi):
            out = functional_call(self.model, p, (xi.unsqueeze(0), t))
            return F.cross_entropy(out, yi.unsqueeze(0))

        grads = vmap(grad(nll), in_dims=(None, 0, 0))(params, x, y)
        fisher = {k: (g ** 2).mean(0) for k, g in grads.items()}
        self.anchors.append((fisher, {k: v.clone() for k, v in params.items()}))


class AGEM(Method):
    """Averaged gradient episodic memory: M examples kept per task; when the step's gradient g
    has a negative inner product with the gradient g_ref of a batch drawn from the memory, g is
    replaced by g − (g·g_ref / g_ref·g_ref) g_ref."""

    name = "agem"

    def __init__(self, lr: float = 0.1, memory: int = 20, ref_batch: int = 256, **kw):
        super().__init__(lr, **kw)
        if memory < 1:
            raise ValueError(f"memory (examples per task) must be >= 1, got {memory}")
        self.memory, self.ref_batch = int(memory), int(ref_batch)
        self.mem_x, self.mem_y, self.mem_t = [], [], []
        self.projected_steps = 0

    def setup(self, stream, seed):
        super().setup(stream, seed)
        self._gen = torch.Generator().manual_seed(seed + 17)

    def before_step(self, t):
        if not self.mem_x:
            return
        ps = self.params()
        g = flat_grad(ps)
        x, y, tids = torch.cat(self.mem_x), torch.cat(self.mem_y), torch.cat(self.mem_t)
        idx = sample_indices(len(y), self.ref_batch, self._gen)
        self.model.zero_grad(set_to_none=True)
        out = self.model(x[idx].to(self.dtype), tids[idx] if self.model.heads > 1 else 0)
        F.cross_entropy(out, y[idx]).backward()
        g_ref = flat_grad(ps)
        dot = torch.dot(g, g_ref)
        if dot < 0:
            g = g - dot / torch.dot(g_ref, g_ref).clamp_min(1e-30) * g_ref
            self.projected_steps += 1
        set_flat_grad(ps, g)

    def end_task(self, stream, t, generator):
        task = stream[t]
        idx = sample_indices(len(task.y_train), self.memory, generator)
        self.mem_x.append(task.x_train[idx])
        self.mem_y.append(task.y_train[idx])
        self.mem_t.append(torch.full((len(idx),), t, dtype=torch.long))

    def extras(self):
        return {"projected_steps": self.projected_steps}


class Joint(Method):
    """The upper bound: while on task t, train on the union of the training sets of tasks 0..t
    (each example through its own task's head)."""

    name = "joint"

    def train_data(self, stream, t):
        xs, ys, ts = [], [], []
        for j in range(t + 1):
            task = stream[j]
            xs.append(task.x_train)
            ys.append(task.y_train)
            ts.append(torch.full((len(task.y_train),), j, dtype=torch.long))
        return torch.cat(xs), torch.cat(ys), torch.cat(ts)


SGD = Method
