"""Optimizee problems: the Task protocol, task families, and a registry by name.

``l2o.tasks.get("digits_mlp", hidden=40)`` builds a task; ``l2o.tasks.available()`` lists names;
``l2o.tasks.get("package.module:name")`` builds a task of one's own.
"""

from l2o._registry import Registry
from l2o.tasks.base import FixedFamily, ModuleTask, Params, SupervisedTask, Task, TaskFamily, seed_from

TASKS = Registry(
    "task",
    {
        "quadratic": "l2o.tasks.quadratic:QuadraticTask",
        "digits_mlp": "l2o.tasks.digits:DigitsMLP",
        "quadratic_deep": "l2o.tasks.deepobs:QuadraticDeep",
        "two_d_rosenbrock": "l2o.tasks.deepobs:NoisyRosenbrock",
        "two_d_beale": "l2o.tasks.deepobs:NoisyBeale",
        "two_d_branin": "l2o.tasks.deepobs:NoisyBranin",
        "digits_logreg": "l2o.tasks.digits_extra:DigitsLogReg",
        "digits_cnn": "l2o.tasks.digits_extra:DigitsCNN",
        "copying": "l2o.tasks.copying:CopyingTask",
    },
)


def get(name: str, **kwargs) -> Task:
    """Build the task registered as ``name`` with keyword arguments ``kwargs``; or a task of
    one's own given as ``package.module:name``: a Task, or a function that returns one when called
    with ``kwargs``."""
    if ":" not in name:
        return TASKS.get(name)(**kwargs)
    from l2o._registry import import_instance

    return import_instance(name, "task", Task, "l2o.tasks.Task", kwargs)


def available() -> list[str]:
    return TASKS.names()


__all__ = ["Task", "TaskFamily", "FixedFamily", "ModuleTask", "SupervisedTask", "Params",
           "seed_from", "TASKS", "get", "available"]
