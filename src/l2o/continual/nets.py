"""The plain network of the continual-learning room: an MLP with one shared head or a head per task.

Heads are one ``nn.Linear`` with ``heads * classes`` outputs; task ``t`` reads the slice
``[t*classes, (t+1)*classes)``, so each head has its own rows of weights and a batch may mix
tasks (joint training, A-GEM's memory).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def task_index(t, batch: int, device=None) -> Tensor:
    """``t`` (an int or a tensor of task ids) as a long tensor of length ``batch``."""
    if isinstance(t, Tensor):
        return t.to(device=device, dtype=torch.long).reshape(-1).expand(batch) if t.numel() == 1 else t.long()
    return torch.full((batch,), int(t), dtype=torch.long, device=device)


def select_head(out: Tensor, t, heads: int, classes: int) -> Tensor:
    """The logits of task ``t``'s head from the stacked outputs ``out`` [B, heads*classes]."""
    if heads == 1:
        return out
    if not isinstance(t, Tensor):
        t = int(t)
        if not 0 <= t < heads:
            raise ValueError(f"task id {t} has no head: the network has heads for tasks 0..{heads - 1}")
        return out[:, t * classes:(t + 1) * classes]
    idx = task_index(t, out.shape[0], out.device)
    return out.view(out.shape[0], heads, classes)[torch.arange(out.shape[0], device=out.device), idx]


class MultiHeadMLP(nn.Module):
    """``in -> hidden... -> heads x classes`` with ReLU; ``forward(x, t)`` gives task ``t``'s logits."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (100, 100), classes: int = 10, heads: int = 1):
        super().__init__()
        if heads < 1 or classes < 1:
            raise ValueError(f"heads and classes must be positive, got {heads} and {classes}")
        sizes = (in_features, *hidden)
        self.body = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], heads * classes)
        self.heads, self.classes = heads, classes

    def forward(self, x: Tensor, t=0) -> Tensor:
        for layer in self.body:
            x = torch.relu(layer(x))
        return select_head(self.head(x), t, self.heads, self.classes)
