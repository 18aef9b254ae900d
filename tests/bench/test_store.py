import multiprocessing
import sqlite3

import pytest

from l2o.bench.store import IncompatibleStoreError, ResultsStore, run_key

VERSIONS = {"l2o": "test", "torch": "x", "numpy": "x", "python": "x"}


def _record(seed, status="complete", optimizer="sgd"):
    return {"run_key": run_key("t", {"task": "t"}, optimizer, {"lr": 0.1}, seed, 10), "task": "t",
            "task_config": {"task": "t"}, "optimizer": optimizer, "hparams": {"lr": 0.1}, "seed": seed,
            "steps": 10, "status": status, "final_test_loss": float(seed), "selection_loss": float(seed),
            "versions": VERSIONS}


def test_record_read_and_skip_duplicates(tmp_path):
    db = tmp_path / "r.sqlite"
    with ResultsStore(db) as store:
        assert store.record_run(_record(0), {"train_loss": ([0, 1], [2.0, 1.0])})
        assert not store.record_run(_record(0))  # already finished: nothing written
        assert store.record_run(_record(1, status="diverged"))
        assert store.record_run(_record(2, status="failed"))
        assert store.record_run(_record(2))  # a failed run is replaced by its retry
        rows = store.runs(task="t")
        assert [(r["seed"], r["status"]) for r in rows] == [(0, "complete"), (1, "diverged"), (2, "complete")]
        assert store.curves(rows[0]["id"]) == {"train_loss": ([0, 1], [2.0, 1.0])}
        assert rows[0]["hparams"] == {"lr": 0.1} and rows[0]["versions"] == VERSIONS
        assert len(store.finished_keys()) == 3
    with ResultsStore(db) as store:  # reopening keeps everything
        assert store.count() == {"complete": 2, "diverged": 1}


def test_non_finite_numbers_are_stored_as_null(tmp_path):
    rec = _record(0, status="diverged")
    rec["final_test_loss"] = float("nan")
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.record_run(rec)
        assert store.runs()[0]["final_test_loss"] is None
        with pytest.raises(ValueError, match="status"):
            store.record_run({**_record(1), "status": "running"})


def test_incompatible_files_are_refused(tmp_path):
    db = tmp_path / "old.sqlite"
    ResultsStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(IncompatibleStoreError, match="schema version 0"):
        ResultsStore(db)
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE runs (x)")
    conn.commit()
    conn.close()
    with pytest.raises(IncompatibleStoreError, match="not an l2o results file"):
        ResultsStore(foreign)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(IncompatibleStoreError, match="not an l2o results file"):
        ResultsStore(junk)


def _writer(db, worker, n):
    with ResultsStore(db, timeout=60) as store:
        for i in range(n):
            store.record_run(_record(worker * 1000 + i, optimizer=f"w{worker}"),
                             {"train_loss": (list(range(50)), [float(i)] * 50)})
            # every writer also tries to write a run that another writer writes too
            store.record_run(_record(-1 - (i % 5)))


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    db = str(tmp_path / "c.sqlite")
    ResultsStore(db).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with ResultsStore(db) as store:
        rows = store.runs()
        assert len(rows) == 4 * 40 + 5
        assert len({r["run_key"] for r in rows}) == len(rows)
        for w in range(4):
            assert sorted(r["seed"] for r in rows if r["optimizer"] == f"w{w}") == [w * 1000 + i for i in range(40)]
        assert all(len(store.curves(r["id"]).get("train_loss", ([], []))[1]) == 50 for r in rows if r["seed"] >= 0)
