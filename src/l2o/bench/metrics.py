"""Benchmark metrics on loss curves and final numbers (plain numpy, no store needed).

- :func:`mean_std`: mean and sample standard deviation of the finite values.
- :func:`smooth`: trailing moving average of a minibatch loss curve.
- :func:`steps_to_target`: the first step at which a curve is at or below a target.
- :func:`baseline_target`: the target loss of a task: the median, over its seeds, of the final
  (smoothed) training loss of the best baseline.
- :func:`mean_curve`: seed-mean of loss curves.
- :func:`reach_step`: the step from which a curve stays below a loss (interpolated).
- :func:`speedup`: how many steps the reference (tuned Adam) needs to reach the loss another
  optimizer ends with, divided by that optimizer's budget (exactly 1 for the reference itself).
- :func:`performance_profile`: Dolan & Moré (2002) performance profiles across tasks.
- :func:`time_ratio`: fastest wall-clock time per step relative to a reference's (SGD).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def mean_std(values: Sequence[float | None]) -> tuple[float, float, int]:
    """(mean, sample std, count) of the finite entries; (nan, nan, 0) if there are none."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return math.nan, math.nan, 0
    std = float(finite.std(ddof=1)) if finite.size > 1 else 0.0
    return float(finite.mean()), std, int(finite.size)


def smooth(curve: Sequence[float], window: int = 10) -> np.ndarray:
    """Trailing moving average: entry i is the mean of the last ``min(window, i+1)`` values."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    x = np.asarray(curve, dtype=float)
    if x.size == 0:
        return x
    cumsum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(1, x.size + 1)
    lo = np.maximum(0, idx - window)
    return (cumsum[idx] - cumsum[lo]) / (idx - lo)


def steps_to_target(curve: Sequence[float], target: float) -> int | None:
    """Number of steps until ``curve`` first reaches ``target`` (``curve[i] <= target`` at step
    ``i + 1``), or None if it never does. NaN entries never count as reaching it."""
    x = np.asarray(curve, dtype=float)
    hits = np.flatnonzero(np.nan_to_num(x, nan=np.inf) <= target)
    return int(hits[0]) + 1 if hits.size else None


def baseline_target(final_losses: Mapping[str, Sequence[float]]) -> tuple[str, float]:
    """(best baseline, target): the optimizer whose median final loss over seeds is lowest,
    and that median. Non-finite losses (diverged seeds) count as +inf."""
    if not final_losses:
        raise ValueError("final_losses is empty")
    medians = {}
    for name, values in final_losses.items():
        arr = np.array([v if v is not None and math.isfinite(v) else np.inf for v in values], dtype=float)
        medians[name] = float(np.median(arr)) if arr.size else math.inf
    best = min(medians, key=medians.get)
    return best, medians[best]


def mean_curve(curves: Sequence[Sequence[float]]) -> np.ndarray:
    """Seed-mean of curves, truncated to the shortest one (empty array if there are none)."""
    curves = [np.asarray(c, dtype=float) for c in curves if len(c)]
    if not curves:
        return np.zeros(0)
    length = min(c.size for c in curves)
    return np.mean(np.stack([c[:length] for c in curves]), axis=0)


def reach_step(reference_curve: Sequence[float], loss: float, steps: Sequence[float] | None = None) -> float | None:
    """The step from which ``reference_curve`` stays below ``loss`` until its end.

    That is the last time the curve is at or above ``loss``, linearly interpolated between
    points: on the segment where the curve last crosses from ``>= loss`` to ``< loss``. If the
    curve is below ``loss`` everywhere, its first step. None if the curve does not end below
    ``loss`` (it never settles there), except that ``loss`` equal to the curve's last value
    gives its last step (the reference "reaches" its own final loss at the end of its budget).

    Args:
        reference_curve: loss values (non-finite entries count as above any loss).
        loss: the loss to reach.
        steps: the step of each value (default 1, 2, ...).
    """
    y = np.nan_to_num(np.asarray(reference_curve, dtype=float), nan=np.inf, posinf=np.inf)
    if y.size == 0:
        return None
    t = np.arange(1, y.size + 1, dtype=float) if steps is None else np.asarray(steps, dtype=float)
    if t.shape != y.shape:
        raise ValueError(f"steps has {t.size} entries, the curve {y.size}")
    if y[-1] == loss:
        return float(t[-1])
    if not y[-1] < loss:
        return None
    above = np.flatnonzero(y >= loss)
    if above.size == 0:
        return float(t[0])
    i = int(above[-1])  # y[i] >= loss > y[i + 1]
    if not math.isfinite(y[i]):
        return float(t[i + 1])
    return float(t[i] + (y[i] - loss) / (y[i] - y[i + 1]) * (t[i + 1] - t[i]))


def speedup(reference_curve: Sequence[float], final_loss: float, steps: int,
            reference_steps: Sequence[float] | None = None) -> tuple[float, bool]:
    """Speedup over a reference optimizer (tuned Adam): how many reference steps reach the loss
    the compared optimizer ends with, divided by the compared optimizer's budget.

    "Reach" is :func:`reach_step`: the step from which the reference's curve stays below the
    loss to the end of its budget (interpolated between points), so a reference that dips below
    the loss by noise and comes back does not count as having reached it. The reference
    compared with itself (``final_loss`` = the last value of ``reference_curve``, budgets equal)
    gives exactly 1.

    Args:
        reference_curve: the reference's seed-mean loss curve (see :func:`mean_curve`).
        final_loss: the compared optimizer's final loss: the last value of its own seed-mean
            curve, computed the same way.
        steps: the compared optimizer's number of steps.
        reference_steps: the step of each reference value (default 1, 2, ...).

    Returns:
        (speedup, lower_bound). If the reference does not end below ``final_loss`` (it never
        gets there within its budget), ``reference budget / steps`` and ``lower_bound`` True:
        the true speedup is at least that. A non-finite ``final_loss`` gives (0.0, False).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if final_loss is None or not math.isfinite(final_loss):
        return 0.0, False
    y = np.asarray(reference_curve, dtype=float)
    if y.size == 0:
        raise ValueError("reference_curve is empty")
    reached = reach_step(y, final_loss, reference_steps)
    if reached is None:
        budget = float(y.size if reference_steps is None else reference_steps[-1])
        return budget / steps, True
    return reached / steps, False


def performance_profile(costs: Mapping[str, Mapping[str, float]], taus: Sequence[float]) -> dict[str, np.ndarray]:
    """Dolan-Moré performance profiles.

    Args:
        costs: task -> optimizer -> cost (lower is better, > 0; non-finite means failed).
            Every task should list the same optimizers; a missing one counts as failed.
        taus: ratios at which to evaluate the profile (>= 1).

    Returns:
        optimizer -> rho(tau) array: the fraction of tasks on which the optimizer's cost is
        within a factor tau of the best optimizer's cost on that task.
    """
    optimizers = sorted({o for per_task in costs.values() for o in per_task})
    taus = np.asarray(taus, dtype=float)
    ratios = {o: [] for o in optimizers}
    for per_task in costs.values():
        values = {o: per_task.get(o, math.inf) for o in optimizers}
        finite = [v for v in values.values() if v is not None and math.isfinite(v)]
        best = min(finite) if finite else math.inf
        for o in optimizers:
            v = values[o]
            if v is None or not math.isfinite(v) or not math.isfinite(best):
                ratios[o].append(math.inf)
            elif best <= 0:
                ratios[o].append(1.0 if v <= best else math.inf)
            else:
                ratios[o].append(v / best)
    n = max(len(costs), 1)
    return {o: np.array([sum(r <= t for r in ratios[o]) / n for t in taus]) for o in optimizers}


def time_ratio(seconds_per_step: Sequence[float], reference_seconds_per_step: Sequence[float]) -> float:
    """Fastest time per step over the reference's fastest (nan if either is empty).

    The runs of a sweep happen at different moments on a machine that may be shared: other
    load only ever adds time, and it does not hit the compared optimizers alike, so means and
    medians across runs compare moments more than optimizers. The fastest run is the closest to
    an optimizer's own cost. (For a controlled comparison, time both in one interleaved loop.)
    """
    a = [v for v in seconds_per_step if v is not None and math.isfinite(v) and v > 0]
    b = [v for v in reference_seconds_per_step if v is not None and math.isfinite(v) and v > 0]
    if not a or not b:
        return math.nan
    return min(a) / min(b)
