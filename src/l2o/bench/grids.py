"""Hyperparameter grids: parsing from the command line or a TOML/YAML file, and the defaults.

Command-line form, one optimizer per ``--grid``::

    adam:lr=logspace(1e-5,1e2,36);betas=[(0.9,0.999),(0.5,0.999)]
    mypkg.opt:MyOpt:lr=[0.1,0.01];alpha=0.5

``NAME:KEY=VALUES;KEY=VALUES`` where NAME may itself contain ':' (a class path) and VALUES is

- ``logspace(start,stop,num)``: ``num`` log-spaced values from ``start`` to ``stop``, both included;
- ``linspace(start,stop,num)``: the same, evenly spaced;
- a Python literal list ``[v1, v2, ...]``: those values;
- any other Python literal (number, string, bool, tuple): that single value.

The grid is the Cartesian product of the keys. A file holds the same thing as a table per
optimizer (TOML ``[adam]`` / YAML ``adam:``) whose values are lists, single values, or the
``logspace(...)``/``linspace(...)`` strings above.
"""

from __future__ import annotations

import ast
import itertools
import math
import re
from pathlib import Path
from typing import Any

Grid = dict[str, list[Any]]

#: DeepOBS's learning-rate grid: 36 log-spaced values from 1e-5 to 1e2 (5 per decade).
DEEPOBS_LR_GRID = [10 ** (-5 + 7 * k / 35) for k in range(36)]
#: The coarse grid for quick runs: 11 values, 2 per decade, from 1e-4 to 10.
QUICK_LR_GRID = [10 ** (-4 + k / 2) for k in range(11)]
#: Four values for the smoke suite (a minute end to end).
SMOKE_LR_GRID = [1e-3, 1e-2, 1e-1, 1.0]
PROTOCOL_LR_GRIDS = {"deepobs": DEEPOBS_LR_GRID, "quick": QUICK_LR_GRID, "smoke": SMOKE_LR_GRID}
#: Step-multiplier grids for ``tuned:NAME`` (learned and self-tuning optimizers, whose ``lr``
#: multiplies a step that is already scaled; 1 is the untuned default): quick: 11 values
#: log-spaced from 0.1 to 30; deepobs: 21 values, 5 per decade, from 0.01 to 100.
PROTOCOL_MULTIPLIER_GRIDS = {
    "deepobs": [10 ** (-2 + k / 5) for k in range(21)],
    "quick": [0.1 * 300 ** (k / 10) for k in range(11)],
    "smoke": [0.3, 1.0, 3.0],
}

_SPACE = re.compile(r"^\s*(logspace|linspace)\s*\((.*)\)\s*$")


class GridError(ValueError):
    """A grid specification is malformed; the message names the wrong entry."""


def _spaced(kind: str, args: str, where: str) -> list[float]:
    try:
        parts = [float(ast.literal_eval(a.strip())) for a in args.split(",")]
    except (ValueError, SyntaxError) as exc:
        raise GridError(f"{where}: {kind}() arguments must be numbers, got ({args})") from exc
    if len(parts) != 3 or parts[2] != int(parts[2]) or parts[2] < 1:
        raise GridError(f"{where}: {kind}() needs (start, stop, num) with an integer num >= 1, got ({args})")
    start, stop, num = parts[0], parts[1], int(parts[2])
    if kind == "logspace":
        if start <= 0 or stop <= 0:
            raise GridError(f"{where}: logspace() bounds must be > 0, got ({args})")
        lo, hi = math.log10(start), math.log10(stop)
        return [10 ** (lo + (hi - lo) * i / (num - 1)) if num > 1 else start for i in range(num)]
    return [start + (stop - start) * i / (num - 1) if num > 1 else start for i in range(num)]


def parse_values(text: Any, where: str = "grid") -> list[Any]:
    """The list of values one grid key takes (see the module docstring for the forms)."""
    if isinstance(text, list):
        return [tuple(v) if isinstance(v, list) else v for v in text]
    if not isinstance(text, str):
        return [text]
    match = _SPACE.match(text)
    if match:
        return _spaced(match.group(1), match.group(2), where)
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", text.strip()):
            return [text.strip()]  # a bare word is a string value
        raise GridError(f"{where}: cannot read values {text!r} (use logspace(a,b,n), linspace(a,b,n), "
                        "[v1, v2, ...] or a single literal)") from None
    if isinstance(value, list):
        if not value:
            raise GridError(f"{where}: the list of values is empty")
        return value
    return [value]


def parse_grid_spec(spec: str) -> tuple[str, Grid]:
    """Parse ``NAME:KEY=VALUES;KEY=VALUES`` into ``(name, grid)``."""
    if not isinstance(spec, str) or "=" not in spec:
        raise GridError(f"grid entry {spec!r} must look like 'optimizer:key=values;key=values'")
    head = spec[: spec.index("=")]
    if ":" not in head:
        raise GridError(f"grid entry {spec!r} must start with the optimizer name and ':'")
    cut = head.rindex(":")
    name, body = spec[:cut].strip(), spec[cut + 1:]
    if not name:
        raise GridError(f"grid entry {spec!r} has an empty optimizer name")
    grid: Grid = {}
    for part in _split_top_level(body, ";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise GridError(f"grid entry {spec!r}: {part!r} must be key=values")
        key, _, values = part.partition("=")
        key = key.strip()
        if not key.isidentifier():
            raise GridError(f"grid entry {spec!r}: {key!r} is not a valid hyperparameter name")
        if key in grid:
            raise GridError(f"grid entry {spec!r}: hyperparameter {key!r} given twice")
        grid[key] = parse_values(values, where=f"grid entry {name}:{key}")
    if not grid:
        raise GridError(f"grid entry {spec!r} gives no hyperparameters")
    return name, grid


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets and parentheses."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def load_grid_file(path: str | Path) -> dict[str, Grid]:
    """Read grids from a TOML (``.toml``) or YAML (``.yaml``/``.yml``, needs PyYAML) file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file not found: {path}")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise GridError(f"grid file {path}: {exc}") from exc
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise GridError(f"grid file {path}: reading YAML needs PyYAML (pip install l2o[yaml])") from exc
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise GridError(f"grid file {path}: {exc}") from exc
    else:
        raise GridError(f"grid file {path} must end in .toml, .yaml or .yml")
    if not isinstance(data, dict):
        raise GridError(f"grid file {path}: expected a table per optimizer")
    grids = {}
    for name, table in data.items():
        if not isinstance(table, dict) or not table:
            raise GridError(f"grid file {path}: entry {name!r} must be a non-empty table of hyperparameters")
        grids[name] = {str(k): parse_values(v, where=f"grid file {path}, {name}.{k}") for k, v in table.items()}
    return grids


def expand(grid: Grid) -> list[dict[str, Any]]:
    """All configurations of ``grid`` (its Cartesian product), in a stable order."""
    if not grid:
        return [{}]
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
