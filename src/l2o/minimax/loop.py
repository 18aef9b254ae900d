"""Play a game with a two-player optimizer: the one seeded loop behind experiments and benchmarks."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from l2o.minimax.games import Game, Params
from l2o.minimax.optim import TwoPlayerOptimizer

OptimizerFactory = Callable[[list[torch.Tensor], list[torch.Tensor]], TwoPlayerOptimizer]


@dataclass
class PlayResult:
    """What one run produced.

    Attributes:
        steps: the steps at which ``metrics`` were recorded (0: before the first step).
        metrics: ``game.evaluate(x, y)`` at those steps.
        trajectory: for games with one coordinate per player, (x, y) at every step.
        x, y: the final parameters (detached).
        diverged: f, a gradient or a parameter became non-finite; the run stopped there.
        steps_done: the optimizer steps taken (the step that diverged not counted).
        seconds: wall-clock time of the optimizer steps.
    """

    steps: list[int] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    trajectory: list[tuple[float, float]] = field(default_factory=list)
    x: Params = field(default_factory=dict)
    y: Params = field(default_factory=dict)
    diverged: bool = False
    steps_done: int = 0
    seconds: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        return self.metrics[-1] if self.metrics else {}


def play(game: Game, make_optimizer: OptimizerFactory, steps: int | None = None, seed: int = 0,
         record_every: int = 1, progress: Callable[[int], None] | None = None) -> PlayResult:
    """Run ``steps`` steps of ``make_optimizer(x_params, y_params)`` on ``game`` from its seeded start.

    ``seed`` seeds the initial parameters and the batch stream; metrics are recorded every
    ``record_every`` steps and after the last one.
    """
    steps = game.steps if steps is None else int(steps)
    if steps < 0 or record_every < 1:
        raise ValueError("steps must be >= 0 and record_every >= 1")
    gen = torch.Generator().manual_seed(seed)
    x0, y0 = game.init_params(gen)
    x = {k: v.clone().requires_grad_(True) for k, v in x0.items()}
    y = {k: v.clone().requires_grad_(True) for k, v in y0.items()}
    opt = make_optimizer(list(x.values()), list(y.values()))
    batches = game.batches(gen)
    scalar = sum(v.numel() for v in x.values()) == 1 and sum(v.numel() for v in y.values()) == 1
    out = PlayResult()

    def record(t: int) -> None:
        out.steps.append(t)
        out.metrics.append(game.evaluate(x, y))

    record(0)
    if scalar:
        out.trajectory.append((float(next(iter(x.values())).detach()), float(next(iter(y.values())).detach())))
    start = time.perf_counter()
    for t in range(1, steps + 1):
        batch = next(batches)
        try:
            opt.step(lambda: game.loss(x, y, batch))
        except ValueError as exc:
            if "not finite" not in str(exc):
                raise
            out.diverged = True
            break
        if not all(bool(torch.isfinite(v).all()) for v in (*x.values(), *y.values())):
            out.diverged = True
            break
        out.steps_done = t
        if scalar:
            out.trajectory.append((float(next(iter(x.values())).detach()), float(next(iter(y.values())).detach())))
        if t % record_every == 0 or t == steps:
            out.seconds += time.perf_counter() - start
            record(t)
            start = time.perf_counter()
            if any(isinstance(v, float) and not math.isfinite(v) for v in out.metrics[-1].values()):
                out.diverged = True
                break
        if progress is not None:
            progress(t)
    out.seconds += time.perf_counter() - start  # the steps since the last record (up to a divergence)
    out.x = {k: v.detach().clone() for k, v in x.items()}
    out.y = {k: v.detach().clone() for k, v in y.items()}
    return out
