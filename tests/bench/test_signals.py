"""A sweep stopped from outside, with real processes: SIGTERM stops it as Ctrl-C does (workers
gone, a message saying how to resume), Ctrl-C while the workers start prints no traceback, and a
driver killed with SIGKILL takes its fork server and workers (or its local Ray instance) with it.
Every wait has a timeout, so a failure never hangs the suite."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

SWEEP = ["-m", "l2o.cli", "bench", "run", "--tasks", "quadratic_10d_tiny", "--optimizers", "sgd",
         "--grid", "sgd:lr=[0.01]", "--seeds", "400", "--no-progress"]


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    return out


def descendants(pid: int) -> set[int]:
    parents, found, frontier = _parents(), set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stored(db: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


def start(args, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, *SWEEP, *args, "--db", str(tmp_path / "r.sqlite")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: signals never reach pytest


def finish(proc, kids, timeout=30, linger=frozenset()):
    """Wait for the driver, then for every process in ``kids`` but ``linger`` to exit."""
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    try:
        wait_for(lambda: not [k for k in kids - linger if alive(k)], timeout, "the workers to exit")
    finally:
        for k in kids:  # never leave a process behind, even when the test fails
            if alive(k):
                os.kill(k, signal.SIGKILL)
    return proc.returncode, out, err


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_sigterm_stops_a_sweep_like_ctrl_c(tmp_path, executor):
    proc = start(["--workers", "2", "--executor", executor], tmp_path)
    db = str(tmp_path / "r.sqlite")
    wait_for(lambda: stored(db) >= 2, 180, "two stored runs")
    kids = descendants(proc.pid)
    assert len(kids) >= 3  # fork server and two workers; or the local Ray instance and its workers
    proc.send_signal(signal.SIGTERM)
    rc, out, err = finish(proc, kids)
    assert rc == 143, err
    assert "stopped by SIGTERM" in err and "To resume, run the same command again" in err
    assert "Traceback" not in err
    assert 2 <= stored(db) < 400


def test_ctrl_c_while_workers_start_prints_no_traceback(tmp_path):
    proc = start(["--workers", "2"], tmp_path)

    def forkserver_started():
        return [k for k in descendants(proc.pid) if b"forkserver" in open(f"/proc/{k}/cmdline", "rb").read()]

    wait_for(forkserver_started, 120, "the fork server")
    kids = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole process group
    rc, out, err = finish(proc, kids)
    assert rc == 130, err
    assert "Traceback" not in err and "stopped by Ctrl-C" in err and "To resume" in err, err


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_workers_exit_when_the_driver_is_killed(tmp_path, executor):
    proc = start(["--workers", "2", "--executor", executor], tmp_path)
    db = str(tmp_path / "r.sqlite")
    wait_for(lambda: stored(db) >= 2, 180, "two stored runs")
    kids = descendants(proc.pid)
    names = {k: _name(k) for k in kids}
    if executor == "ray":
        assert sum(name.startswith("ray::") for name in names.values()) >= 2, names  # Ray's task workers
    else:
        assert sum("forkserver" in name for name in names.values()) >= 3, names  # fork server and 2 workers
    # Ray's own agents (not workers) notice a lost raylet by polling and leave about a minute later
    linger = {k for k, name in names.items() if name.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))}
    proc.kill()  # SIGKILL: the driver cleans nothing up
    rc, _, _ = finish(proc, kids, timeout=60, linger=linger)
    assert rc == -signal.SIGKILL


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
