"""Comparing optimizers: tune on some seeds, run on the evaluation seeds, summarize.

One protocol, used by ``l2o meta eval`` (:mod:`l2o.meta.evaluate`), the L2L reproduction
(:mod:`l2o.experiments.l2l`) and the benchmark's selection step (:mod:`l2o.bench.runner`):

1. :func:`tune`: every candidate (a learning rate, a configuration) runs on the tuning seeds,
   which the caller keeps disjoint from the evaluation seeds; its score is the mean of its
   runs' values (:func:`mean_score`: ``sum / n``, infinite when any run diverged or failed);
   :func:`choose` takes the lowest, ties going to the candidate listed first (a grid listed in
   increasing order: the smaller value).
2. :func:`run_seeds`: the chosen candidate (and the optimizer it is compared with) on the
   evaluation seeds.
3. :func:`summarize`: mean, standard deviation and standard error over seeds, diverged runs
   counted; :func:`format_stats` writes ``mean ± std`` (the one convention of l2o's tables:
   ± is the sample standard deviation over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

C = TypeVar("C")
R = TypeVar("R")


def mean_score(values: Sequence[float]) -> float:
    """``sum(values) / len(values)``; infinite when a value is not finite (a diverged or failed run)."""
    if not values:
        return math.inf
    if not all(math.isfinite(v) for v in values):
        return math.inf
    return sum(values) / len(values)


def choose(scores: dict[Hashable, float]) -> Hashable:
    """The key of the lowest score; ties go to the key listed first."""
    if not scores:
        raise ValueError("nothing to choose from: no candidates")
    order = {key: i for i, key in enumerate(scores)}
    return min(scores, key=lambda key: (scores[key], order[key]))


@dataclass
class Tuning(Generic[C]):
    """What :func:`tune` returns: the chosen candidate, its score and every candidate's score
    (keyed by ``key(candidate)``), and whether the choice lies at the edge of the candidates."""

    best: C
    score: float
    scores: dict[str, float]

    at_edge: bool = False


def tune(candidates: Sequence[C], run: Callable[[C, int], float], seeds: Sequence[int], *,
         key: Callable[[C], str] = str, on_run: Callable[[], None] | None = None) -> Tuning[C]:
    """Run every candidate on ``seeds`` (``run(candidate, seed)`` returns the run's value, lower is
    better, inf when it diverged) and choose the one with the lowest :func:`mean_score`."""
    if not candidates:
        raise ValueError("tune needs at least one candidate")
    if not seeds:
        raise ValueError("tune needs at least one tuning seed")
    by_key: dict[str, C] = {}
    scores: dict[str, float] = {}
    for candidate in candidates:
        values = []
        for seed in seeds:
            values.append(float(run(candidate, seed)))
            if on_run is not None:
                on_run()
        name = key(candidate)
        by_key[name], scores[name] = candidate, mean_score(values)
    best = choose(scores)
    names = list(scores)
    return Tuning(by_key[best], scores[best], scores, at_edge=len(names) > 1 and best in (names[0], names[-1]))


def run_seeds(run: Callable[[int], R], seeds: Sequence[int], on_run: Callable[[], None] | None = None) -> list[R]:
    """``run(seed)`` for every evaluation seed, in order."""
    results = []
    for seed in seeds:
        results.append(run(seed))
        if on_run is not None:
            on_run()
    return results


@dataclass
class Stats:
    """Mean, sample standard deviation and standard error over ``n`` runs; ``diverged`` of them
    did not finish (their value is infinite, which makes the mean infinite, or with
    ``over_finite`` leaves them out of it)."""

    mean: float
    std: float
    sem: float
    n: int
    diverged: int

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "sem": self.sem, "n": self.n, "diverged": self.diverged}


def summarize(values: Sequence[float], over_finite: bool = False) -> Stats:
    """:class:`Stats` of ``values`` (mean ``sum / n``; std with ``n - 1``, NaN below two runs or
    when the mean is infinite)."""
    finite = [v for v in values if math.isfinite(v)]
    kept = finite if over_finite else list(values)
    diverged = len(values) - len(finite)
    if not kept:
        return Stats(math.nan, math.nan, math.nan, 0, diverged)
    if len(finite) < len(kept):
        return Stats(math.inf, math.nan, math.nan, len(kept), diverged)
    mean = sum(kept) / len(kept)
    if len(kept) < 2:
        return Stats(mean, math.nan, math.nan, len(kept), diverged)
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))
    return Stats(mean, std, std / math.sqrt(len(kept)), len(kept), diverged)


def format_stats(stats: Stats, digits: int = 4, runs: int | None = None) -> str:
    """``mean ± std`` (std omitted below two runs); "diverged" when every run did, "diverged k/n"
    when some did and the mean is infinite."""
    runs = stats.n if runs is None else runs
    if runs and stats.diverged == runs:
        return "diverged"
    if not math.isfinite(stats.mean):
        return f"diverged {stats.diverged}/{runs}"
    if math.isnan(stats.std):
        return f"{stats.mean:.{digits}f}"
    return f"{stats.mean:.{digits}f} ± {stats.std:.{digits}f}"


__all__ = ["mean_score", "choose", "tune", "Tuning", "run_seeds", "Stats", "summarize", "format_stats"]
