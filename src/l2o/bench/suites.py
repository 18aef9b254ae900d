"""Benchmark tasks by id (a registered task plus its arguments) and the named suites.

A *task id* is what the results store and reports use: ``digits_mlp_relu`` is
``l2o.tasks.get("digits_mlp", activation="relu")``. Any registered task name is also a task id
(with its default arguments), and so is a task of one's own given as ``package.module:name``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TaskPreset:
    """One benchmark task.

    Attributes:
        task: the registered task name (``l2o.tasks``).
        kwargs: constructor arguments.
        metric: the reported metric ("test_loss" or "test_accuracy"); None: the task's own.
        eval_every: steps between test evaluations for the curves (None: ~50 points).
        seed_kwarg: if set, the run seed is also passed as this constructor argument, so each
            seed is a fresh draw from a task family (the 10-dim quadratics).
    """

    task: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    metric: str | None = None
    eval_every: int | None = None
    seed_kwarg: str | None = None

    def config(self) -> dict[str, Any]:
        return {"task": self.task, "kwargs": dict(sorted(self.kwargs.items())), "seed_kwarg": self.seed_kwarg}

    def build(self, seed: int = 0):
        from l2o import tasks

        kwargs = dict(self.kwargs)
        if self.seed_kwarg:
            kwargs[self.seed_kwarg] = seed
        task = tasks.get(self.task, **kwargs)
        if self.metric:
            task.metric = self.metric
        return task


PRESETS: dict[str, TaskPreset] = {
    # 100 epochs of 7 batches of 128 = 700 steps; evaluate once per epoch, as DeepOBS does.
    "quadratic_deep": TaskPreset("quadratic_deep", eval_every=7),
    "two_d_rosenbrock": TaskPreset("two_d_rosenbrock", eval_every=50),
    "two_d_beale": TaskPreset("two_d_beale", eval_every=50),
    "two_d_branin": TaskPreset("two_d_branin", eval_every=50),
    "digits_logreg": TaskPreset("digits_logreg", eval_every=20),
    "digits_mlp_sigmoid": TaskPreset("digits_mlp", {"activation": "sigmoid", "steps": 300},
                                     metric="test_accuracy", eval_every=20),
    "digits_mlp_relu": TaskPreset("digits_mlp", {"activation": "relu", "steps": 300},
                                  metric="test_accuracy", eval_every=20),
    "digits_cnn": TaskPreset("digits_cnn", eval_every=20),
    "quadratic_10d": TaskPreset("quadratic", {"dim": 10, "steps": 100}, eval_every=5, seed_kwarg="seed"),
    # Delay 10 (not the task's default 50) keeps a run to a few seconds on one core.
    "copying": TaskPreset("copying", {"delay": 10, "copy_length": 5, "steps": 200, "eval_size": 200}, eval_every=20),
    # Outside mlp-general's meta-training family (1-2 hidden layers, up to 1,000 steps): deeper,
    # and 10x the small suite's 300-step horizon. Not in a suite; run them with --tasks.
    "digits_mlp_relu_deep": TaskPreset("digits_mlp", {"activation": "relu", "layers": 3, "steps": 300},
                                       metric="test_accuracy", eval_every=20),
    "digits_mlp_relu_long": TaskPreset("digits_mlp", {"activation": "relu", "steps": 3000},
                                       metric="test_accuracy", eval_every=100),
    # Tiny versions for the smoke suite and the tests.
    "quadratic_deep_tiny": TaskPreset("quadratic_deep", {"epochs": 5}, eval_every=7),
    "two_d_rosenbrock_tiny": TaskPreset("two_d_rosenbrock", {"steps": 100}, eval_every=25),
    "digits_logreg_tiny": TaskPreset("digits_logreg", {"steps": 60}, eval_every=20),
    "quadratic_10d_tiny": TaskPreset("quadratic", {"dim": 10, "steps": 30}, eval_every=10, seed_kwarg="seed"),
}


@dataclass(frozen=True)
class Suite:
    """Tasks plus a default protocol (the command line can override each part)."""

    tasks: tuple[str, ...]
    optimizers: tuple[str, ...] = ("sgd", "momentum", "adam")
    protocol: str = "quick"
    tune_seeds: int = 1
    seeds: int = 10
    description: str = ""


SUITES: dict[str, Suite] = {
    "smoke": Suite(("quadratic_deep_tiny", "two_d_rosenbrock_tiny", "digits_logreg_tiny"),
                   optimizers=("sgd", "adam"), protocol="smoke", tune_seeds=1, seeds=2,
                   description="three tiny tasks, 4 learning rates, 2 seeds: about a minute"),
    "small": Suite(("quadratic_deep", "two_d_rosenbrock", "two_d_beale", "two_d_branin", "digits_logreg",
                    "digits_mlp_sigmoid", "digits_mlp_relu", "digits_cnn", "quadratic_10d", "copying"),
                   optimizers=("sgd", "momentum", "adam"), protocol="quick", tune_seeds=2, seeds=10,
                   description="every task, 11 learning rates x 2 seeds, best rerun on 10 seeds"),
    "deepobs_quadratic": Suite(("quadratic_deep",), optimizers=("sgd", "momentum", "adam"), protocol="deepobs",
                               tune_seeds=1, seeds=10,
                               description="quadratic_deep with DeepOBS's 36-value learning-rate grid"),
}


def task_registered(name: str) -> bool:
    from l2o import tasks

    return name in tasks.TASKS


def suite_tasks(name: str) -> list[str]:
    """The task ids of suite ``name``, leaving out tasks whose module is not installed."""
    suite = get_suite(name)
    return [t for t in suite.tasks if task_registered(PRESETS[t].task)]


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}. Available: {', '.join(sorted(SUITES))}")
    return SUITES[name]


def get_preset(task_id: str) -> TaskPreset:
    """The preset for ``task_id``: a preset name, any registered task (default arguments), or a
    task of one's own as ``package.module:name`` (``l2o.tasks.get``; its own budget and metric)."""
    if task_id in PRESETS and task_registered(PRESETS[task_id].task):
        return PRESETS[task_id]
    if task_registered(task_id) or ":" in task_id:
        return TaskPreset(task_id)
    known = available_task_ids()
    close = difflib.get_close_matches(task_id, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown task {task_id!r}.{hint} Available: {', '.join(known)}")


def available_task_ids() -> list[str]:
    from l2o import tasks

    return sorted({t for t, p in PRESETS.items() if task_registered(p.task)} | set(tasks.available()))
