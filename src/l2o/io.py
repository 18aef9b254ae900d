"""Tensor files: safetensors only (never pickle), written atomically.

Used for learned-optimizer weights, meta-training checkpoints and anything else l2o saves.
A file is written to a temporary name in the same directory, flushed, then renamed over the
target, so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class WeightsFileError(ValueError):
    """A weights or checkpoint file is missing, truncated, foreign or mis-shaped."""


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no plain getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; a file l2o writes for the user gets the mode any other
        # new file would get (0666 less the umask), as the PNGs and plain writes do.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float (a diverged run's loss, a score never set) replaced by
    None, through dicts, lists and tuples: ``json.dumps`` would write Infinity or NaN, which
    strict JSON readers (jq, JavaScript) reject."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> None:
    """Save ``tensors`` and a JSON-serialisable ``meta`` dict to a safetensors file, atomically."""
    from safetensors.torch import save

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"l2o": json.dumps(meta or {}, sort_keys=True)}
    atomic_write_bytes(path, save(clean, metadata=metadata))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a file written by :func:`save_tensors`; raise :class:`WeightsFileError` with the reason."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"weights file not found: {path}")
    data = path.read_bytes()
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise WeightsFileError(
            f"{path} is not a readable safetensors file (truncated or foreign?): {exc}"
        ) from exc
    raw = (header.get("__metadata__") or {}).get("l2o")
    if raw is None:
        raise WeightsFileError(f"{path} is a safetensors file but was not written by l2o (no 'l2o' metadata)")
    return tensors, json.loads(raw)
