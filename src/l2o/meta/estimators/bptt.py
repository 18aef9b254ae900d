"""Truncated back-propagation through time (Andrychowicz et al. 2016).

The meta-gradient of one truncation's meta-loss through the unroll, the graph cut at the
truncation's start (optimizee parameters and rule state carry over detached); optimizee
gradients are not differentiated unless the unroll is ``second_order``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2o.meta.estimators.base import EpisodeStateEstimator, Estimate, Unroll


@dataclass
class BPTTState:
    """The episode in flight."""

    episode: Any


class BPTT(EpisodeStateEstimator[BPTTState]):
    """Truncated BPTT. ``parameters``: the tensors the meta-gradient is taken for (the rule's)."""

    name = "bptt"
    state_type = BPTTState

    def __init__(self, parameters: list[Tensor]):
        self.parameters = list(parameters)

    def estimate(self, unroll: Unroll, theta: Tensor, state: BPTTState, key: torch.Generator) -> Estimate[BPTTState]:
        meta_loss, finite = unroll.differentiable(state.episode)
        value = float(meta_loss.detach())
        if math.isfinite(value) and meta_loss.requires_grad:
            grads = torch.autograd.grad(meta_loss, self.parameters, allow_unused=True)
            grad = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                              for g, p in zip(grads, self.parameters)])
        else:
            grad = torch.full_like(theta, math.nan if not math.isfinite(value) else 0.0)
        return Estimate(grad, value, state, finite)


__all__ = ["BPTT", "BPTTState"]
