"""Shipped and saved learned-optimizer weights: safetensors plus a JSON model card.

A weights file holds the rule's ``state_dict`` tensors; its l2o metadata holds at least
``"rule"`` (the kind, a key of :data:`l2o.learned.RULES`) and ``"config"`` (the rule's
constructor arguments), and may hold ``"deploy"``, the ``LearnedOptimizer`` settings the weights
were trained for (``{"adapt": kappa}`` after ``l2o meta train --adapt``), which become its
defaults. Shipped weights live in ``l2o/learned/pretrained/<name>.safetensors``
next to ``<name>.json``, a model card (training config, data, metrics). Loading never
unpickles: a truncated, foreign or mis-shaped file raises :class:`l2o.io.WeightsFileError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from l2o.io import WeightsFileError, atomic_write_text, load_tensors, save_tensors
from l2o.learned.base import LearnedRule

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


class PretrainedIndex:
    """The learned optimizers shipped in ``directory``, by name (``<name>.safetensors``)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.safetensors"))

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def __iter__(self):
        return iter(self.names())

    def path(self, name: str) -> Path:
        """The weights file of ``name``; KeyError naming the available ones if unknown."""
        if name not in self.names():
            available = ", ".join(self.names()) or "(none)"
            raise KeyError(f"unknown pretrained learned optimizer {name!r}. Available: {available}")
        return self.directory / f"{name}.safetensors"

    def card(self, name: str) -> dict[str, Any]:
        """The model card (``<name>.json``) of ``name``."""
        card_path = self.path(name).with_suffix(".json")
        if not card_path.is_file():
            raise WeightsFileError(f"model card missing for pretrained optimizer {name!r}: {card_path}")
        return json.loads(card_path.read_text())

    def load(self, name: str) -> LearnedRule:
        """The rule ``name`` with its shipped weights, in eval mode."""
        return load_rule(self.path(name))


def save_rule(path: str | os.PathLike, rule: LearnedRule, card: dict[str, Any] | None = None) -> Path:
    """Save ``rule``'s weights to ``path`` (safetensors) and its model card to ``path.json``.

    Both files are written atomically. ``card`` is merged into the card after ``rule`` and
    ``config``.
    """
    path = Path(path)
    meta = {**(card or {}), "rule": rule.kind, "config": rule.config()}
    save_tensors(path, dict(rule.state_dict()), meta)
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def load_rule(path: str | os.PathLike) -> LearnedRule:
    """Build the rule described by a weights file and load its weights, with checks.

    Raises:
        WeightsFileError: the file is missing, not safetensors, not written by l2o, names an
            unknown rule kind, or its tensors' names/shapes do not match the rule's.
    """
    from l2o.learned import RULES

    path = Path(path)
    tensors, meta = load_tensors(path)
    kind, config = meta.get("rule"), meta.get("config")
    if kind is None or not isinstance(config, dict):
        raise WeightsFileError(f"{path}: no 'rule'/'config' in its metadata: not learned-optimizer weights")
    try:
        rule = RULES.get(kind)(**config)
    except KeyError as exc:
        raise WeightsFileError(f"{path}: unknown rule kind {kind!r}") from exc
    except (TypeError, ValueError) as exc:
        raise WeightsFileError(f"{path}: cannot build rule {kind!r} from config {config}: {exc}") from exc
    expected = rule.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise WeightsFileError(f"{path}: tensors do not match rule {kind!r}: missing {missing}, unexpected {unexpected}")
    for name, ref in expected.items():
        if tuple(tensors[name].shape) != tuple(ref.shape):
            raise WeightsFileError(
                f"{path}: tensor {name!r} has shape {tuple(tensors[name].shape)}, rule {kind!r} needs {tuple(ref.shape)}"
            )
        if not tensors[name].is_floating_point():
            raise WeightsFileError(f"{path}: tensor {name!r} has dtype {tensors[name].dtype}, expected floating point")
    rule.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    rule.eval()
    deploy = meta.get("deploy", {})
    if not isinstance(deploy, dict):
        raise WeightsFileError(f"{path}: its 'deploy' entry must be a mapping of LearnedOptimizer arguments, got {deploy!r}")
    # Deployment settings the weights were trained for (e.g. {"adapt": 0.1}); LearnedOptimizer's defaults.
    rule.deploy_defaults = dict(deploy)
    return rule


PRETRAINED = PretrainedIndex(PRETRAINED_DIR)


def resolve_weights(weights: str | os.PathLike, flag: str = "--weights") -> Path:
    """The weights file that ``weights`` names: a path to a weights file, or the name of shipped
    weights (:data:`PRETRAINED`). A ValueError (naming ``flag``) lists the shipped names otherwise."""
    path = Path(weights)
    if path.is_file():
        return path
    if str(weights) in PRETRAINED:
        return PRETRAINED.path(str(weights))
    if path.is_dir():
        raise ValueError(f"{flag} {str(weights)!r} is a directory; give its weights file (e.g. "
                         f"{path / 'weights.safetensors'})")
    raise ValueError(f"{flag} {str(weights)!r} is neither a file nor shipped weights "
                     f"({', '.join(PRETRAINED.names()) or 'none'})")


def load_weights(weights: str | os.PathLike, flag: str = "--weights") -> LearnedRule:
    """The rule of :func:`resolve_weights`'s file."""
    return load_rule(resolve_weights(weights, flag))
