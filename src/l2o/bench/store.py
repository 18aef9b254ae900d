"""The results store: one SQLite file (standard-library ``sqlite3``), safe for several writers.

Tables:

- ``meta``: the schema version and the l2o version that created the file. A file with another
  schema version is refused, never mixed.
- ``runs``: one row per finished run (task, optimizer, hyperparameters, seed, budget, status
  ``complete``/``diverged``/``failed``, final numbers, timing, library versions). ``run_key``
  (a hash of what defines the run) is unique, so a run is never stored twice.
- ``curves``: the per-step training loss and the test curve of each run (JSON arrays).
- ``selections``: the hyperparameters the tuning protocol chose per (task, optimizer).

A run is written in one transaction when it ends, so a crash or a kill loses at most the
runs in flight. The file uses write-ahead logging and ``BEGIN IMMEDIATE`` transactions with a
long busy timeout, so worker processes can write at the same time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
FINISHED = ("complete", "diverged")  # a failed run is retried on the next sweep

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    run_key TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    task_config TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    hparams TEXT NOT NULL,
    seed INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('complete', 'diverged', 'failed')),
    steps_done INTEGER,
    final_train_loss REAL,
    final_train_accuracy REAL,
    final_test_loss REAL,
    final_test_accuracy REAL,
    selection_loss REAL,
    selection_split TEXT,
    seconds REAL,
    seconds_per_step REAL,
    error TEXT,
    versions TEXT NOT NULL,
    worker_pid INTEGER,
    finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_task ON runs (task, optimizer);
CREATE TABLE IF NOT EXISTS curves (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    steps TEXT NOT NULL,
    vals TEXT NOT NULL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS selections (
    task TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    hparams TEXT NOT NULL,
    tuned INTEGER NOT NULL,
    selection_loss REAL,
    n_configs INTEGER NOT NULL,
    tune_seeds TEXT NOT NULL,
    final_seeds TEXT NOT NULL,
    steps INTEGER NOT NULL,
    PRIMARY KEY (task, optimizer)
);
"""


class IncompatibleStoreError(ValueError):
    """The results file was written by an incompatible version, or is not a results file."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and tuples as lists: equal configurations give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_key(task: str, task_config: dict, optimizer: str, hparams: dict, seed: int, steps: int) -> str:
    """The identity of a run: the same inputs give the same key (used to skip finished runs)."""
    text = canonical_json({"task": task, "task_config": task_config, "optimizer": optimizer,
                           "hparams": hparams, "seed": int(seed), "steps": int(steps)})
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def library_versions() -> dict[str, str]:
    import numpy
    import torch

    from l2o import __version__

    return {"l2o": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class ResultsStore:
    """An open results file. Open one per process (connections are not shared across forks).

    Args:
        path: the SQLite file; created if missing.
        timeout: seconds a writer waits for the lock before giving up.
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 120.0):
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise IncompatibleStoreError(f"results file {self.path} is a directory")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._check_or_create()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise IncompatibleStoreError(f"{self.path} is not an l2o results file: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------------------

    def _check_or_create(self) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise IncompatibleStoreError(
                f"{self.path} is an SQLite file but not an l2o results file (tables: {', '.join(sorted(tables))})")
        if "meta" in tables:
            meta = dict(self._conn.execute("SELECT key, value FROM meta"))
            if meta.get("format") != "l2o-bench":
                raise IncompatibleStoreError(f"{self.path} is not an l2o results file (meta: {meta})")
            version = int(meta.get("schema_version", -1))
            if version != SCHEMA_VERSION:
                raise IncompatibleStoreError(
                    f"results file {self.path} has schema version {version} (written by l2o "
                    f"{meta.get('created_by', '?')}); this l2o reads version {SCHEMA_VERSION}. "
                    "Use a new --db file rather than mixing results.")
            return
        from l2o import __version__

        # One script in one transaction: another process never sees tables without their meta.
        self._conn.executescript(
            "BEGIN IMMEDIATE;" + _SCHEMA
            + "INSERT OR IGNORE INTO meta (key, value) VALUES ('format', 'l2o-bench');"
            + f"INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}');"
            + f"INSERT OR IGNORE INTO meta (key, value) VALUES ('created_by', '{__version__}');"
            + "COMMIT;")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _transaction(self):
        return _Transaction(self._conn)

    # -- writing ---------------------------------------------------------------------------

    def record_run(self, record: dict[str, Any], curves: dict[str, tuple[list, list]] | None = None) -> bool:
        """Store one finished run and its curves in a single transaction.

        Args:
            record: the ``runs`` columns (``run_key``, ``task``, ``task_config`` (dict),
                ``optimizer``, ``hparams`` (dict), ``seed``, ``steps``, ``status``, final numbers...).
            curves: name -> (steps, values).

        Returns:
            False if a finished run with this key was already stored (nothing is written),
            True otherwise. A stored *failed* run with the key is replaced.
        """
        row = dict(record)
        if row.get("status") not in ("complete", "diverged", "failed"):
            raise ValueError(f"status must be complete, diverged or failed, got {row.get('status')!r}")
        row["task_config"] = canonical_json(row["task_config"])
        row["hparams"] = canonical_json(row["hparams"])
        if "versions" not in row:
            row["versions"] = library_versions()
        row["versions"] = canonical_json(row["versions"])
        row.setdefault("worker_pid", os.getpid())
        row.setdefault("finished_at", time.time())
        for key in ("final_train_loss", "final_train_accuracy", "final_test_loss", "final_test_accuracy",
                    "selection_loss"):
            row[key] = _finite_or_none(row.get(key))
        columns = sorted(row)
        with self._transaction():
            existing = self._conn.execute("SELECT id, status FROM runs WHERE run_key = ?", (row["run_key"],)).fetchone()
            if existing is not None:
                if existing[1] in FINISHED:
                    return False
                self._conn.execute("DELETE FROM runs WHERE id = ?", (existing[0],))
            cursor = self._conn.execute(
                f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [row[c] for c in columns])
            run_id = cursor.lastrowid
            for name, (steps, values) in (curves or {}).items():
                self._conn.execute("INSERT INTO curves (run_id, name, steps, vals) VALUES (?, ?, ?, ?)",
                                   (run_id, name, json.dumps(list(steps)), json.dumps([float(v) for v in values])))
        return True

    def record_selection(self, task: str, optimizer: str, hparams: dict, tuned: bool, selection_loss: float | None,
                         n_configs: int, tune_seeds: Iterable[int], final_seeds: Iterable[int], steps: int) -> None:
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO selections (task, optimizer, hparams, tuned, selection_loss, n_configs, "
                "tune_seeds, final_seeds, steps) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (task, optimizer, canonical_json(hparams), int(tuned), _finite_or_none(selection_loss), int(n_configs),
                 json.dumps(list(tune_seeds)), json.dumps(list(final_seeds)), int(steps)))

    # -- reading ---------------------------------------------------------------------------

    def finished_keys(self) -> set[str]:
        """Keys of the runs that need not run again (complete or diverged)."""
        return {r[0] for r in self._conn.execute(
            f"SELECT run_key FROM runs WHERE status IN ({', '.join('?' * len(FINISHED))})", FINISHED)}

    def runs(self, **where: Any) -> list[dict[str, Any]]:
        """Rows of ``runs`` as dicts (JSON columns decoded), filtered by equality on columns."""
        for key in where:
            if not key.isidentifier():
                raise ValueError(f"bad column name {key!r}")
        clause = " AND ".join(f"{k} = ?" for k in where)
        values = [canonical_json(v) if isinstance(v, dict) else v for v in where.values()]
        cursor = self._conn.execute(f"SELECT * FROM runs{' WHERE ' + clause if clause else ''} ORDER BY id", values)
        names = [d[0] for d in cursor.description]
        rows = []
        for raw in cursor:
            row = dict(zip(names, raw))
            for key in ("task_config", "hparams", "versions"):
                row[key] = json.loads(row[key])
            rows.append(row)
        return rows

    def curves(self, run_id: int) -> dict[str, tuple[list, list]]:
        return {name: (json.loads(steps), json.loads(vals)) for name, steps, vals in self._conn.execute(
            "SELECT name, steps, vals FROM curves WHERE run_id = ?", (run_id,))}

    def selections(self) -> list[dict[str, Any]]:
        cursor = self._conn.execute("SELECT * FROM selections ORDER BY task, optimizer")
        names = [d[0] for d in cursor.description]
        rows = []
        for raw in cursor:
            row = dict(zip(names, raw))
            row["hparams"] = json.loads(row["hparams"])
            row["tune_seeds"] = json.loads(row["tune_seeds"])
            row["final_seeds"] = json.loads(row["final_seeds"])
            row["tuned"] = bool(row["tuned"])
            rows.append(row)
        return rows

    def count(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): takes the write lock up front,
    so concurrent writers queue on the busy timeout instead of failing mid-transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
