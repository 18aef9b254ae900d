"""The functional interface every learned update rule implements.

A rule is an ``nn.Module`` whose parameters are the meta-parameters (the learned optimizer's
weights). It updates optimizee parameters out of place, so that gradients can flow from the
optimizee's losses back into the rule's weights (truncated BPTT), or the rule can be called
with perturbed weights through ``torch.func.functional_call`` (ES / PES).

Optimizee parameters, gradients and states are dicts keyed by parameter name:

- ``init_state(params) -> state`` with ``state[name]`` a dict of tensors for that parameter
  (e.g. LSTM hidden states, momenta). Every per-parameter state value must be a tensor, so
  that ``LearnedOptimizer`` can keep it in ``optimizer.state[p]`` and round-trip it through
  ``state_dict``.
- ``update(grads, state, params) -> (new_params, new_state)``, pure and out of place.

A rule may process all tensors at once internally (e.g. concatenate every coordinate into
one batch for a coordinatewise LSTM).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

ParamDict = dict[str, Tensor]
StateDict = dict[str, dict[str, Tensor]]


def apply_step_(p: Tensor, new_p: Tensor, scale: float | Tensor) -> None:
    """Move ``p`` in place to ``new_p`` (the rule's result), its step multiplied by ``scale``
    (a learning-rate multiplier: 1 applies the rule exactly; a 0-d tensor stays on the device,
    see ``LearnedOptimizer``'s adaptation)."""
    if isinstance(scale, Tensor):
        p.add_((new_p - p).mul_(scale))
    elif scale == 1.0:
        p.copy_(new_p)
    else:
        p.add_(new_p - p, alpha=scale)


class LearnedRule(nn.Module, ABC):
    """Base class of learned update rules (see module docstring)."""

    #: registry name of the rule kind, e.g. "lstm" or "mlp"; stored in model cards.
    kind: str = "rule"

    @abstractmethod
    def init_state(self, params: ParamDict) -> StateDict:
        """Fresh optimizer state for ``params``."""

    @abstractmethod
    def update(self, grads: ParamDict, state: StateDict, params: ParamDict) -> tuple[ParamDict, StateDict]:
        """One optimizer step, out of place."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments: ``type(self)(**self.config())`` rebuilds it."""
