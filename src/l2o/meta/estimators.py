"""Evolution-strategies estimators of meta-gradients: antithetic ES and truncated PES.

Both treat the meta-parameters as one flat vector ``theta`` (see :func:`flatten_module` /
:func:`load_flat`) and need only forward evaluations of the meta-objective, so they work
through non-differentiable or chaotic unrolls where back-propagation struggles.

- :func:`antithetic_es`: the gradient of the Gaussian-smoothed objective
  ``E_eps[L(theta + eps)]``, ``eps ~ N(0, sigma^2 I)``, estimated with antithetic pairs::

      g = 1 / (2 N sigma^2) * sum_i eps_i (L(theta + eps_i) - L(theta - eps_i))

  For an objective evaluated over one truncation of a long unroll (starting from a state
  reached with the unperturbed theta), this is truncated ES: it ignores the effect of theta on
  the state the truncation starts from, so it is biased for the full-unroll objective.
- :class:`PES` (Vicol, Metz & Sohl-Dickstein, ICML 2021): each antithetic particle keeps its
  own perturbed trajectory across truncations and accumulates the perturbations it has
  received, ``xi_i <- xi_i + eps_i``; the truncation's estimate
  ``1 / (2 N sigma^2) * sum_i xi_i (L_t(theta + eps_i) - L_t(theta - eps_i))`` summed over
  the truncations of an episode is an unbiased estimate of the gradient of the smoothed
  full-unroll objective (with the same noise held fixed along a truncation).

Objectives take a (P, D) matrix of parameter vectors (one row per particle) so that callers
may evaluate particles in a loop or vectorized.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

BatchObjective = Callable[[Tensor], Tensor]


def flatten_module(module: nn.Module) -> Tensor:
    """The module's parameters as one detached flat vector."""
    return torch.nn.utils.parameters_to_vector([p.detach() for p in module.parameters()]).clone()


def load_flat(module: nn.Module, vector: Tensor) -> None:
    """Write a flat vector (as from :func:`flatten_module`) into the module's parameters."""
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(vector.to(next(module.parameters()).dtype), list(module.parameters()))


def _noise(generator: torch.Generator, pairs: int, theta: Tensor) -> Tensor:
    """(pairs, D) standard normals drawn on the generator's device (the CPU) and moved to
    ``theta``'s: the same perturbations whichever device the meta-parameters live on."""
    return torch.randn(pairs, theta.numel(), generator=generator, dtype=theta.dtype).to(theta.device)


def _check(sigma: float, pairs: int) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")


def antithetic_es(objective: BatchObjective, theta: Tensor, sigma: float, pairs: int,
                  generator: torch.Generator) -> tuple[Tensor, float]:
    """Antithetic ES estimate of the gradient of ``objective`` at ``theta``.

    Args:
        objective: maps a (P, D) matrix of parameter vectors to their (P,) losses.
        theta: (D,) parameters.
        sigma: standard deviation of the perturbations.
        pairs: number of antithetic pairs N.
        generator: source of the perturbations (seeded by the caller).

    Returns:
        The (D,) gradient estimate and the mean loss over the 2N particles.
    """
    _check(sigma, pairs)
    eps = _noise(generator, pairs, theta) * sigma
    losses = objective(torch.cat([theta + eps, theta - eps]))
    diff = losses[:pairs] - losses[pairs:]
    grad = (eps * diff.unsqueeze(1)).sum(0) / (2.0 * pairs * sigma**2)
    return grad, float(losses.mean())


class PES:
    """Persistent evolution strategies over the truncations of an unroll.

    Each of ``pairs`` antithetic particles keeps two unroll states (for ``theta + eps`` and
    ``theta - eps``) and its accumulated perturbation ``xi``. Call :meth:`reset` at the start of
    an episode with the initial unroll state, then :meth:`step` once per truncation.

    Args:
        sigma: standard deviation of the perturbations.
        pairs: number of antithetic pairs N.
    """

    def __init__(self, sigma: float, pairs: int):
        _check(sigma, pairs)
        self.sigma, self.pairs = float(sigma), int(pairs)
        self.xi: Tensor | None = None
        self.states: list[Any] = []

    def reset(self, make_state: Callable[[], Any], dim: int, dtype: torch.dtype = torch.float32) -> None:
        """Start an episode: ``make_state()`` builds each of the 2N particle states (they must
        be independent copies of the same initial state); accumulated noise is cleared."""
        self.xi = torch.zeros(self.pairs, dim, dtype=dtype)
        self.states = [make_state() for _ in range(2 * self.pairs)]

    def step(self, truncation: Callable[[Tensor, list[Any]], tuple[Tensor, list[Any]]], theta: Tensor,
             generator: torch.Generator) -> tuple[Tensor, float]:
        """Run one truncation for every particle and return the PES gradient estimate.

        Args:
            truncation: ``truncation(thetas (2N, D), states) -> (losses (2N,), new_states)``;
                rows ``0..N-1`` are ``theta + eps``, rows ``N..2N-1`` are ``theta - eps``.
            theta: (D,) current meta-parameters.
            generator: source of this truncation's perturbations.

        Returns:
            The (D,) estimate for this truncation and the mean loss over particles.
        """
        if self.xi is None:
            raise RuntimeError("PES.step called before PES.reset")
        eps = _noise(generator, self.pairs, theta) * self.sigma
        self.xi = self.xi.to(theta.device) + eps
        losses, self.states = truncation(torch.cat([theta + eps, theta - eps]), self.states)
        diff = losses[: self.pairs] - losses[self.pairs:]
        grad = (self.xi * diff.unsqueeze(1)).sum(0) / (2.0 * self.pairs * self.sigma**2)
        return grad, float(losses.mean())


__all__ = ["antithetic_es", "PES", "flatten_module", "load_flat"]
