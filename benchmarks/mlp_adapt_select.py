"""Choose the step-size adaptation rate (or the step multiplier) of a learned optimizer (default:
the shipped ``mlp-general``) on its own task family.

``LearnedOptimizer(..., adapt=kappa)`` adapts a per-tensor log step multiplier by the cosine of
the gradient with the previous step (docs/methods/mlp_lopt.md). This script picks ``kappa``
without looking at the benchmark suite: it trains tasks drawn from the meta-training family
(``MLPProblemFamily``, the default problem types) plus the opt-in ``lowdim`` problems (least squares
in 1-3 weights, the family's only problems made of a few scalars; ``--types`` picks others), each
for its own horizon, with every ``kappa`` of the grid (``--lr``: every step multiplier ``lr``
instead), and scores ``log(final training loss / initial training loss)`` (full training set;
lower is better), the meta-objective's validation measure, clipped to
``[log 1e-6, log 1e4]`` so that separable problems driven to a loss of ~0 (whose log ratio has no
floor) do not outweigh the rest. Tasks are drawn with a seed of their own (not the
meta-training or validation seeds).

Usage::

    python benchmarks/mlp_adapt_select.py      # writes benchmarks/results/mlp_adapt_select.json
    python benchmarks/mlp_adapt_select.py --weights run/weights.safetensors --out select.json
    python benchmarks/mlp_adapt_select.py --lr     # writes benchmarks/results/mlp_lr_select.json
    python benchmarks/mlp_adapt_select.py --lr --types consistent,quadratic \
        --out benchmarks/results/mlp_lr_select_consistent.json   # other problem types of the family
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

GRID = (0.0, 0.01, 0.03, 0.1, 0.3)  # kappa; 0 (off) is the baseline
LR_GRID = (0.5, 0.7, 1.0, 1.4, 2.0, 3.0, 5.0)  # lr; 1 (as meta-trained) is the baseline
FLOOR, CEILING = math.log(1e-6), math.log(1e4)


TYPES = ("digits", "classification", "regression", "quadratic", "lowdim")


def run(values, tasks_per_type: int, seed: int, weights: str = "mlp-general", knob: str = "adapt",
        types=TYPES) -> dict:
    """Score every value of ``knob`` (``"adapt"`` or ``"lr"``, a ``LearnedOptimizer`` argument) on
    ``tasks_per_type`` tasks of each problem type of ``types``."""
    from l2o.learned.optimizer import LearnedOptimizer
    from l2o.learned.weights import load_weights
    from l2o.tasks.mlp_problems import MLPProblemFamily
    from l2o.train import train

    rule = load_weights(weights)
    gen = torch.Generator().manual_seed(seed)
    tasks = [(kind, MLPProblemFamily(datasets=(kind,)).sample(gen)) for kind in types for _ in range(tasks_per_type)]
    baseline = {"adapt": 0.0, "lr": 1.0}[knob]
    scores = {k: {t: [] for t in types} for k in values}
    for i, (kind, task) in enumerate(tasks):
        start = task.evaluate(task.init_params(torch.Generator().manual_seed(i)), "train")["loss"]
        for value in values:
            result = train(task, lambda ps, v=value: LearnedOptimizer(ps, rule=rule, **{knob: v}), seed=i)
            final = result.final_train.get("loss", math.inf) if not result.diverged else math.inf
            scores[value][kind].append(min(max(math.log(max(final, 1e-30) / start), FLOOR), CEILING))
        print(f"task {i + 1}/{len(tasks)} ({kind}, {task.steps} steps) done", file=sys.stderr)
    summary = {}
    for value in values:
        per_type = {t: statistics.fmean(v) for t, v in scores[value].items()}
        every = [x for v in scores[value].values() for x in v]
        base = [x for v in scores.get(baseline, {}).values() for x in v]
        wins = sum(a < b for a, b in zip(every, base)) if base else None
        summary[str(value)] = {"mean": statistics.fmean(every), "median": statistics.median(every),
                               f"better_than_{knob}_{baseline:g}": wins, "per_type": per_type}
    best = min(values, key=lambda k: summary[str(k)]["mean"])
    return {"weights": weights, "knob": knob, "types": list(types), "tasks_per_type": tasks_per_type, "seed": seed, "grid": list(values),
            "scores": summary, "best": best,
            "raw": {str(k): v for k, v in scores.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks-per-type", type=int, default=8)
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--weights", default="mlp-general", help="a shipped name or a weights file")
    parser.add_argument("--types", default=",".join(TYPES),
                        help=f"problem types of MLPProblemFamily, comma-separated (default: {','.join(TYPES)})")
    parser.add_argument("--lr", action="store_true", help=f"score the step multiplier lr over {LR_GRID} instead of kappa")
    parser.add_argument("--out", default=None, help="results file (default: benchmarks/results/mlp_adapt_select.json, "
                        "or mlp_lr_select.json with --lr)")
    args = parser.parse_args(argv)
    from l2o.tasks.mlp_problems import MLPProblemFamily

    types = tuple(t for t in args.types.split(",") if t)
    try:  # the family's own check of the problem types, as a usage error before any work
        MLPProblemFamily(datasets=types)
    except ValueError as error:
        parser.error(f"--types: {error}")
    knob, grid = ("lr", LR_GRID) if args.lr else ("adapt", GRID)
    out = args.out or str(Path(__file__).parent / "results" / f"mlp_{knob}_select.json")
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = {"command": "python benchmarks/mlp_adapt_select.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "torch": torch.__version__, **run(grid, args.tasks_per_type, args.seed, args.weights, knob, types)}
    result["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "raw"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
