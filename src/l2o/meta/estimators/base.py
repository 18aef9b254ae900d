"""What every meta-gradient estimator shares: the signature, the unroll it drives, flat weights.

An estimator is a class with its own typed state (one per group of episodes in flight) and one
signature, after the ``GradientEstimator`` subclasses of learned_optimization:

- ``init_state(episode, dim) -> State``: the state for a freshly started episode (``dim``: the
  number of meta-parameters);
- ``estimate(unroll, theta, state, key) -> Estimate``: advance the state by one truncation and
  return the meta-gradient estimate (a flat vector like ``theta``), the meta-loss value and the
  advanced state;
- ``state_to_tensors`` / ``state_from_tensors``: the state as tensors + JSON for checkpoints,
  so that a resumed run continues the very episodes that were in flight.

``unroll`` (:class:`Unroll`) is the only thing an estimator knows about tasks: it advances an
episode by one truncation, differentiably (:meth:`Unroll.differentiable`) or forward only for
a batch of perturbed weights (:meth:`Unroll.forward`). The trainer provides one over
:class:`l2o.meta.episode.Episode`; tests provide toy ones.

Data-parallel meta-training (one process per share of the work) fits this shape: a worker
advances its share of the task batch (BPTT) or of the antithetic pairs (``pairs`` split by
rank: :func:`pair_share`), and the trainer sums the workers' estimates before the meta-step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import Tensor, nn

S = TypeVar("S")


class Unroll(Protocol):
    """One truncation of an episode (see the module docstring)."""

    def differentiable(self, episode: Any) -> tuple[Tensor, bool]:
        """Advance ``episode`` with the rule's own weights; the meta-loss attached to their graph,
        and whether the inner losses and parameters stayed finite."""

    def forward(self, thetas: Tensor, episodes: list[Any]) -> tuple[Tensor, bool]:
        """Advance ``episodes[i]`` with weights ``thetas[i]`` (no graph); the (P,) meta-losses and
        whether every inner loss and parameter stayed finite."""

    def clone(self, episode: Any) -> Any:
        """An independent copy of ``episode`` (the same batches follow)."""


@dataclass
class Estimate(Generic[S]):
    """What :meth:`GradientEstimator.estimate` returns.

    Attributes:
        grad: (D,) meta-gradient estimate (NaN/Inf when the meta-loss was).
        value: the meta-loss of the truncation (ES/PES: the mean over particles).
        state: the advanced state.
        finite: False when an inner loss or parameter became NaN/Inf (the episode should end).
    """

    grad: Tensor
    value: float
    state: S
    finite: bool


class GradientEstimator(ABC, Generic[S]):
    """Base class of the meta-gradient estimators (see the module docstring)."""

    name = "estimator"

    @abstractmethod
    def init_state(self, episode: Any, dim: int) -> S:
        """The state of a fresh episode."""

    @abstractmethod
    def estimate(self, unroll: Unroll, theta: Tensor, state: S, key: torch.Generator) -> Estimate[S]:
        """One truncation's estimate; ``key`` draws its perturbations."""

    @staticmethod
    @abstractmethod
    def episode_of(state: S) -> Any:
        """The episode whose progress (step, horizon) the state follows."""

    @abstractmethod
    def state_to_tensors(self, state: S, prefix: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """The state as tensors + JSON (episodes through ``Episode.to_tensors``)."""

    @abstractmethod
    def state_from_tensors(self, tensors: dict[str, Tensor], meta: dict[str, Any], prefix: str, load_episode) -> S:
        """Inverse of :meth:`state_to_tensors`; ``load_episode(tensors, meta, prefix)`` rebuilds an episode."""


class EpisodeStateEstimator(GradientEstimator[S]):
    """An estimator whose state is the episode in flight and nothing else (``state_type`` is a
    dataclass with one field, ``episode``): BPTT and truncated ES."""

    state_type: type

    def init_state(self, episode, dim):
        return self.state_type(episode)

    @staticmethod
    def episode_of(state):
        return state.episode

    def state_to_tensors(self, state, prefix):
        return state.episode.to_tensors(f"{prefix}episode/")

    def state_from_tensors(self, tensors, meta, prefix, load_episode):
        return self.state_type(load_episode(tensors, meta, f"{prefix}episode/"))


def flatten_module(module: nn.Module) -> Tensor:
    """The module's parameters as one detached flat vector."""
    return torch.nn.utils.parameters_to_vector([p.detach() for p in module.parameters()]).clone()


def load_flat(module: nn.Module, vector: Tensor) -> None:
    """Write a flat vector (as from :func:`flatten_module`) into the module's parameters."""
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(vector.to(next(module.parameters()).dtype), list(module.parameters()))


def check_es(sigma: float, pairs: int) -> None:
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")


def perturbations(generator: torch.Generator, pairs: int, theta: Tensor, sigma: float) -> Tensor:
    """(pairs, D) perturbations ``sigma * N(0, I)``, drawn on the generator's device (the CPU) and
    moved to ``theta``'s: the same perturbations whichever device the meta-parameters live on."""
    return (torch.randn(pairs, theta.numel(), generator=generator, dtype=theta.dtype) * sigma).to(theta.device)


def pair_share(pairs: int, rank: int, world: int) -> range:
    """The antithetic pairs worker ``rank`` of ``world`` evaluates (all of them for one worker)."""
    return range(rank, pairs, world)


__all__ = ["GradientEstimator", "EpisodeStateEstimator", "Estimate", "Unroll", "flatten_module", "load_flat", "check_es", "perturbations",
           "pair_share"]
