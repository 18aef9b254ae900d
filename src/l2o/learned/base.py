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

What a rule supports beyond that is declared, with defaults, rather than probed:

- ``supports_batching``: its ``init_state`` and ``update`` take ``batch_dims``, the number of
  leading task dimensions of stacked tensors (per-task statistics, e.g. the MLP's feature
  normalization). Default False: a coordinatewise rule without per-tensor statistics, for
  which the task axis is one more coordinate axis. Callers use :meth:`LearnedRule.init_state_batched`
  and :meth:`LearnedRule.update_batched`, which pass ``batch_dims`` only where it is declared.
- ``supports_in_place``: it overrides :meth:`LearnedRule.update_`, a step that overwrites
  parameters and state (deployment, under ``torch.no_grad()``); the default ``update_`` runs
  ``update`` and copies its result, so every rule has one.
- ``supports_fused``: its ``update_`` takes ``fused=True`` (compiled passes).
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
    #: ``init_state``/``update`` take ``batch_dims`` (see the module docstring)
    supports_batching: bool = False
    #: ``update_`` is the rule's own in-place step
    supports_in_place: bool = False
    #: ``update_`` takes ``fused=True``
    supports_fused: bool = False
    #: ``LearnedOptimizer`` defaults the weights were trained for (set from a weights file's card)
    deploy_defaults: dict[str, Any] = {}

    @abstractmethod
    def init_state(self, params: ParamDict) -> StateDict:
        """Fresh optimizer state for ``params``."""

    @abstractmethod
    def update(self, grads: ParamDict, state: StateDict, params: ParamDict) -> tuple[ParamDict, StateDict]:
        """One optimizer step, out of place."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments: ``type(self)(**self.config())`` rebuilds it."""

    def init_state_batched(self, params: ParamDict, batch_dims: int = 0) -> StateDict:
        """Fresh state for ``params`` whose first ``batch_dims`` dimensions index tasks."""
        if self.supports_batching:
            return self.init_state(params, batch_dims=batch_dims)
        return self.init_state(params)

    def update_batched(self, grads: ParamDict, state: StateDict, params: ParamDict,
                       batch_dims: int = 0) -> tuple[ParamDict, StateDict]:
        """:meth:`update` on tensors whose first ``batch_dims`` dimensions index tasks."""
        if self.supports_batching:
            return self.update(grads, state, params, batch_dims=batch_dims)
        return self.update(grads, state, params)

    def update_(self, grads: ParamDict, state: StateDict, params: ParamDict,
                lr: dict[str, float | Tensor] | None = None, fused: bool = False) -> None:
        """One step in place (deployment, no autograd): each ``params[name]`` moves to the rule's
        result, its step multiplied by ``lr[name]`` (default 1), and ``state[name]`` (a dict) is
        updated in place; entries of the step-size adaptation in it are left alone. The default
        runs :meth:`update`; rules with ``supports_in_place`` override it."""
        if fused and not self.supports_fused:
            raise ValueError(f"{type(self).__name__} has no fused step")
        from l2o.learned.adaptation import ADAPT_KEYS

        rule_state = {k: {kk: vv for kk, vv in s.items() if kk not in ADAPT_KEYS} for k, s in state.items()}
        new_params, new_state = self.update(grads, rule_state, params)
        for name, p in params.items():
            apply_step_(p, new_params[name], 1.0 if lr is None else lr.get(name, 1.0))
            state[name].update(new_state[name])
