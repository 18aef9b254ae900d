"""Optimizer names the benchmark understands, and how each one is built.

A name is one of

- a built-in baseline: ``sgd``, ``momentum`` (SGD, momentum 0.9), ``nag`` (Nesterov, 0.9),
  ``rmsprop``, ``adam`` (all ``torch.optim``);
- a hand-designed optimizer of ``l2o.optim`` (``l2o.optim.available()``);
- a learned optimizer shipped with l2o (``l2o.learned.PRETRAINED.names()``), or
  ``learned:NAME`` for any shipped name, or ``learned:PATH`` for a weights file written by
  ``l2o meta train`` (``OUT/weights.safetensors``);
- a dotted path to any optimizer class: ``package.module:Class`` or ``package.module.Class``
  (built as ``Class(params, **hyperparameters)``);
- ``tuned:NAME`` for a learned or self-tuning optimizer NAME (reported untuned under its own
  name): the same optimizer with its one hyperparameter, ``lr``, a multiplier of its step
  (default 1), tuned by the protocol like the baselines' learning rates, so that both a
  tuned and an untuned row can stand in one report;
- ``NAME@adapt=KAPPA`` for a learned optimizer NAME (any of the forms above, and
  ``tuned:NAME@adapt=KAPPA``): run with ``LearnedOptimizer(..., adapt=KAPPA)``, the per-tensor
  step-size adaptation (docs/methods/mlp_lopt.md);
- for games, a two-player optimizer of ``l2o.minimax`` (``gda``, ``extragradient``, ``ogda``,
  ``ftr``), optionally preconditioned as ``NAME+rmsprop`` or ``NAME+adam``; a class of one's
  own given as a path is built as ``Class(x_params, y_params, lr_x=..., lr_y=..., **rest)`` on a
  game. The protocol's ``lr`` sets both players' step sizes; ``lr_x``/``lr_y`` in a grid set them
  apart.

Resolution is lazy: nothing is imported until a name is used, and an optimizer whose module
fails to import is reported as unavailable only when it is asked for.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from l2o._registry import import_object

if TYPE_CHECKING:  # torch is imported when an optimizer is built, so the report starts fast
    import torch

BUILTINS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {}),
    "momentum": ("SGD", {"momentum": 0.9}),
    "nag": ("SGD", {"momentum": 0.9, "nesterov": True}),
    "rmsprop": ("RMSprop", {}),
    "adam": ("Adam", {}),
}

# Optimizers that tune themselves: benchmarked with their defaults only ("untuned").
SELF_TUNING = {"yellowfin"}
#: ``tuned:NAME`` tunes the step multiplier of a learned or self-tuning optimizer.
TUNED_PREFIX = "tuned:"
#: ``NAME@adapt=KAPPA``: a learned optimizer with ``LearnedOptimizer(adapt=KAPPA)``.
ADAPT_SUFFIX = "@adapt="
#: ``NAME+rmsprop`` / ``NAME+adam``: a two-player optimizer preconditioned by those statistics.
PRECONDITION_SUFFIXES = ("rmsprop", "adam")


@dataclass(frozen=True)
class OptimizerSpec:
    """How to build one optimizer.

    Attributes:
        name: the name it was asked for (used in the results store and reports).
        kind: "builtin", "l2o", "learned", "minimax" (a two-player optimizer) or "class".
        tunable: whether the protocol tunes its learning rate (False for learned and
            self-tuning optimizers, which are reported untuned).
    """

    name: str
    kind: str
    tunable: bool
    #: for ``tuned:NAME``, the name the optimizer is built from (NAME); else empty.
    base: str = ""
    #: for ``NAME@adapt=KAPPA`` (learned optimizers): KAPPA; None: the weights' default.
    adapt: float | None = None
    #: for learned optimizers: the weights file the name resolved to (once, in :func:`resolve`).
    weights: str = ""
    #: for two-player optimizers (``NAME+rmsprop``): the preconditioner; None: plain gradients.
    precondition: str | None = None

    @property
    def multiplier_tuned(self) -> bool:
        """True for ``tuned:NAME``: the protocol tunes a step multiplier, not a learning rate."""
        return bool(self.base)

    @property
    def two_player(self) -> bool:
        """An optimizer of games only (``l2o.minimax``); a class given by path may be either."""
        return self.kind == "minimax"

    def game_factory(self, hyperparameters: dict[str, Any]) -> Callable:
        """A function ``(x_params, y_params) -> two-player optimizer`` for ``l2o.minimax.play``."""
        if self.kind not in ("minimax", "class"):
            raise ValueError(f"{self.name!r} is a one-player optimizer; a game needs a two-player one "
                             f"({', '.join(two_player_names())}, NAME+rmsprop, NAME+adam, or a class of your own "
                             "taking (x_params, y_params, lr_x=..., lr_y=...))")
        hp = dict(hyperparameters)
        lr = hp.pop("lr", None)
        if lr is not None:  # the protocol's one step size, for both players unless a grid sets them apart
            hp.setdefault("lr_x", lr)
            hp.setdefault("lr_y", lr)
        if self.precondition is not None:
            hp.setdefault("precondition", self.precondition)
        if self.kind == "minimax":
            from l2o.minimax import OPTIMIZERS

            cls = OPTIMIZERS[self.name.split("+", 1)[0]]
        else:
            cls = import_class(self.name)
        return lambda xs, ys: cls(xs, ys, **hp)

    def factory(self, hyperparameters: dict[str, Any]) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
        """A function ``params -> optimizer`` for ``train``."""
        if self.two_player:
            raise ValueError(f"{self.name!r} is a two-player optimizer: it plays games (e.g. game_f1, mog1d), "
                             "not tasks")
        hp = dict(hyperparameters)
        if self.base:
            return resolve(self.base).factory(hp)
        if self.kind == "builtin":
            import torch

            cls_name, fixed = BUILTINS[self.name]
            cls = getattr(torch.optim, cls_name)
            return lambda params: cls(params, **{**fixed, **hp})
        if self.kind == "l2o":
            from l2o import optim

            cls = optim.OPTIMIZERS.get(self.name)
            return lambda params: cls(params, **hp)
        if self.kind == "learned":
            from l2o.learned.optimizer import LearnedOptimizer

            if self.adapt is not None:
                hp["adapt"] = self.adapt
            weights = self.weights
            return lambda params: LearnedOptimizer.from_file(weights, params, **hp)
        cls = import_class(self.name)
        return lambda params: cls(params, **hp)


def _l2o_names() -> list[str]:
    try:
        from l2o import optim

        return optim.available()
    except Exception:  # a broken l2o.optim must not break the baselines
        return []


def _learned_names() -> list[str]:
    try:
        from l2o.learned import PRETRAINED

        return list(PRETRAINED.names())
    except Exception:
        return []


def two_player_names() -> list[str]:
    """The two-player optimizers of ``l2o.minimax`` (each also as ``NAME+rmsprop``, ``NAME+adam``)."""
    from l2o.minimax import OPTIMIZERS

    return list(OPTIMIZERS)


def available() -> dict[str, list[str]]:
    """Known optimizer names by kind (dotted paths to classes are accepted too)."""
    return {"builtin": sorted(BUILTINS), "l2o": _l2o_names(), "learned": _learned_names(),
            "two-player, for games (also as NAME+rmsprop, NAME+adam)": two_player_names()}


def import_class(path: str) -> type:
    """Import ``package.module:Class`` or ``package.module.Class``."""
    cls = import_object(path, "optimizer")
    if not callable(cls):
        raise ValueError(f"optimizer {path!r} is not a class or callable")
    return cls


def resolve(name: str) -> OptimizerSpec:
    """The :class:`OptimizerSpec` for ``name``; ValueError listing the known names if unknown.

    An ``l2o.optim`` optimizer whose module does not import (yet) is refused here, with the
    import error, and only here: other names keep working.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"optimizer name must be a non-empty string, got {name!r}")
    key = name.strip()
    if key.startswith(TUNED_PREFIX):
        base = resolve(key[len(TUNED_PREFIX):])
        if base.tunable:
            raise ValueError(f"{key!r}: {base.name!r} has its learning rate tuned already; the prefix "
                             f"{TUNED_PREFIX!r} is for learned and self-tuning optimizers")
        return OptimizerSpec(key, base.kind, tunable=True, base=base.name)
    if ADAPT_SUFFIX in key:
        base_key, _, value = key.rpartition(ADAPT_SUFFIX)
        base = resolve(base_key)
        if base.kind != "learned" or base.base:
            raise ValueError(f"{key!r}: {ADAPT_SUFFIX!r} applies to learned optimizers (e.g. "
                             f"'mlp-general{ADAPT_SUFFIX}0.1'), not to {base.name!r}")
        try:
            kappa = float(value)
        except ValueError:
            kappa = math.nan
        if not 0.0 <= kappa < math.inf:
            raise ValueError(f"{key!r}: the adaptation rate after {ADAPT_SUFFIX!r} must be a finite number >= 0")
        return OptimizerSpec(key, "learned", tunable=False, adapt=kappa, weights=base.weights)
    low = key.lower()
    if low in BUILTINS:
        return OptimizerSpec(low, "builtin", tunable=True)
    l2o_names = _l2o_names()
    if low in l2o_names:
        from l2o import optim

        try:
            optim.OPTIMIZERS.get(low)
        except Exception as exc:
            raise ValueError(f"optimizer {low!r} is registered in l2o.optim but cannot be imported: {exc}") from exc
        return OptimizerSpec(low, "l2o", tunable=low not in SELF_TUNING)
    game_name, plus, precondition = low.partition("+")
    if game_name in two_player_names():
        if plus and precondition not in PRECONDITION_SUFFIXES:
            raise ValueError(f"{name!r}: a two-player optimizer is preconditioned as "
                             f"{' or '.join(f'{game_name}+{p}' for p in PRECONDITION_SUFFIXES)}")
        return OptimizerSpec(low, "minimax", tunable=True, precondition=precondition or None)
    learned = _learned_names()
    if key in learned or key.startswith("learned:"):
        from l2o.learned.weights import load_rule, resolve_weights

        target = key.split(":", 1)[1] if key.startswith("learned:") else key
        try:
            path = resolve_weights(target)  # a weights file or a shipped name, resolved beside the weights
        except ValueError:
            raise ValueError(f"unknown learned optimizer {key!r}: neither a shipped name "
                             f"({', '.join(learned) or 'none'}) nor an existing weights file") from None
        if key not in learned:
            load_rule(path)  # a bad file fails now, with the reason, rather than inside a worker
        return OptimizerSpec(key, "learned", tunable=False, weights=str(path))
    if "." in key or ":" in key:
        import_class(key)  # fail now, with the reason, rather than inside a worker
        return OptimizerSpec(key, "class", tunable=True)
    known = sorted(BUILTINS) + l2o_names + learned + two_player_names()
    close = difflib.get_close_matches(low, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown optimizer {name!r}.{hint} Known: {', '.join(known)}; "
                     "or give a class as 'package.module:Class'")
