"""The table of optimizers that the common suite (``tests/optim/test_common.py``) runs on.

Adding an optimizer to ``l2o.optim`` means adding one :class:`OptimizerCase` to ``CASES``:

.. code-block:: python

    OptimizerCase(
        name="myopt",                                 # its l2o.optim registry name
        kwargs=lambda: dict(lr=0.05),                 # hyperparameters for the common tests
        variants=[dict(weight_decay=0.1), dict(maximize=True)],  # more settings checked foreach == loop
        bad_hyperparameters=[("lr", -1.0), ("betas", (0.9, 1.5))],  # each must raise ValueError
        group_override=dict(lr=0.01),                 # a second param group's setting that changes the result
        rosenbrock=ConvergenceSpec(kwargs=dict(lr=0.01), steps=2000, tolerance=1e-2),
        quadratic=ConvergenceSpec(kwargs=dict(lr=0.1), steps=300, tolerance=1e-4),
    )

``kwargs`` is a function so that every optimizer a test builds gets fresh objects (e.g. its own
``torch.Generator`` for a stochastic method). The tests build optimizers with
``l2o.optim.create(name, params, **{**kwargs(), **overrides})`` and pass ``foreach`` explicitly.
Each ``(name, value)`` in ``bad_hyperparameters`` must raise a ``ValueError`` whose message
contains the parameter's name and ``repr(value)`` (for a pair such as ``betas`` the message may
name the element, e.g. ``betas[1]``, and give the element's value).

``ConvergenceSpec``: from the fixed starting points of the tests (Rosenbrock from (-1.5, 2), a
20-dimensional ill-conditioned quadratic) the optimizer must end within ``tolerance`` of the
minimum value after ``steps`` steps with ``kwargs`` (merged over ``kwargs()``).

If ``torch.compile`` of the step cannot work for a method, set ``compile_limitation`` to
``(ExceptionType, "why")``: the compile test then asserts that exact failure instead of the match
with eager mode. Sparse gradients must raise ``l2o.optim._base.SparseGradientError`` unless
``sparse_supported=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class ConvergenceSpec:
    """Hyperparameters and budget with which the optimizer must reach ``tolerance`` of the minimum."""

    kwargs: dict
    steps: int
    tolerance: float


@dataclass(frozen=True)
class OptimizerCase:
    name: str
    kwargs: Callable[[], dict]
    bad_hyperparameters: list[tuple[str, object]]
    group_override: dict
    rosenbrock: ConvergenceSpec
    quadratic: ConvergenceSpec
    variants: list[dict] = field(default_factory=list)
    compile_limitation: tuple[type[BaseException], str] | None = None
    sparse_supported: bool = False

    def __str__(self) -> str:
        return self.name


def generator(seed: int = 0) -> torch.Generator:
    """A seeded CPU generator, for methods that draw noise."""
    return torch.Generator().manual_seed(seed)


CASES: list[OptimizerCase] = [
    OptimizerCase(
        name="hadam",
        kwargs=lambda: dict(lr=0.05, order=4),
        variants=[dict(order=2), dict(order=3, weight_decay=0.1), dict(order=8, maximize=True), dict(order=64),
                  dict(betas=(0.5, 0.9), eps=1e-3)],
        bad_hyperparameters=[("lr", -0.1), ("betas", (0.9, 1.0)), ("betas", (-0.1, 0.9)), ("eps", 0.0),
                             ("order", 0.5), ("weight_decay", -1.0), ("order", float("nan"))],
        group_override=dict(lr=0.01),
        rosenbrock=ConvergenceSpec(kwargs=dict(lr=0.05), steps=3000, tolerance=1e-4),
        quadratic=ConvergenceSpec(kwargs=dict(lr=0.1), steps=600, tolerance=1e-6),
    ),
]

CASES.append(
    OptimizerCase(
        name="sgld",
        kwargs=lambda: dict(lr=0.01, num_data=10, temperature=1.0, generator=generator()),
        variants=[dict(lr_decay=0.55, lr_offset=2.0), dict(temperature=0.0), dict(temperature=0.1, num_data=1),
                  dict(noise="philox"), dict(noise="philox", lr_decay=0.55, temperature=0.5)],
        bad_hyperparameters=[("lr", -0.1), ("num_data", 0), ("temperature", -1.0), ("lr_offset", 0.0),
                             ("lr_decay", -0.5), ("generator", "seed"), ("noise", "gaussian")],
        group_override=dict(temperature=0.1),
        # A sampler with (almost) no noise is gradient descent: it must then converge.
        rosenbrock=ConvergenceSpec(kwargs=dict(lr=0.004, num_data=1, temperature=1e-10), steps=3000,
                                   tolerance=1e-4),
        quadratic=ConvergenceSpec(kwargs=dict(lr=0.3, num_data=1, temperature=1e-10), steps=600, tolerance=1e-6),
    )
)

CASES.append(
    OptimizerCase(
        name="sgdhd",
        kwargs=lambda: dict(lr=0.05, hypergrad_lr=0.01),
        variants=[dict(momentum=0.9), dict(momentum=0.5, nesterov=True, weight_decay=0.1),
                  dict(lr=0.0, maximize=True), dict(momentum=0.9, dampening=0.3)],
        bad_hyperparameters=[("lr", -0.1), ("hypergrad_lr", -1e-3), ("momentum", 1.0), ("weight_decay", -1.0),
                             ("nesterov", "yes"), ("dampening", 1.5)],
        sparse_supported=True,
        group_override=dict(hypergrad_lr=0.1),
        # Rosenbrock's gradients reach 1e3, so g.g' reaches 1e6: beta must be tiny there.
        rosenbrock=ConvergenceSpec(kwargs=dict(lr=5e-4, hypergrad_lr=1e-8, momentum=0.9, nesterov=True),
                                   steps=3000, tolerance=1e-4),
        quadratic=ConvergenceSpec(kwargs=dict(lr=0.01, hypergrad_lr=1e-3), steps=600, tolerance=1e-6),
    )
)

CASES.append(
    OptimizerCase(
        name="adamhd",
        kwargs=lambda: dict(lr=0.05, hypergrad_lr=1e-3),
        variants=[dict(weight_decay=0.1), dict(lr=0.0, hypergrad_lr=0.01, maximize=True),
                  dict(betas=(0.5, 0.9), eps=1e-3)],
        bad_hyperparameters=[("lr", -0.1), ("hypergrad_lr", -1e-7), ("betas", (0.9, 1.0)), ("eps", -1e-8),
                             ("weight_decay", -1.0)],
        group_override=dict(hypergrad_lr=0.01),
        rosenbrock=ConvergenceSpec(kwargs=dict(lr=0.01, hypergrad_lr=1e-5), steps=3000, tolerance=1e-4),
        quadratic=ConvergenceSpec(kwargs=dict(lr=0.01, hypergrad_lr=1e-4), steps=600, tolerance=1e-6),
    )
)

CASES.append(
    OptimizerCase(
        name="yellowfin",
        # Faster averages than the paper's 0.999 so that five steps exercise the tuner.
        kwargs=lambda: dict(beta=0.9, init_lr=0.01),
        variants=[dict(closed_loop=True, staleness=1, feedback_gain=0.1), dict(clip_norm=0.5, weight_decay=0.1),
                  dict(adaptive_clip=0.5, stat_clip=2.0, curv_win_width=3, max_move=0.05),
                  dict(smoothed=True, log_curvature=False, slow_start=False, tune_first_step=True)],
        bad_hyperparameters=[("lr", -1.0), ("beta", 1.0), ("curv_win_width", 0), ("init_lr", 0.0),
                             ("init_momentum", 1.0), ("clip_norm", -1.0), ("adaptive_clip", 0.0), ("staleness", -1),
                             ("feedback_gain", 2.0), ("weight_decay", -0.1), ("max_move", 0.0), ("stat_clip", -1.0),
                             ("smoothed", "yes"), ("tune_first_step", 1)],
        group_override=dict(lr=0.5),
        # The defaults (the authors' code): on these noise-free problems the unsmoothed momentum
        # climbs to 0.9998 as the gradient norm falls by decades, hence the budgets.
        rosenbrock=ConvergenceSpec(kwargs=dict(beta=0.999, init_lr=1e-4), steps=4000, tolerance=1e-4),
        quadratic=ConvergenceSpec(kwargs=dict(beta=0.999, init_lr=1e-4), steps=6000, tolerance=1e-6),
    )
)
