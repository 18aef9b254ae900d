"""The evolution-strategies arithmetic shared by :mod:`.es` and :mod:`.pes`.

- :func:`antithetic_es`: the gradient of the Gaussian-smoothed objective
  ``E_eps[L(theta + eps)]``, ``eps ~ N(0, sigma^2 I)``, estimated with antithetic pairs::

      g = 1 / (2 N sigma^2) * sum_i eps_i (L(theta + eps_i) - L(theta - eps_i))

  Over one truncation of a long unroll started from a state reached with the unperturbed theta
  this is truncated ES: it ignores theta's effect on the starting state, so it is biased for the
  whole-unroll objective.
- :func:`pes_gradient` (Vicol, Metz & Sohl-Dickstein, ICML 2021): each antithetic particle keeps
  its own perturbed trajectory across truncations and accumulates the perturbations it has
  received, ``xi_i <- xi_i + eps_i``; ``1 / (2 N sigma^2) * sum_i xi_i (L_t(theta + eps_i) -
  L_t(theta - eps_i))`` summed over the truncations of an episode is an unbiased estimate of the
  gradient of the smoothed whole-unroll objective.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from l2o.meta.estimators.base import check_es, perturbations

BatchObjective = Callable[[Tensor], Tensor]


def es_gradient(directions: Tensor, losses: Tensor, sigma: float) -> Tensor:
    """``1 / (2 N sigma^2) * sum_i directions_i (L_i^+ - L_i^-)`` for ``losses`` = [L^+; L^-]."""
    pairs = directions.shape[0]
    diff = losses[:pairs] - losses[pairs:]
    return (directions * diff.unsqueeze(1)).sum(0) / (2.0 * pairs * sigma**2)


def pes_gradient(xi: Tensor, losses: Tensor, sigma: float) -> Tensor:
    """The PES estimate of one truncation: :func:`es_gradient` along the accumulated ``xi``."""
    return es_gradient(xi, losses, sigma)


def antithetic_es(objective: BatchObjective, theta: Tensor, sigma: float, pairs: int,
                  generator: torch.Generator) -> tuple[Tensor, float]:
    """Antithetic ES estimate of the gradient of ``objective`` ((P, D) -> (P,)) at ``theta``;
    returns it and the mean loss over the 2N particles."""
    check_es(sigma, pairs)
    eps = perturbations(generator, pairs, theta, sigma)
    losses = objective(torch.cat([theta + eps, theta - eps]))
    return es_gradient(eps, losses, sigma), float(losses.mean())


__all__ = ["antithetic_es", "es_gradient", "pes_gradient"]
