"""Truncated antithetic evolution strategies.

Every truncation, ``2 * pairs`` copies of the episode run it with weights ``theta +- eps_i``
from the state the episode has reached; the estimate is :func:`._math.es_gradient` of their
meta-losses. The episode itself then advances with the unperturbed weights. Only forward
unrolls are needed; the estimate ignores theta's effect on the truncation's starting state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2o.meta.estimators._math import es_gradient
from l2o.meta.estimators.base import EpisodeStateEstimator, Estimate, Unroll, check_es, perturbations


@dataclass
class TruncatedESState:
    """The episode in flight (the particles are copies of it, made per truncation)."""

    episode: Any


class TruncatedES(EpisodeStateEstimator[TruncatedESState]):
    """Antithetic truncated ES with perturbation scale ``sigma`` and ``pairs`` antithetic pairs."""

    name = "es"
    state_type = TruncatedESState

    def __init__(self, sigma: float, pairs: int):
        check_es(sigma, pairs)
        self.sigma, self.pairs = float(sigma), int(pairs)

    def estimate(self, unroll: Unroll, theta: Tensor, state: TruncatedESState,
                 key: torch.Generator) -> Estimate[TruncatedESState]:
        eps = perturbations(key, self.pairs, theta, self.sigma)
        particles = [unroll.clone(state.episode) for _ in range(2 * self.pairs)]
        losses, _ = unroll.forward(torch.cat([theta + eps, theta - eps]), particles)
        _, finite = unroll.forward(theta.unsqueeze(0), [state.episode])
        return Estimate(es_gradient(eps, losses, self.sigma), float(losses.mean()), state, finite)


__all__ = ["TruncatedES", "TruncatedESState"]
