"""A tiny name -> "module:attribute" registry with lazy imports and helpful errors."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
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


def import_object(path: str, what: str) -> Any:
    """Import ``package.module:name`` (or ``package.module.name``), the user's ``what`` (e.g.
    "optimizer"), with errors that say which part failed. Modules in the working directory are
    found, as under ``python -m`` (the ``l2o`` script's own directory is on the path instead)."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{what} path must look like 'package.module:name', got {path!r}")
    if module_name.endswith(".py") or "/" in module_name:
        raise ValueError(f"{what} path names a module, not a file: for {path!r} write "
                         f"'{module_name.removesuffix('.py').replace('/', '.')}:{attr}' (modules are found from the "
                         f"working directory)")
    try:
        module = _import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for {what} {path!r}: {exc}") from exc
    except Exception as exc:  # the module exists but fails while importing (a syntax error, a raise)
        raise ValueError(f"module {module_name!r} of {what} {path!r} fails to import: "
                         f"{type(exc).__name__}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} ({what} {path!r})") from None


def import_instance(path: str, what: str, kind: type | tuple[type, ...], label: str,
                    kwargs: dict[str, Any] | None = None) -> Any:
    """A ``kind`` (a class or a tuple of classes, named ``label`` in errors, e.g. "l2o.tasks.Task")
    imported by :func:`import_object`: the object itself, or what calling it with ``kwargs`` returns."""
    obj = import_object(path, what)
    if isinstance(obj, kind):
        if kwargs:
            raise ValueError(f"{what} {path!r} is a {type(obj).__name__} object, not a function: it takes no "
                             f"arguments, got {kwargs}")
        return obj
    if callable(obj):
        obj = obj(**(kwargs or {}))
    if not isinstance(obj, kind):
        raise ValueError(f"{what} {path!r} is not an {label} or a function returning one (got {type(obj).__name__})")
    return obj


def _import_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        here = os.getcwd()
        if exc.name != name.partition(".")[0] or here in sys.path:
            raise
        sys.path.insert(0, here)
        return importlib.import_module(name)
