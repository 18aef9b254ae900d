"""Hard Attention to the Task (Serrà, Surís, Miron & Karatzoglou, ICML 2018).

Every masked layer has a task embedding e_t (one value per unit or channel); its units are gated
by a_t = σ(s·e_t). During training s is annealed within each epoch from 1/s_max to s_max
(s = 1/s_max + (s_max − 1/s_max)(b − 1)/(B − 1) for batch b of B); at test time s = s_max, where
the gates are (numerically) binary. After task t the cumulative mask a^{≤t} = max(a^{<t}, a_t)
records which units earlier tasks use, and the gradient of a weight w_ij from unit j to unit i is
multiplied by 1 − min(a^{<t}_i, a^{<t}_j) (biases by 1 − a^{<t}_i). The loss adds
c · Σ a_t (1 − a^{<t}) / Σ (1 − a^{<t}) (c = 0.75) so that a task reuses units or takes few new
ones. The embedding's gradient is compensated for the annealing:
∂e ← ∂e · (s_max / s) · (cosh(clamp(s e, ±50)) + 1) / (cosh(e) + 1), and embeddings are clamped
to ±6 after each step.

Output units: with a head per task, the rows of head t count as used by task t only; with one
shared head (permuted or rotated digits) every output unit counts as used by every task, so after
the first task only weights leaving units no earlier task uses can still learn.

Any ``torch.optim`` optimizer: multiplying gradients does not stop a stateful optimizer from
moving a blocked weight (momentum carried from before, Adam's moments, weight decay), nor the
embeddings of other tasks. With ``guard=True`` (default) every entry whose gradient factor is
exactly 0, and every other task's embedding row, is put back to its value before the step, so
blocked units receive no update whatever the optimizer (tested for momentum SGD and Adam).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from l2o.continual.methods import Method
from l2o.continual.nets import select_head


class HATLinear(nn.Linear):
    """A linear layer whose output units are gated by σ(s · e_t)."""

    def __init__(self, in_features: int, out_features: int, tasks: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.embedding = nn.Embedding(tasks, out_features)  # N(0, 1), as in the reference

    def gate(self, t: int, s: float) -> Tensor:
        check_task(t, self.embedding.num_embeddings)
        return torch.sigmoid(s * self.embedding.weight[t])

    def forward(self, x: Tensor, t: int, s: float) -> Tensor:
        return super().forward(x) * self.gate(t, s)


class HATConv2d(nn.Conv2d):
    """A 2-D convolution whose output channels are gated by σ(s · e_t)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, tasks: int, **kw):
        super().__init__(in_channels, out_channels, kernel_size, **kw)
        self.embedding = nn.Embedding(tasks, out_channels)

    def gate(self, t: int, s: float) -> Tensor:
        check_task(t, self.embedding.num_embeddings)
        return torch.sigmoid(s * self.embedding.weight[t])

    def forward(self, x: Tensor, t: int, s: float) -> Tensor:
        return super().forward(x) * self.gate(t, s)[None, :, None, None]


def check_task(t, tasks: int) -> None:
    if isinstance(t, Tensor) or not isinstance(t, int) or not 0 <= t < tasks:
        raise ValueError(f"task id {t!r} never seen: HAT has embeddings for tasks 0..{tasks - 1} (one int per batch)")


def weight_factor(layer: nn.Module, prev_out: Tensor, prev_in: Tensor | None) -> Tensor:
    """1 − min(a^{<t}_out, a^{<t}_in) broadcast to ``layer.weight``'s shape (``prev_in`` None: inputs
    are never masked, so the factor is 1 − a^{<t}_out)."""
    w = layer.weight
    out = prev_out.reshape(-1, *([1] * (w.dim() - 1)))
    if prev_in is None:
        used = out.expand_as(w)
    else:
        inn = prev_in.reshape(1, -1, *([1] * (w.dim() - 2)))
        used = torch.minimum(out, inn)
    return (1 - used).expand_as(w)


def compensation(e: Tensor, s: float, s_max: float, thres_cosh: float = 50.0) -> Tensor:
    """The embedding-gradient factor (s_max / s) · (cosh(clamp(s e, ±thres)) + 1) / (cosh(e) + 1).

    Without the clamp, a gradient multiplied by it equals s_max · σ'(e) · ∂L/∂a: the gradient the
    embedding would get at s = 1, scaled by s_max, whatever s the annealing is at."""
    num = torch.cosh(torch.clamp(s * e, -thres_cosh, thres_cosh)) + 1
    return (s_max / s) * num / (torch.cosh(e) + 1)


class HATNet(nn.Module):
    """MLP with HAT-masked hidden layers and a shared or per-task head (unmasked)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...], classes: int, heads: int, tasks: int):
        super().__init__()
        sizes = (in_features, *hidden)
        self.layers = nn.ModuleList(HATLinear(a, b, tasks) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], heads * classes)
        self.heads, self.classes, self.tasks = heads, classes, tasks

    def forward(self, x: Tensor, t: int, s: float, return_gates: bool = False):
        gates = []
        for layer in self.layers:
            x = torch.relu(layer(x, t, s))
            gates.append(layer.gate(t, s))
        out = select_head(self.head(x), t, self.heads, self.classes)
        return (out, gates) if return_gates else out


class HAT(Method):
    """HAT on the shared training loop (any ``torch.optim`` optimizer; see the module notes)."""

    name = "hat"
    grids = {"lr": (0.01, 0.03, 0.1, 0.3)}

    def __init__(self, lr: float = 0.05, s_max: float = 400.0, c: float = 0.75, clamp: float = 6.0,
                 thres_cosh: float = 50.0, clipgrad: float = 10000.0, guard: bool = True,
                 optimizer: str = "sgd", **kw):
        super().__init__(lr, **kw)
        if not s_max >= 1:
            raise ValueError(f"s_max must be >= 1, got {s_max}")
        if not c >= 0:
            raise ValueError(f"c (mask-sparsity weight) must be >= 0, got {c}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.s_max, self.c, self.clamp, self.thres_cosh = float(s_max), float(c), float(clamp), float(thres_cosh)
        self.clipgrad, self.guard, self.optimizer = float(clipgrad), bool(guard), optimizer
        self._s = 1.0

    def build_model(self, stream):
        return HATNet(stream.in_features, self.hidden, stream.classes,
                      len(stream) if stream.multi_head else 1, len(stream))

    def setup(self, stream, seed):
        super().setup(stream, seed)
        m = self.model
        self.prev = [torch.zeros(l.out_features, dtype=self.dtype) for l in m.layers]
        self.prev_head = torch.zeros(m.head.out_features, dtype=self.dtype)
        self.usage: list[list[float]] = []
        self._factors = None

    def make_optimizer(self):
        if self.optimizer == "adam":
            return torch.optim.Adam(self.params(), lr=self.lr)
        return super().make_optimizer()

    def begin_task(self, stream, t):
        check_task(t, self.model.tasks)
        self._factors = self.factors(t)

    def factors(self, t: int) -> dict[str, Tensor]:
        """Per parameter name, the factor its gradient is multiplied by while training task ``t``."""
        m, out = self.model, {}
        prev_in = None
        for i, layer in enumerate(m.layers):
            out[f"layers.{i}.weight"] = weight_factor(layer, self.prev[i], prev_in)
            out[f"layers.{i}.bias"] = 1 - self.prev[i]
            rows = torch.zeros_like(layer.embedding.weight)
            rows[t] = 1
            out[f"layers.{i}.embedding.weight"] = rows
            prev_in = self.prev[i]
        out["head.weight"] = weight_factor(m.head, self.prev_head, prev_in)
        out["head.bias"] = 1 - self.prev_head
        return out

    def sparsity(self, gates: list[Tensor]) -> Tensor:
        """Σ a_t (1 − a^{<t}) / Σ (1 − a^{<t}) over all masked layers."""
        num = sum((g * (1 - p)).sum() for g, p in zip(gates, self.prev))
        den = sum((1 - p).sum() for p in self.prev)
        return num / den if den > 0 else num * 0

    def loss(self, x, y, tids, t, batch, batches):
        s = 1 / self.s_max + (self.s_max - 1 / self.s_max) * batch / max(batches - 1, 1)
        self._s = s
        out, gates = self.model(x.to(self.dtype), t, s, return_gates=True)
        return F.cross_entropy(out, y) + self.c * self.sparsity(gates)

    def before_step(self, t):
        with torch.no_grad():
            named = dict(self.model.named_parameters())
            for name, f in self._factors.items():
                p = named[name]
                if p.grad is None:
                    continue
                if name.endswith("embedding.weight"):
                    p.grad[t] *= compensation(p[t], self._s, self.s_max, self.thres_cosh)
                else:
                    p.grad *= f
            if self.clipgrad and math.isfinite(self.clipgrad):
                torch.nn.utils.clip_grad_norm_(self.params(), self.clipgrad)
            if self.guard:
                self._before = {n: named[n].detach().clone() for n in self._factors}

    def after_step(self, t):
        with torch.no_grad():
            named = dict(self.model.named_parameters())
            if self.guard:
                for name, f in self._factors.items():
                    p = named[name]
                    p.copy_(torch.where(f == 0, self._before[name], p))
            for layer in self.model.layers:
                layer.embedding.weight[t].clamp_(-self.clamp, self.clamp)

    @torch.no_grad()
    def task_gates(self, t: int) -> list[Tensor]:
        """Task ``t``'s masks at s = s_max, one per masked layer."""
        return [layer.gate(t, self.s_max).detach().clone() for layer in self.model.layers]

    def end_task(self, stream, t, generator):
        gates = self.task_gates(t)
        self.prev = [torch.maximum(p, g) for p, g in zip(self.prev, gates)]
        if self.model.heads == 1:
            self.prev_head = torch.ones_like(self.prev_head)
        else:
            k = self.model.classes
            self.prev_head[t * k:(t + 1) * k] = 1
        self.usage.append([float(g.mean()) for g in gates])

    @torch.no_grad()
    def logits(self, x, t):
        self.model.eval()
        out = self.model(x.to(self.dtype), t, self.s_max)
        self.model.train()
        return out

    def extras(self):
        return {"mask_usage": [float(p.mean()) for p in self.prev],
                "task_mask_usage": self.usage[-1] if self.usage else None}
