"""Choose the step-size adaptation rate of a learned optimizer (default: the shipped ``mlp-general``)
on its own task family.

``LearnedOptimizer(..., adapt=kappa)`` adapts a per-tensor log step multiplier by the cosine of
the gradient with the previous step (docs/methods/mlp_lopt.md). This script picks ``kappa``
without looking at the benchmark suite: it trains tasks drawn from the meta-training family
(``GeneralFamily``, the default problem types) plus the opt-in ``lowdim`` problems (least squares
in 1-3 weights, the family's only problems made of a few scalars), each for its own horizon,
with every ``kappa`` of the grid, and scores ``log(final training loss / initial training loss)``
(full training set; lower is better), the meta-objective's validation measure, clipped to
``[log 1e-6, log 1e4]`` so that separable problems driven to a loss of ~0 (whose log ratio has no
floor) do not outweigh the rest. Tasks are drawn with a seed of their own (not the
meta-training or validation seeds).

Usage::

    python benchmarks/mlp_adapt_select.py      # writes benchmarks/results/mlp_adapt_select.json
    python benchmarks/mlp_adapt_select.py --weights run/weights.safetensors --out select.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from l2o.io import atomic_write_text

GRID = (0.0, 0.01, 0.03, 0.1, 0.3)
FLOOR, CEILING = math.log(1e-6), math.log(1e4)


def run(kappas, tasks_per_type: int, seed: int, weights: str = "mlp-general") -> dict:
    from l2o.learned.optimizer import LearnedOptimizer
    from l2o.meta.evaluate import load_rule_by_name
    from l2o.tasks.family import GeneralFamily
    from l2o.train import train

    rule = load_rule_by_name(weights)
    gen = torch.Generator().manual_seed(seed)
    types = ("digits", "classification", "regression", "quadratic", "lowdim")
    tasks = [(kind, GeneralFamily(datasets=(kind,)).sample(gen)) for kind in types for _ in range(tasks_per_type)]
    scores = {k: {t: [] for t in types} for k in kappas}
    for i, (kind, task) in enumerate(tasks):
        start = task.evaluate(task.init_params(torch.Generator().manual_seed(i)), "train")["loss"]
        for kappa in kappas:
            result = train(task, lambda ps, k=kappa: LearnedOptimizer(ps, rule=rule, adapt=k),
                           seed=i)
            final = result.final_train.get("loss", math.inf) if not result.diverged else math.inf
            scores[kappa][kind].append(min(max(math.log(max(final, 1e-30) / start), FLOOR), CEILING))
        print(f"task {i + 1}/{len(tasks)} ({kind}, {task.steps} steps) done", file=sys.stderr)
    summary = {}
    for kappa in kappas:
        per_type = {t: statistics.fmean(v) for t, v in scores[kappa].items()}
        every = [x for v in scores[kappa].values() for x in v]
        wins = sum(a < b for a, b in zip(every, (x for v in scores[0.0].values() for x in v))) if 0.0 in scores else None
        summary[str(kappa)] = {"mean": statistics.fmean(every), "median": statistics.median(every),
                               "better_than_kappa_0": wins, "per_type": per_type}
    best = min(kappas, key=lambda k: summary[str(k)]["mean"])
    return {"weights": weights, "tasks_per_type": tasks_per_type, "seed": seed, "grid": list(kappas), "scores": summary, "best": best,
            "raw": {str(k): v for k, v in scores.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks-per-type", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--weights", default="mlp-general", help="a shipped name or a weights file")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mlp_adapt_select.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = {"command": "python benchmarks/mlp_adapt_select.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "torch": torch.__version__, **run(GRID, args.tasks_per_type, args.seed, args.weights)}
    result["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
