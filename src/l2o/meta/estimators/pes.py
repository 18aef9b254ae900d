"""Persistent evolution strategies (Vicol, Metz & Sohl-Dickstein, ICML 2021).

Each of ``pairs`` antithetic particles keeps two trajectories of its own for the whole episode
(weights ``theta + eps`` and ``theta - eps``, a fresh ``eps`` every truncation) and the sum
``xi`` of the perturbations it has received; a truncation's estimate is
:func:`._math.pes_gradient`. Summed over an episode's truncations it is unbiased for the
gradient of the smoothed whole-episode objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from l2o.meta.estimators._math import pes_gradient
from l2o.meta.estimators.base import Estimate, GradientEstimator, Unroll, check_es, perturbations


@dataclass
class PESState:
    """The particles' episodes (rows ``0..N-1``: ``theta + eps``; ``N..2N-1``: ``theta - eps``)
    and their accumulated perturbations ``xi`` (N, D)."""

    particles: list[Any]
    xi: Tensor


class PES(GradientEstimator[PESState]):
    """PES with perturbation scale ``sigma`` and ``pairs`` antithetic pairs."""

    name = "pes"

    def __init__(self, sigma: float, pairs: int):
        check_es(sigma, pairs)
        self.sigma, self.pairs = float(sigma), int(pairs)

    def init_state(self, episode, dim, clone=None, dtype: torch.dtype = torch.float32) -> PESState:
        """``clone`` copies the episode (default ``episode.clone``); the first particle is ``episode``."""
        clone = clone or (lambda e: e.clone())
        return PESState([episode] + [clone(episode) for _ in range(2 * self.pairs - 1)],
                        torch.zeros(self.pairs, dim, dtype=dtype))

    def estimate(self, unroll: Unroll, theta: Tensor, state: PESState, key: torch.Generator) -> Estimate[PESState]:
        eps = perturbations(key, self.pairs, theta, self.sigma)
        xi = state.xi.to(device=theta.device, dtype=theta.dtype) + eps
        losses, finite = unroll.forward(torch.cat([theta + eps, theta - eps]), state.particles)
        return Estimate(pes_gradient(xi, losses, self.sigma), float(losses.mean()), PESState(state.particles, xi), finite)

    @staticmethod
    def episode_of(state):
        return state.particles[0]

    def state_to_tensors(self, state, prefix):
        tensors = {f"{prefix}xi": state.xi.detach().cpu().clone()}
        metas = []
        for i, particle in enumerate(state.particles):
            t, m = particle.to_tensors(f"{prefix}particle/{i}/")
            tensors.update(t)
            metas.append(m)
        return tensors, {"particles": metas}

    def state_from_tensors(self, tensors, meta, prefix, load_episode):
        particles = [load_episode(tensors, m, f"{prefix}particle/{i}/") for i, m in enumerate(meta["particles"])]
        return PESState(particles, tensors[f"{prefix}xi"].clone())


__all__ = ["PES", "PESState"]
