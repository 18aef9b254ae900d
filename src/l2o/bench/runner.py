"""Run benchmark sweeps: the tuning protocol, parallel workers, resume.

The protocol, per (task, optimizer):

1. **Tune**: every configuration of the optimizer's grid (by default a learning-rate grid) runs
   on ``tune_seeds`` seeds (0, 1, ...).
2. **Select**: the configuration with the lowest mean *selection loss* wins: the loss on the
   task's validation split where it has one (the DeepOBS problems), else the final loss on
   the whole training set. Test numbers are never looked at. A diverged or failed run counts
   as +inf.
3. **Rerun** the winner on ``seeds`` seeds (0 .. seeds-1; the tuning runs are reused).

Optimizers that are not tuned (learned ones, YellowFin) skip 1-2 and run their defaults.

Games (:mod:`l2o.minimax`) follow the same protocol with two-player optimizers: each run is
:func:`l2o.minimax.play`, and the selection loss is the game's final metric
(:func:`l2o.bench.suites.game_metric`: the distance to the equilibrium where it is known, else
||grad_x f|| + ||grad_y f||), measured on the game's evaluation batch.

Every run goes into the results store as soon as it ends; runs already there (complete or
diverged) are skipped, so re-running a sweep resumes it. ``workers > 1`` runs trials in that
many processes, each writing to the store itself.
"""

from __future__ import annotations

import math
import sys
import traceback
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

from l2o.bench import grids as grids_mod
from l2o.bench.optimizers import OptimizerSpec, resolve
from l2o.bench.store import ResultsStore, canonical_json, run_key
from l2o.bench.suites import TaskPreset, game_metric, get_preset, is_game

@dataclass(frozen=True)
class RunSpec:
    """One training run: a task, an optimizer configuration and a seed."""

    task: str
    preset: TaskPreset
    optimizer: OptimizerSpec
    hparams: tuple  # sorted (key, value) pairs, hashable
    seed: int
    steps: int
    eval_every: int | None
    noise_scale: bool = False  # also measure B_simple at the end (curve "b_simple"; not part of the key)

    @property
    def hparams_dict(self) -> dict[str, Any]:
        return dict(self.hparams)

    @property
    def key(self) -> str:
        return run_key(self.task, self.preset.config(), self.optimizer.name, self.hparams_dict, self.seed, self.steps)


def _freeze(config: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()))


# -- one run ---------------------------------------------------------------------------------

_TASK_CACHE: dict[tuple, Any] = {}


def _task_for(spec: RunSpec):
    key = (spec.task, canonical_json(spec.preset.config()), spec.seed if spec.preset.seed_kwarg else None)
    if key not in _TASK_CACHE:
        if len(_TASK_CACHE) > 32:
            _TASK_CACHE.clear()
        _TASK_CACHE[key] = spec.preset.build(spec.seed)
    return _TASK_CACHE[key]


def execute(spec: RunSpec) -> tuple[dict[str, Any], dict[str, tuple[list, list]]]:
    """Train one run in this process; returns the store record and curves (never raises)."""
    from l2o.train import train

    record: dict[str, Any] = {"run_key": spec.key, "task": spec.task, "task_config": spec.preset.config(),
                              "optimizer": spec.optimizer.name, "hparams": spec.hparams_dict, "seed": spec.seed,
                              "steps": spec.steps}
    if spec.preset.game:
        return _execute_game(spec, record)
    captured: dict[str, Any] = {}

    def hook(step, params):
        captured["params"] = params

    try:
        task = _task_for(spec)
        factory = spec.optimizer.factory(spec.hparams_dict)
        result = train(task, factory, steps=spec.steps, seed=spec.seed, eval_every=spec.eval_every,
                       eval_split="test", params_hook=hook)
    except Exception as exc:  # a failing optimizer is a result, not a crash of the sweep
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        record.update(status="failed", error=last, steps_done=0)
        return record, {}
    record.update(status="diverged" if result.diverged else "complete", steps_done=result.steps_done,
                  seconds=result.seconds,
                  seconds_per_step=result.seconds / result.steps_done if result.steps_done else None,
                  final_train_loss=result.final_train.get("loss"),
                  final_train_accuracy=result.final_train.get("accuracy"),
                  final_test_loss=result.final_test.get("loss"),
                  final_test_accuracy=result.final_test.get("accuracy"))
    if not result.diverged:
        record["selection_loss"], record["selection_split"] = _selection_loss(task, captured.get("params"), result)
    curves = {"train_loss": (list(range(result.steps_done)), result.losses)}
    if spec.noise_scale and not result.diverged and captured.get("params") is not None:
        from l2o.diagnostics import final_b_simple

        b_simple = final_b_simple(task, captured["params"])
        if b_simple is not None:
            curves["b_simple"] = ([result.steps_done], [b_simple])
    if result.eval_steps:
        curves["test_loss"] = (result.eval_steps, [e["loss"] for e in result.eval_curve])
        if "accuracy" in result.eval_curve[0]:
            curves["test_accuracy"] = (result.eval_steps, [e["accuracy"] for e in result.eval_curve])
    return record, curves


#: the game metrics stored as curves (those a game reports; each at the recorded steps)
GAME_CURVES = ("f", "grad_norm", "grad_x_norm", "grad_y_norm", "distance", "modes_covered", "high_quality")


def _execute_game(spec: RunSpec, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[list, list]]]:
    """Play one game run (:func:`l2o.minimax.play`): the store record and the metric curves.

    The record's ``final_train_loss`` is f(x, y) at the end (the game's value, not a loss to
    minimize), ``selection_loss`` the final :func:`game_metric` (``selection_split`` names it);
    a run whose iterates or f become non-finite is diverged."""
    from l2o.minimax import play

    try:
        game = _task_for(spec)
        metric = game_metric(game)
        result = play(game, spec.optimizer.game_factory(spec.hparams_dict), steps=spec.steps, seed=spec.seed,
                      record_every=spec.eval_every or 1)
    except Exception as exc:  # a failing optimizer is a result, not a crash of the sweep
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        record.update(status="failed", error=last, steps_done=0)
        return record, {}
    final = result.final
    record.update(status="diverged" if result.diverged else "complete", steps_done=result.steps_done,
                  seconds=result.seconds,
                  seconds_per_step=result.seconds / result.steps_done if result.steps_done else None,
                  final_train_loss=final.get("f"))
    if not result.diverged:
        if metric not in final:
            record.update(status="failed", error=f"ValueError: game {spec.task!r} reports no metric {metric!r} "
                                                 f"(it reports {', '.join(sorted(final))})")
            return record, {}
        record["selection_loss"], record["selection_split"] = final[metric], metric
    curves = {name: (list(result.steps), [m[name] for m in result.metrics])
              for name in GAME_CURVES if result.metrics and name in result.metrics[0]}
    if "modes" in final:  # a GAN's number of modes: one point, for "modes covered" out of it
        curves["modes"] = ([result.steps[-1]], [final["modes"]])
    return record, curves


def _selection_loss(task, params, result) -> tuple[float, str]:
    """Validation loss where the task has a validation split, else the final training loss."""
    if params is not None:
        try:
            return task.evaluate(params, "valid")["loss"], "valid"
        except ValueError:
            pass
    return result.final_train["loss"], "train"


# -- workers -----------------------------------------------------------------------------------

_WORKER_STORE: ResultsStore | None = None


def _init_worker(db_path: str) -> None:
    import torch

    global _WORKER_STORE
    torch.set_num_threads(1)  # one core per worker: workers are the parallelism
    if _WORKER_STORE is not None:
        _WORKER_STORE.close()
    _WORKER_STORE = ResultsStore(db_path)


def _run_and_store(spec: RunSpec) -> str:
    record, curves = execute(spec)
    _WORKER_STORE.record_run(record, curves)
    return record["status"]


@dataclass
class SweepCounts:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    diverged: int = 0
    errors: list[str] = field(default_factory=list)
    #: keys of the runs skipped because they were finished already (see :func:`run_benchmark`)
    skipped_keys: set = field(default_factory=set)
    #: of those: finished by this sweep's tuning phase (reused), and before this sweep started
    reused_from_tuning: int = 0
    stored_before: int = 0


class WorkerCrashed(RuntimeError):
    """A worker process died (killed or crashed); finished runs are in the store."""


#: Imported once by the fork server; every worker is a fork of it, so no worker pays for
#: importing torch again (with "spawn" each worker did, seconds each on a busy machine).
#: ``torch._dynamo`` is what the first ``torch.optim.Optimizer`` of a process imports.
_PRELOAD = ["torch", "torch._dynamo", "l2o.train", "l2o.tasks", "l2o.bench.runner"]


def _mp_context():
    """"forkserver" where the platform has it: workers are forked from a clean server process
    that has imported torch but never run it (no fork of a process that holds torch threads);
    else "spawn"."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # takes effect when the server starts (once per process); the guard makes the server exit with its driver
    context.set_forkserver_preload([*_PRELOAD, "l2o.bench._forkserver_guard"])
    return context


def open_pool(db_path: str, workers: int):
    """A pool of ``workers`` processes (:class:`l2o.bench.executors.ProcessExecutor`), each with its
    own connection to the store."""
    from l2o.bench.executors import ProcessExecutor

    return ProcessExecutor(workers, _mp_context(), _init_worker, (db_path,), _run_and_store)


def open_executor(db_path: str, workers: int, executor: str = "process", ray_address: str | None = None):
    """The executor of a sweep: None (runs in this process) for one local worker, a process pool
    (:func:`open_pool`) for several, or a :class:`l2o.bench.executors.RayExecutor`."""
    from l2o.bench.executors import EXECUTORS, RayExecutor

    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if executor == "ray":
        return RayExecutor(db_path, address=ray_address, workers=workers)
    if ray_address:
        raise ValueError("--ray-address applies to --executor ray only")
    return open_pool(db_path, workers) if workers > 1 else None


def run_specs(specs: list[RunSpec], db_path: str, workers: int = 1, desc: str = "runs",
              progress: bool = True, pool: ProcessPoolExecutor | None = None) -> SweepCounts:
    """Run every spec not yet finished in the store at ``db_path``.

    Args:
        specs: the runs (duplicates are run once).
        db_path: the results file.
        workers: processes; 1 runs in this process.
        desc: progress-bar label.
        progress: show a tqdm bar on stderr (runs done, running, failed, ETA).
        pool: an open pool (from :func:`open_pool`) to reuse across phases.
    """
    from tqdm import tqdm

    counts = SweepCounts()
    with ResultsStore(db_path) as store:
        finished = store.finished_keys()
    unique: dict[str, RunSpec] = {}
    for spec in specs:
        unique.setdefault(spec.key, spec)
    todo = [s for k, s in unique.items() if k not in finished]
    counts.skipped = len(unique) - len(todo)
    counts.skipped_keys = set(unique) - {s.key for s in todo}
    if not todo:
        return counts
    bar = tqdm(total=len(todo), desc=f"{desc} ({counts.skipped} done earlier, reused)" if counts.skipped else desc,
               unit="run", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    bar.set_postfix(running=min(max(workers, 1), len(todo)), failed=0, diverged=0, refresh=False)

    def tally(status: str, running: int) -> None:
        counts.done += 1
        counts.failed += status == "failed"
        counts.diverged += status == "diverged"
        bar.update(1)
        bar.set_postfix(running=running, failed=counts.failed, diverged=counts.diverged, refresh=False)

    try:
        if pool is None and workers <= 1:
            _init_worker(db_path)
            for spec in todo:
                bar.set_postfix(running=1, failed=counts.failed, diverged=counts.diverged, refresh=False)
                tally(_run_and_store(spec), running=0)
            return counts
        own_pool = pool is None
        pool = open_pool(db_path, workers) if own_pool else pool
        aborted = True
        try:
            statuses = pool.results(todo)
            while True:
                try:
                    status = next(statuses)
                except StopIteration:
                    break
                except Exception as exc:
                    raise WorkerCrashed(
                        f"a worker process died ({type(exc).__name__}: {exc}); {counts.done} runs of this "
                        f"phase were stored. Run the same command again to resume.") from exc
                tally(status, running=pool.running)
            aborted = False
        finally:
            if own_pool:
                pool.close(abort=aborted)
    finally:
        bar.close()
    return counts


# -- the protocol ------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a sweep runs: task ids, optimizer names, their grids, and the seeds."""

    tasks: list[str]
    optimizers: list[str]
    grids: dict[str, grids_mod.Grid] = field(default_factory=dict)
    protocol: str = "quick"
    tune_seeds: int = 1
    seeds: int = 10
    noise_scale: bool = False  # measure B_simple at the end of every run (l2o.diagnostics)

    def __post_init__(self):
        if self.tune_seeds < 1:
            raise ValueError(f"tune_seeds must be >= 1, got {self.tune_seeds}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if self.protocol not in grids_mod.PROTOCOL_LR_GRIDS:
            raise ValueError(f"protocol must be one of {sorted(grids_mod.PROTOCOL_LR_GRIDS)}, got {self.protocol!r}")
        if not self.tasks:
            raise ValueError("no tasks to run")
        if not self.optimizers:
            raise ValueError("no optimizers to run")
        unknown = set(self.grids) - set(self.optimizers)
        if unknown:
            raise ValueError(f"grid given for {', '.join(sorted(unknown))}, which is not among the optimizers "
                             f"({', '.join(self.optimizers)})")

    def grid_for(self, spec: OptimizerSpec) -> tuple[list[dict[str, Any]], bool]:
        """(configurations, tuned?) for an optimizer."""
        if spec.name in self.grids:
            configs = grids_mod.expand(self.grids[spec.name])
            return configs, len(configs) > 1
        if not spec.tunable:
            return [{}], False
        if spec.multiplier_tuned:
            return [{"lr": m} for m in grids_mod.PROTOCOL_MULTIPLIER_GRIDS[self.protocol]], True
        return [{"lr": lr} for lr in grids_mod.PROTOCOL_LR_GRIDS[self.protocol]], True


def _check_configs(spec: OptimizerSpec, configs: list[dict[str, Any]], games: bool = False) -> None:
    """Build each configuration once on dummy parameters (two players' for ``games``): a bad
    hyperparameter fails here."""
    import torch

    for config in configs:
        try:
            if games:
                spec.game_factory(config)([torch.zeros(2, requires_grad=True)], [torch.zeros(2, requires_grad=True)])
            else:
                spec.factory(config)([torch.zeros(2, requires_grad=True)])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"optimizer {spec.name!r} rejects hyperparameters {config}: {exc}") from exc


def _check_players(task_kinds: dict[str, bool], optimizers: list[OptimizerSpec]) -> None:
    """Games take two-player optimizers and tasks one-player ones: refuse a sweep that mixes them
    (run games and tasks as two sweeps; they may share one results file)."""
    games = [t for t, game in task_kinds.items() if game]
    tasks = [t for t, game in task_kinds.items() if not game]
    if games and tasks:
        raise ValueError(f"games ({', '.join(games)}) and tasks ({', '.join(tasks)}) need different optimizers "
                         "(two-player and one-player): run them as two sweeps (they may share one --db)")
    if games:
        one = [o.name for o in optimizers if o.kind not in ("minimax", "class")]
        if one:
            from l2o.bench.optimizers import two_player_names

            raise ValueError(f"{', '.join(one)}: one-player optimizer(s) cannot play the games {', '.join(games)}; "
                             f"use two-player ones: {', '.join(two_player_names())} (each also as NAME+rmsprop, "
                             "NAME+adam), or a class of your own taking (x_params, y_params, lr_x=..., lr_y=...)")
    else:
        two = [o.name for o in optimizers if o.two_player]
        if two:
            raise ValueError(f"{', '.join(two)}: two-player optimizer(s) play games (see 'l2o bench list'), not "
                             f"the tasks {', '.join(tasks)}")


def run_benchmark(plan: Plan, db_path: str, workers: int = 1, progress: bool = True, executor: str = "process",
                  ray_address: str | None = None) -> dict[str, Any]:
    """Tune, select and rerun every (task, optimizer) of ``plan``; everything lands in ``db_path``.

    ``executor``: "process" (``workers`` local processes; 1: this process) or "ray" (each run a Ray
    task on the cluster at ``ray_address``, or on a local Ray instance of ``workers`` CPUs).
    """
    presets = {t: get_preset(t) for t in plan.tasks}
    optimizers = [resolve(name) for name in plan.optimizers]
    task_steps, task_kinds = {}, {}
    for task_id, preset in presets.items():
        task = preset.build(0)
        task_steps[task_id] = int(task.steps)
        task_kinds[task_id] = is_game(task)
        if task_kinds[task_id] and not preset.game:  # one's own game given as package.module:name
            presets[task_id] = replace(preset, game=True)
    _check_players(task_kinds, optimizers)
    configs = {}
    for spec in optimizers:
        configs[spec.name] = plan.grid_for(spec)
        _check_configs(spec, configs[spec.name][0], games=any(task_kinds.values()))

    def make(task_id, spec, config, seed):
        preset = presets[task_id]
        return RunSpec(task_id, preset, spec, _freeze(config), seed, task_steps[task_id], preset.eval_every or
                       max(1, task_steps[task_id] // 50), noise_scale=plan.noise_scale)

    tune_seeds = list(range(plan.tune_seeds))
    tune = [make(t, o, c, s) for t in plan.tasks for o in optimizers if configs[o.name][1]
            for c in configs[o.name][0] for s in tune_seeds]
    with ResultsStore(db_path) as store:
        stored_before = store.finished_keys()
    pool = open_executor(db_path, workers, executor, ray_address)
    aborted = True
    try:
        totals = _tune_select_rerun(plan, db_path, workers, progress, pool, optimizers, configs, task_steps, tune,
                                    make, final_seeds=list(range(plan.seeds)), tune_seeds=tune_seeds)
        aborted = False
    finally:
        if pool is not None:
            pool.close(abort=aborted)  # stopped (Ctrl-C, SIGTERM, a dead worker): the workers are killed
    for counts in totals.values():  # what "skipped" was: this sweep's own tuning runs, or earlier work
        counts.stored_before = len(counts.skipped_keys & stored_before)
        counts.reused_from_tuning = counts.skipped - counts.stored_before
    return totals


def _tune_select_rerun(plan, db_path, workers, progress, pool, optimizers, configs, task_steps, tune, make,
                       final_seeds, tune_seeds):
    totals = {"tune": run_specs(tune, db_path, workers, "tune", progress, pool)}

    final: list[RunSpec] = []
    with ResultsStore(db_path) as store:
        for task_id in plan.tasks:
            for spec in optimizers:
                candidates, tuned = configs[spec.name]
                best, best_loss = candidates[0], math.nan
                if tuned:
                    best, best_loss = select(store, [make(task_id, spec, c, s) for c in candidates for s in tune_seeds])
                store.record_selection(task_id, spec.name, best, tuned, best_loss, len(candidates),
                                       tune_seeds if tuned else [], final_seeds, task_steps[task_id])
                final += [make(task_id, spec, best, s) for s in final_seeds]
    totals["final"] = run_specs(final, db_path, workers, "final", progress, pool)
    return totals


def select(store: ResultsStore, specs: list[RunSpec]) -> tuple[dict[str, Any], float]:
    """The configuration with the lowest mean selection loss over its seeds (+inf if any failed;
    ties to the one listed first): :func:`l2o.compare.choose` over :func:`l2o.compare.mean_score`."""
    from l2o.compare import choose, mean_score

    by_key = {r["run_key"]: r for r in _runs_for(store, specs)}
    losses: dict[tuple, list[float]] = defaultdict(list)
    for spec in specs:
        row = by_key.get(spec.key)
        value = row["selection_loss"] if row and row["status"] == "complete" else None
        losses[spec.hparams].append(math.inf if value is None else float(value))
    scores = {hparams: mean_score(values) for hparams, values in losses.items()}
    best = choose(scores)
    return dict(best), scores[best]


def _runs_for(store: ResultsStore, specs: list[RunSpec]) -> list[dict[str, Any]]:
    pairs = {(s.task, s.optimizer.name) for s in specs}
    rows = []
    for task, optimizer in pairs:
        rows += store.runs(task=task, optimizer=optimizer)
    return rows
