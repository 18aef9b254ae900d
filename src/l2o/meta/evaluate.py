"""Evaluate a learned optimizer against Adam with a tuned learning rate, over seeds (``l2o meta eval``).

The protocol is :mod:`l2o.compare`'s: for each budget, Adam's learning rate is picked from a grid
by the mean final *training* loss (full training set) over tuning seeds ``1000, 1001, ...``,
which are disjoint from the evaluation seeds ``0 .. seeds-1``; held-out numbers never choose
anything. Both optimizers then run on the evaluation seeds through the shared loop
:func:`l2o.train.train`, and the mean and standard deviation (and standard error, in the JSON)
of the final training and test losses are reported. A diverged run counts as ``inf`` loss.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch

from l2o.learned.base import LearnedRule

TUNE_SEED_OFFSET = 1000


def load_rule_by_name(weights: str) -> LearnedRule:
    """A weights file path, or the name of shipped weights (:func:`l2o.learned.weights.load_weights`)."""
    from l2o.learned.weights import load_weights

    return load_weights(weights)


def _final(result, split: str, metric: str = "loss") -> float:
    if result.diverged:
        return math.inf if metric == "loss" else math.nan
    return (result.final_train if split == "train" else result.final_test)[metric]


def _stats(values: list[float], over_finite: bool = False) -> dict[str, float]:
    """Mean, standard deviation and standard error (:func:`l2o.compare.summarize`); a diverged run
    makes the mean infinite, or with ``over_finite`` (accuracies) is left out of it."""
    from l2o.compare import summarize

    st = summarize(values, over_finite=over_finite)
    return {"mean": st.mean, "std": st.std, "sem": 0.0 if math.isnan(st.sem) else st.sem, "diverged": st.diverged}


def _curve(losses: list[list[float]], steps: int) -> dict[str, list[float]]:
    """Minibatch training loss by step over the runs that did not diverge: mean, 10th and 90th
    percentiles (empty lists when every run diverged)."""
    if not losses:
        return {"mean": [], "p10": [], "p90": []}
    by_step = torch.tensor([run[:steps] for run in losses], dtype=torch.float64)
    low, high = torch.quantile(by_step, torch.tensor([0.1, 0.9], dtype=torch.float64), dim=0)
    return {"mean": by_step.mean(dim=0).tolist(), "p10": low.tolist(), "p90": high.tolist()}


def tune_adam(task, steps: int, grid: list[float], tune_seeds: int, on_run=None) -> tuple[float, dict[str, float]]:
    """Adam learning rate from ``grid`` with the lowest mean final training loss on the tuning
    seeds (:func:`l2o.compare.tune`). ``on_run`` (optional) is called after each run (progress bars)."""
    from l2o.compare import tune
    from l2o.train import train

    def run(lr, seed):
        return _final(train(task, lambda ps: torch.optim.Adam(ps, lr=lr), steps=steps, seed=seed), "train")

    result = tune(list(grid), run, [TUNE_SEED_OFFSET + s for s in range(tune_seeds)], key=str, on_run=on_run)
    return result.best, result.scores


def compare_with_adam(rule: LearnedRule, task_name: str, task_kwargs: dict[str, Any], budgets: list[int], seeds: int = 10,
                      adam_grid: list[float] | None = None, tune_seeds: int = 3, progress: bool = True,
                      adapt: float | None = None) -> dict[str, Any]:
    """Final losses of ``rule`` (as a LearnedOptimizer, with ``adapt`` its step-size adaptation
    rate; None: the rate it was meta-trained under) and tuned Adam on ``task`` per budget.

    Returns a JSON-friendly dict: per budget, the chosen Adam learning rate, the grid scores,
    and for both optimizers mean/sem of final train and test loss (and test accuracy, where the task
    reports one) and the minibatch training loss
    curve (mean and 10th/90th percentiles over the seeds that did not diverge).
    """
    from tqdm import tqdm

    import l2o.tasks
    from l2o.learned.adaptation import check_adapt, default_adapt
    from l2o.learned.optimizer import LearnedOptimizer
    from l2o.train import train

    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if tune_seeds < 1:  # checked before the progress bar starts
        raise ValueError(f"tune_seeds must be >= 1, got {tune_seeds}")
    if not budgets or any(b < 1 for b in budgets):
        raise ValueError(f"budgets must be positive integers, got {budgets}")
    grid = adam_grid or [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    adapt = default_adapt(rule) if adapt is None else check_adapt(adapt)
    task = l2o.tasks.get(task_name, **task_kwargs)
    out: dict[str, Any] = {"task": task_name, "task_args": task_kwargs, "seeds": seeds, "tune_seeds": tune_seeds,
                           "adam_grid": grid, "rule": rule.kind, "adapt": adapt, "budgets": {}}
    bar = tqdm(total=len(budgets) * (len(grid) * tune_seeds + 2 * seeds), desc="eval", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    for steps in budgets:
        lr, scores = tune_adam(task, steps, grid, tune_seeds, on_run=lambda: bar.update(1))
        rows = {}
        for label, factory in (("learned", lambda ps: LearnedOptimizer(ps, rule=rule, adapt=adapt)),
                               ("adam", lambda ps: torch.optim.Adam(ps, lr=lr))):
            runs = []
            for s in range(seeds):
                runs.append(train(task, factory, steps=steps, seed=s))
                bar.update(1)
            rows[label] = {"train": _stats([_final(r, "train") for r in runs]),
                           "test": _stats([_final(r, "test") for r in runs]),
                           **({"test_accuracy": _stats([_final(r, "test", "accuracy") for r in runs], over_finite=True)}
                              if any("accuracy" in r.final_test for r in runs) else {}),
                           "curve": _curve([r.losses for r in runs if not r.diverged], steps)}
        out["budgets"][str(steps)] = {"adam_lr": lr, "adam_grid_train_loss": scores, **rows}
    bar.close()
    return out


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`compare_with_adam`'s results."""
    accuracy = any("test_accuracy" in row[label] for row in results["budgets"].values() for label in ("learned", "adam"))
    columns = ["train", "test"] + (["test_accuracy"] if accuracy else [])
    header = {"train": "final train loss", "test": "final test loss", "test_accuracy": "test accuracy"}
    lines = [f"task {results['task']} {results['task_args']}  ({results['seeds']} seeds; Adam lr tuned on training loss "
             f"over {results['tune_seeds']} other seeds; ± is the standard deviation over seeds)",
             f"{'steps':>6}  {'optimizer':<16} " + " ".join(f"{header[c]:>22}" for c in columns)]
    for steps, row in results["budgets"].items():
        for label in ("learned", "adam"):
            name = results["rule"] + "-learned" if label == "learned" else f"adam lr={row['adam_lr']:g}"
            if label == "learned" and results.get("adapt"):
                name += f" adapt={results['adapt']:g}"
            cells = []
            for column in columns:
                st = row[label].get(column)
                if st is None:
                    cells.append("—")
                    continue
                std = st.get("std", math.nan)
                text = f"{st['mean']:.4f}" + (f" ± {std:.4f}" if std is not None and math.isfinite(std) else "")
                cells.append(text + (f" ({st['diverged']} div)" if st["diverged"] else ""))
            lines.append(f"{steps:>6}  {name:<16} " + " ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


__all__ = ["compare_with_adam", "tune_adam", "format_table", "load_rule_by_name"]
