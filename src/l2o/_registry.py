"""A tiny name -> "module:attribute" registry with lazy imports and helpful errors."""

from __future__ import annotations

import difflib
import importlib
from typing import Any


class Registry:
    """Maps names to objects given as ``"package.module:attr"`` strings, imported on first use."""

    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    def register(self, name: str, target: str) -> None:
        self._entries[name.lower()] = target

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries

    def get(self, name: str) -> Any:
        key = name.lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(
                f"unknown {self.kind} {name!r}.{hint} Available: {', '.join(self.names())}"
            )
        module, _, attr = self._entries[key].partition(":")
        return getattr(importlib.import_module(module), attr)
