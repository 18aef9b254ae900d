"""Benchmark tasks by id (a registered task plus its arguments) and the named suites.

A *task id* is what the results store and reports use: ``digits_mlp_relu`` is
``l2o.tasks.get("digits_mlp", activation="relu")``. Any registered task name is also a task id
(with its default arguments), and so is a task of one's own given as ``package.module:name``.

Games (:mod:`l2o.minimax`) are task ids too: the ``game_*`` presets, any game name of
``l2o.minimax.GAMES`` (``f1``, ``bilinear``, ``mog1d``, ...), or a game of one's own as
``package.module:name`` (an ``l2o.minimax.Game`` or a function returning one). They are played by
two-player optimizers (:mod:`l2o.bench.optimizers`) and measured by :func:`game_metric`.
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
        game: ``task`` names a game of ``l2o.minimax.GAMES``; ``kwargs`` go to its factory,
            except ``steps``, the budget. For a game, ``metric`` names one of its evaluation
            metrics (lower is better; None: :func:`game_metric`'s choice).
    """

    task: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    metric: str | None = None
    eval_every: int | None = None
    seed_kwarg: str | None = None
    game: bool = False

    def config(self) -> dict[str, Any]:
        config = {"task": self.task, "kwargs": dict(sorted(self.kwargs.items())), "seed_kwarg": self.seed_kwarg}
        if self.game:  # only where set, so that the run keys of tasks stay what they were
            config["game"] = True
        return config

    def build(self, seed: int = 0):
        """The task (an ``l2o.tasks.Task``) or game (an ``l2o.minimax.Game``) of this preset."""
        kwargs = dict(self.kwargs)
        if self.seed_kwarg:
            kwargs[self.seed_kwarg] = seed
        if ":" in self.task:  # one's own task or game
            from l2o._registry import import_instance
            from l2o.minimax import Game
            from l2o.tasks import Task

            built = import_instance(self.task, "task", (Task, Game), "l2o.tasks.Task or l2o.minimax.Game", kwargs)
        elif self.game:
            from l2o import minimax

            steps = kwargs.pop("steps", None)
            built = minimax.get(self.task, **kwargs)
            if steps is not None:
                built.steps = int(steps)
        else:
            from l2o import tasks

            built = tasks.get(self.task, **kwargs)
        if self.metric:
            built.metric = self.metric
        return built


def is_game(task) -> bool:
    """Whether a built task is a two-player game (played by two-player optimizers)."""
    from l2o.minimax import Game

    return isinstance(task, Game)


def game_metric(game) -> str:
    """What a benchmark reports and tunes on for a game (lower is better): the preset's
    ``metric`` if it set one, else the distance to the equilibrium where the game knows it,
    else the sum of both players' gradient norms, ||grad_x f|| + ||grad_y f||."""
    metric = getattr(game, "metric", None)
    if isinstance(metric, str):
        return metric
    return "distance" if game.equilibrium is not None else "grad_norm"


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
    # Games (l2o.minimax), played by two-player optimizers. Follow-the-Ridge's toy functions from
    # the paper's starts: f1 and f3 are measured by the distance to their local minimax point
    # (the origin); f2's origin is a stationary point that is *not* a local minimax point, so
    # converging there is no success, and its metric, the gradient norm, rewards it anyway: it is
    # left out of the suite and kept as a preset to show exactly that.
    "game_f1": TaskPreset("f1", {"steps": 500}, eval_every=10, game=True),
    "game_f2": TaskPreset("f2", {"steps": 500}, eval_every=10, game=True),
    "game_f3": TaskPreset("f3", {"steps": 1000}, eval_every=20, game=True),
    "game_bilinear": TaskPreset("bilinear", {"dim": 4, "steps": 500}, eval_every=10, game=True),
    # The 1-D mixture GAN, small enough for a sweep (16-unit tanh MLPs, batches of 64, fresh
    # batches each step); measured by the gradient norms on 2000 held points and latents.
    "game_mog1d": TaskPreset("mog1d", {"g_hidden": 16, "d_hidden": 16, "batch_size": 64, "steps": 500},
                             eval_every=25, game=True),
    "game_f1_tiny": TaskPreset("f1", {"steps": 60}, eval_every=10, game=True),
    "game_mog1d_tiny": TaskPreset("mog1d", {"g_hidden": 4, "d_hidden": 4, "z_dim": 2, "batch_size": 16,
                                            "n_data": 200, "steps": 20}, eval_every=5, game=True),
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
    "minimax": Suite(("game_f1", "game_f3", "game_bilinear", "game_mog1d"),
                     optimizers=("gda", "extragradient", "ogda", "ftr"), protocol="quick", tune_seeds=2, seeds=5,
                     description="two-player optimizers on Follow-the-Ridge's toy games, a bilinear game and a "
                                 "small GAN; step size tuned on 11 values x 2 seeds, best rerun on 5 seeds"),
    "deepobs_quadratic": Suite(("quadratic_deep",), optimizers=("sgd", "momentum", "adam"), protocol="deepobs",
                               tune_seeds=1, seeds=10,
                               description="quadratic_deep with DeepOBS's 36-value learning-rate grid"),
}


def task_registered(name: str) -> bool:
    from l2o import tasks

    return name in tasks.TASKS


def game_registered(name: str) -> bool:
    from l2o.minimax import GAMES

    return name in GAMES


def _preset_available(preset: TaskPreset) -> bool:
    return game_registered(preset.task) if preset.game else task_registered(preset.task)


def suite_tasks(name: str) -> list[str]:
    """The task ids of suite ``name``, leaving out tasks whose module is not installed."""
    suite = get_suite(name)
    return [t for t in suite.tasks if _preset_available(PRESETS[t])]


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}. Available: {', '.join(sorted(SUITES))}")
    return SUITES[name]


def get_preset(task_id: str) -> TaskPreset:
    """The preset for ``task_id``: a preset name, any registered task (default arguments), or a
    task of one's own as ``package.module:name`` (``l2o.tasks.get``; its own budget and metric)."""
    if task_id in PRESETS and _preset_available(PRESETS[task_id]):
        return PRESETS[task_id]
    if task_registered(task_id) or ":" in task_id:
        return TaskPreset(task_id)
    if game_registered(task_id):
        return TaskPreset(task_id, game=True)
    known = available_task_ids()
    close = difflib.get_close_matches(task_id, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown task {task_id!r}.{hint} Available: {', '.join(known)}")


def available_game_ids() -> list[str]:
    """The game presets and the games of ``l2o.minimax.GAMES``."""
    from l2o.minimax import GAMES

    return sorted({t for t, p in PRESETS.items() if p.game and _preset_available(p)} | set(GAMES))


def available_task_ids() -> list[str]:
    """Every task id: the presets, the registered tasks and the games (:func:`available_game_ids`)."""
    from l2o import tasks

    return sorted({t for t, p in PRESETS.items() if _preset_available(p)} | set(tasks.available())
                  | set(available_game_ids()))
