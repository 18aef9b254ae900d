"""Meta-training checkpoints: safetensors files written atomically, never pickle.

A checkpoint is a flat ``dict[str, Tensor]`` plus a JSON-serialisable ``meta`` dict, saved with
:func:`l2o.io.save_tensors` (temporary file + rename), so a kill at any moment leaves either the
previous checkpoint or the new one. The helpers below turn the things an outer loop must
restore exactly — a ``torch.optim`` optimizer's state, a ``torch.Generator``, a learned rule's
per-parameter state — into tensors + JSON and back.

Layout of a checkpoint directory::

    last.safetensors   the latest checkpoint (overwritten by each save)
    best.safetensors   the best-on-validation weights (overwritten by each save_best)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from l2o.io import WeightsFileError, load_tensors, save_tensors

LAST = "last.safetensors"
BEST = "best.safetensors"


class Checkpointer:
    """Saves and loads the checkpoints of one run in ``directory``.

    Args:
        directory: where the files live (created on first save).
        every: checkpoint interval in outer steps; :meth:`due` says when a save is due.
    """

    def __init__(self, directory: str | os.PathLike, every: int = 50):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.directory = Path(directory)
        self.every = int(every)

    @property
    def last_path(self) -> Path:
        return self.directory / LAST

    @property
    def best_path(self) -> Path:
        return self.directory / BEST

    def due(self, step: int) -> bool:
        """True when ``step`` (1-based count of completed outer steps) is a checkpoint step."""
        return step > 0 and step % self.every == 0

    def save(self, step: int, tensors: dict[str, Tensor], meta: dict[str, Any] | None = None) -> Path:
        """Write ``last.safetensors`` atomically; ``meta["step"]`` is set to ``step``."""
        save_tensors(self.last_path, tensors, {**(meta or {}), "step": int(step)})
        return self.last_path

    def save_best(self, tensors: dict[str, Tensor], meta: dict[str, Any] | None = None) -> Path:
        """Write ``best.safetensors`` atomically."""
        save_tensors(self.best_path, tensors, meta or {})
        return self.best_path

    def load_last(self) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """The latest checkpoint, or None when there is none yet (a damaged file raises)."""
        return load_tensors(self.last_path) if self.last_path.is_file() else None

    def load_best(self) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
        """The best-on-validation checkpoint, or None when there is none yet."""
        return load_tensors(self.best_path) if self.best_path.is_file() else None


# ---------------------------------------------------------------------------------------------
# Flattening helpers: everything becomes tensors (safetensors) + JSON (metadata).


def prefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{prefix + name: tensor}``."""
    return {f"{prefix}{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """The entries of ``tensors`` whose name starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def generator_to_tensor(generator: torch.Generator) -> Tensor:
    """A ``torch.Generator``'s state as a uint8 tensor."""
    return generator.get_state().clone()


def generator_from_tensor(state: Tensor, generator: torch.Generator | None = None) -> torch.Generator:
    """Restore (or create) a CPU generator from :func:`generator_to_tensor`'s output."""
    generator = generator or torch.Generator()
    generator.set_state(state.to(torch.uint8).contiguous())
    return generator


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, prefix: str = "optim/") -> tuple[dict[str, Tensor], dict]:
    """Flatten ``optimizer.state_dict()`` into tensors and a JSON-friendly dict.

    Tensor state values become tensors named ``{prefix}{param_index}/{key}``; non-tensor state
    values and the param groups go into the returned JSON dict.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}{index}/{key}"] = value.detach().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict,
                           prefix: str = "optim/") -> None:
    """Load what :func:`optimizer_to_tensors` produced into ``optimizer`` (in place)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in unprefixed(prefix, tensors).items():
        index, _, key = name.partition("/")
        state.setdefault(int(index), {})[key] = value.clone()
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    # safetensors files do not keep key order; restore the optimizer's parameter order.
    state = {index: dict(sorted(state[index].items())) for index in sorted(state)}
    reference = optimizer.state_dict()["param_groups"]
    groups = meta["param_groups"]
    if len(groups) != len(reference):
        raise WeightsFileError(f"checkpoint has {len(groups)} optimizer param groups, expected {len(reference)}")
    restored = []
    for group, ref in zip(groups, reference):
        # Keep tuples where the live optimizer uses tuples (e.g. Adam's betas).
        restored.append({k: (tuple(v) if isinstance(ref.get(k), tuple) else v) for k, v in group.items()})
    optimizer.load_state_dict({"state": state, "param_groups": restored})


def nested_to_tensors(nested: dict[str, dict[str, Tensor]], prefix: str = "state/") -> tuple[dict[str, Tensor], list]:
    """Flatten a ``{name: {key: tensor}}`` dict (a learned rule's state) to tensors.

    Returns the tensors and the list of ``[name, key]`` pairs needed to rebuild it (names may
    contain any character, so the structure is kept explicitly).
    """
    tensors, index = {}, []
    for i, (name, entry) in enumerate(nested.items()):
        for key, value in entry.items():
            tensors[f"{prefix}{i}/{key}"] = value.detach()
            index.append([name, key])
    return tensors, index


def nested_from_tensors(tensors: dict[str, Tensor], index: list, prefix: str = "state/") -> dict[str, dict[str, Tensor]]:
    """Inverse of :func:`nested_to_tensors`."""
    nested: dict[str, dict[str, Tensor]] = {}
    names: dict[str, int] = {}
    for name, key in index:
        i = names.setdefault(name, len(names))
        nested.setdefault(name, {})[key] = tensors[f"{prefix}{i}/{key}"]
    return nested


__all__ = [
    "Checkpointer", "prefixed", "unprefixed", "generator_to_tensor", "generator_from_tensor",
    "optimizer_to_tensors", "optimizer_from_tensors", "nested_to_tensors", "nested_from_tensors",
]
