"""Where a sweep's runs execute: a pool of local processes, or tasks on a Ray cluster.

Both run the same :class:`~l2o.bench.runner.RunSpec` objects through the same
:func:`~l2o.bench.runner.execute`, so a run gives the same numbers whichever executes it.

- :class:`ProcessExecutor` (``--workers N``): worker processes forked from a fork server (see
  :func:`~l2o.bench.runner.open_pool`); each worker writes its runs to the results file itself.
- :class:`RayExecutor` (``--executor ray``): each run is a Ray task; the task returns the run's
  record and curves, and the driver alone writes them to the results file, so the file never
  needs to be reachable from the cluster's nodes. A task whose worker process is lost (killed,
  out of memory, node gone) is retried by Ray up to :data:`RAY_RETRIES` times; after that the run
  is stored as *failed* with the reason (a later sweep retries failed runs). A run is written
  once: by the driver, when its result arrives, under its unique run key.

Stopping: :meth:`close` with ``abort=True`` (Ctrl-C, SIGTERM) kills the local workers or cancels
the Ray tasks. Workers also exit on their own when their driver dies without a chance to clean
up (SIGKILL): the fork server and each worker ask the kernel for SIGKILL when their parent exits
(Linux ``PR_SET_PDEATHSIG``; elsewhere a thread watches the parent), and Ray ends a driver's
tasks when the driver goes away (a local Ray instance started by the driver goes with it).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

#: Retries of a Ray task whose worker process died (Ray's ``max_retries``); the run is then
#: stored as failed. Exceptions inside a run are never retried: they are the run's result.
RAY_RETRIES = 2

EXECUTORS = ("process", "ray")


# -- parent-death guard --------------------------------------------------------------------------

#: Set by the driver for the fork server it starts: the pid the server must outlive no longer.
DRIVER_ENV = "L2O_BENCH_DRIVER_PID"


def exit_with_parent(parent: int | None = None) -> None:
    """Make this process exit when its parent process exits (whatever kills the parent).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, then a check that the parent (``parent``: the
    pid expected; default the current parent) did not already go (the request does not cover a
    parent that died before it). Elsewhere: a daemon thread that polls the parent's pid twice a
    second.
    """
    parent = os.getppid() if parent is None else parent
    if os.getppid() != parent:
        os._exit(1)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
                if os.getppid() != parent:
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        import time

        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="l2o-parent-watch", daemon=True).start()


def _worker_start(initializer: Callable[..., None], initargs: tuple) -> None:
    exit_with_parent()
    initializer(*initargs)


# -- local processes ----------------------------------------------------------------------------

class ProcessExecutor:
    """A pool of local worker processes (a ``ProcessPoolExecutor``) for :func:`run_specs`.

    Args:
        workers: processes.
        mp_context: the multiprocessing context (a fork server where there is one).
        initializer, initargs: run in each worker when it starts (opens the results file).
        run: the function a worker calls on a spec; returns the run's status.
    """

    def __init__(self, workers: int, mp_context, initializer: Callable[..., None], initargs: tuple,
                 run: Callable[[Any], str]):
        self.workers = workers
        self._run = run
        if mp_context.get_start_method() == "forkserver":
            _start_forkserver()
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp_context, initializer=_worker_start,
                                         initargs=(initializer, initargs))
        self.running = 0

    def results(self, specs: Iterable[Any]) -> Iterator[str]:
        """Run ``specs``; yield each run's status as it ends (the worker has stored it).
        A dead worker raises (``BrokenProcessPool``), the other runs in flight are cancelled."""
        pending = {self._pool.submit(self._run, spec) for spec in specs}
        while pending:
            self.running = min(self.workers, len(pending))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    status = future.result()
                except BaseException:
                    for other in pending:
                        other.cancel()
                    raise
                self.running = min(self.workers, len(pending))
                yield status

    def close(self, abort: bool = False) -> None:
        """Shut the pool down; ``abort``: kill the workers first (their runs in flight are lost,
        and rerun by the next sweep), instead of letting them finish."""
        if abort:
            for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                try:
                    process.kill()
                except (OSError, ValueError, AttributeError):
                    pass
        self._pool.shutdown(wait=not abort, cancel_futures=True)


def _start_forkserver() -> None:
    """Start the fork server (if not running) with SIGINT blocked, so that the server and the
    workers forked from it inherit the blocked signal: Ctrl-C reaches the driver alone, which
    stops the workers itself, and never interrupts the server while it imports torch (a long
    traceback in the middle of the terminal). The driver's pending SIGINT is delivered as soon
    as it is unblocked."""
    from multiprocessing import forkserver, resource_tracker

    if not hasattr(signal, "pthread_sigmask"):
        forkserver.ensure_running()
        return
    # The resource tracker first: starting it unblocks SIGINT and SIGTERM behind it, which would
    # undo the block below if the fork server started it.
    resource_tracker.ensure_running()
    os.environ[DRIVER_ENV] = str(os.getpid())  # read by the server's guard (l2o.bench._forkserver_guard)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# -- Ray --------------------------------------------------------------------------------------------

def _ray_run(spec) -> tuple[dict[str, Any], dict[str, tuple[list, list]]]:
    """A Ray task: one run, in the worker process Ray chose; the record and curves go back to the
    driver, which stores them."""
    import torch

    from l2o.bench.runner import execute

    torch.set_num_threads(1)  # one CPU per task, as the process pool's workers
    record, curves = execute(spec)
    record["worker_pid"] = os.getpid()
    return record, curves


class RayExecutor:
    """Runs each spec as a Ray task; the driver writes every result to the results file.

    Args:
        db_path: the results file (on the driver's machine only).
        address: a running cluster's address (``ray start --head`` prints it; "auto" for the
            local node's cluster). None: start a local Ray instance with ``workers`` CPUs,
            shut down by :meth:`close`.
        workers: CPUs of the local instance (ignored with ``address``: the cluster's CPUs count).
        retries: Ray retries of a task whose worker died (default :data:`RAY_RETRIES`).
    """

    def __init__(self, db_path: str, address: str | None = None, workers: int = 1, retries: int | None = None):
        try:
            import ray
        except ImportError as exc:
            raise ValueError("--executor ray needs Ray: pip install 'l2o[ray]'") from exc
        from l2o.bench.store import ResultsStore

        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = max(1, workers)
            # Local modules (a task or optimizer given as package.module:name) import in the
            # workers as in this process: the working directory is on their path.
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(
                p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)}}
            # Ray's core installs its own SIGTERM handler (a stack dump, then abort): keep the
            # caller's, so SIGTERM stops the sweep as Ctrl-C does (l2o bench run).
            handlers = _signal_handlers()
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ValueError(f"cannot reach a Ray cluster at --ray-address {address}: {exc}") from exc
            finally:
                _restore(handlers)
            self._owns = True
        self.workers = max(1, int(ray.cluster_resources().get("CPU", workers)))
        self.retries = RAY_RETRIES if retries is None else int(retries)
        self._remote = ray.remote(num_cpus=1, max_retries=self.retries)(_ray_run)
        self._store = ResultsStore(db_path)
        self._pending: dict[Any, Any] = {}
        self.running = 0

    def results(self, specs: Iterable[Any]) -> Iterator[str]:
        """Submit every spec; yield each run's status once the driver has stored it. A run whose
        worker was lost beyond the retries is stored as failed with Ray's reason."""
        ray = self._ray
        self._pending = {self._remote.remote(spec): spec for spec in specs}
        while self._pending:
            self.running = min(self.workers, len(self._pending))
            ready, _ = ray.wait(list(self._pending), num_returns=1)
            for ref in ready:
                spec = self._pending.pop(ref)
                try:
                    record, curves = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    record, curves = _lost(spec, exc, self.retries), {}
                self._store.record_run(record, curves)
                self.running = min(self.workers, len(self._pending))
                yield record["status"]

    def close(self, abort: bool = False) -> None:
        ray = self._ray
        if abort:
            for ref in list(self._pending):
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or gone
                    pass
        self._pending = {}
        self._store.close()
        if self._owns:
            ray.shutdown()


def _signal_handlers() -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


def _lost(spec, exc: BaseException, retries: int) -> dict[str, Any]:
    """The record of a run Ray could not finish (its worker died more than the retries allow)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return {"run_key": spec.key, "task": spec.task, "task_config": spec.preset.config(),
            "optimizer": spec.optimizer.name, "hparams": spec.hparams_dict, "seed": spec.seed, "steps": spec.steps,
            "status": "failed", "steps_done": 0,
            "error": f"Ray worker lost ({type(exc).__name__}, after {retries} retries): {reason}"[:500]}
