"""l2o bench on Ray, on a real local Ray instance with 2 CPUs (one per module: Ray takes seconds to
start): the same results as the process pool, resume and de-duplication unchanged, and a worker
killed in the middle of a run: retried, or recorded as failed once the retries are spent, never
lost and never stored twice."""

import os

import pytest

ray = pytest.importorskip("ray")

from l2o.bench import executors  # noqa: E402
from l2o.bench.runner import Plan, run_benchmark  # noqa: E402
from l2o.bench.store import ResultsStore  # noqa: E402

DYING_TASK = '''
import os
import signal
from pathlib import Path

import torch

from l2o.tasks import ModuleTask

MARK = Path(__file__).with_name("killed_once")
x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
y = x.sum(dim=1)


def _task(die):
    net = lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    task = ModuleTask(net, x[:48], y[:48], x[48:], y[48:], batch_size=16, steps=20)
    if os.getpid() == int(os.environ["L2O_TEST_DRIVER_PID"]):
        return task  # the driver builds the task too (its budget): never kill the test itself
    loss, calls = task.loss, [0]

    def dying_loss(params, batch):
        calls[0] += 1
        if calls[0] == 10 and die():  # halfway through the run, the worker process is killed
            MARK.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return loss(params, batch)

    task.loss = dying_loss
    return task


def once():
    return _task(lambda: not MARK.exists())


def always():
    return _task(lambda: True)
'''


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    where = tmp_path_factory.mktemp("ray_tasks")
    (where / "dying_task.py").write_text(DYING_TASK)
    os.environ["L2O_TEST_DRIVER_PID"] = str(os.getpid())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(where), "L2O_TEST_DRIVER_PID": str(os.getpid())}})
    yield where
    ray.shutdown()
    del os.environ["L2O_TEST_DRIVER_PID"]


def _runs(db):
    with ResultsStore(db) as store:
        return {r["run_key"]: r for r in store.runs()}


def test_ray_runs_what_the_process_pool_runs_with_the_same_numbers(tmp_path, local_ray):
    plan = Plan(tasks=["quadratic_10d_tiny"], optimizers=["sgd", "adam"],
                grids={"sgd": {"lr": [0.01, 0.1, 10.0]}, "adam": {"lr": [0.01, 0.1]}}, tune_seeds=1, seeds=3)
    on_ray, on_pool = str(tmp_path / "ray.sqlite"), str(tmp_path / "pool.sqlite")
    totals = run_benchmark(plan, on_ray, workers=2, progress=False, executor="ray")
    run_benchmark(plan, on_pool, workers=2, progress=False)
    ray_runs, pool_runs = _runs(on_ray), _runs(on_pool)
    assert len(ray_runs) == 5 + 2 * 2 and set(ray_runs) == set(pool_runs)
    for key, run in ray_runs.items():
        for column in ("status", "steps_done", "final_train_loss", "final_test_loss", "selection_loss"):
            assert run[column] == pool_runs[key][column], (column, run, pool_runs[key])
    assert any(r["status"] == "diverged" for r in ray_runs.values())  # sgd at lr 10
    assert {r["worker_pid"] for r in ray_runs.values()}.isdisjoint({os.getpid()})  # run in Ray's workers
    assert totals["final"].reused_from_tuning == 2
    with ResultsStore(on_ray) as a, ResultsStore(on_pool) as b:
        assert a.selections() == b.selections()
    again = run_benchmark(plan, on_ray, workers=2, progress=False, executor="ray")  # resume: nothing to do
    assert again["tune"].done == again["final"].done == 0 and again["final"].stored_before == 6
    assert _runs(on_ray).keys() == ray_runs.keys()


def test_a_killed_ray_worker_is_retried_or_the_run_recorded_failed(tmp_path, local_ray, monkeypatch):
    monkeypatch.syspath_prepend(str(local_ray))
    monkeypatch.setattr(executors, "RAY_RETRIES", 1)
    db = str(tmp_path / "k.sqlite")
    plan = Plan(tasks=["dying_task:once", "dying_task:always"], optimizers=["sgd"], grids={"sgd": {"lr": [0.05]}},
                tune_seeds=1, seeds=1)
    totals = run_benchmark(plan, db, workers=2, progress=False, executor="ray")
    assert (local_ray / "killed_once").exists()  # a worker really was killed
    assert totals["final"].done == 2 and totals["final"].failed == 1
    runs = list(_runs(db).values())
    assert len(runs) == 2 and len({r["run_key"] for r in runs}) == 2  # one row per run: none lost, none twice
    by_task = {r["task"]: r for r in runs}
    assert by_task["dying_task:once"]["status"] == "complete" and by_task["dying_task:once"]["steps_done"] == 20
    failed = by_task["dying_task:always"]
    assert failed["status"] == "failed" and "Ray worker lost" in failed["error"] and "after 1 retries" in failed["error"]
