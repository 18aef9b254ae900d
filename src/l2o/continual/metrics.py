"""Continual-learning metrics from an accuracy matrix.

``R[i][j]`` is the accuracy on task j after training on tasks 0..i (T×T); ``b[j]`` is the
accuracy on task j of the network before any training (for forward transfer).

- average accuracy: (1/T) Σ_j R[T−1][j];
- backward transfer (Lopez-Paz & Ranzato 2017): (1/(T−1)) Σ_{j<T−1} (R[T−1][j] − R[j][j]);
  negative when earlier tasks are forgotten;
- forgetting (Chaudhry et al. 2018): (1/(T−1)) Σ_{j<T−1} (max_{l<T−1} R[l][j] − R[T−1][j]), the
  drop from the best accuracy a task ever had; ≥ 0;
- forward transfer (Lopez-Paz & Ranzato): (1/(T−1)) Σ_{j>0} (R[j−1][j] − b[j]).

With one task, the transfer and forgetting metrics are undefined (None).
"""

from __future__ import annotations

import math


def _check(R) -> list[list[float]]:
    if not isinstance(R, (list, tuple)) or not R:
        raise ValueError("the accuracy matrix must be a non-empty T x T list of lists")
    T = len(R)
    rows = [list(map(float, r)) for r in R]
    if any(len(r) != T for r in rows):
        raise ValueError(f"the accuracy matrix must be square (T x T); got rows of lengths {[len(r) for r in rows]}")
    if any(not math.isfinite(v) for r in rows for v in r):
        raise ValueError("the accuracy matrix holds a non-finite value")
    return rows


def average_accuracy(R) -> float:
    R = _check(R)
    return sum(R[-1]) / len(R)


def backward_transfer(R) -> float | None:
    R = _check(R)
    T = len(R)
    if T < 2:
        return None
    return sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def forgetting(R) -> float | None:
    R = _check(R)
    T = len(R)
    if T < 2:
        return None
    return sum(max(R[l][j] for l in range(j, T - 1)) - R[T - 1][j] for j in range(T - 1)) / (T - 1)


def forward_transfer(R, b) -> float | None:
    R = _check(R)
    T = len(R)
    if len(b) != T:
        raise ValueError(f"the baseline accuracies must have one entry per task ({T}), got {len(b)}")
    if T < 2:
        return None
    return sum(R[j - 1][j] - float(b[j]) for j in range(1, T)) / (T - 1)


def summarize(R, b=None) -> dict:
    """All the metrics of one accuracy matrix as a dict."""
    out = {"avg_accuracy": average_accuracy(R), "forgetting": forgetting(R), "bwt": backward_transfer(R)}
    out["fwt"] = forward_transfer(R, b) if b is not None else None
    return out
