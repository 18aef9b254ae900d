"""YellowFin's choices side by side on the benchmark's small suite, untuned.

Every task of ``l2o bench``'s ``small`` suite (its presets: budgets and reported metrics), seeds
0..N-1, YellowFin with its defaults (the authors' code), with the smoothed values applied, and
with the paper's listing (``YellowFin.ALGORITHM_LISTING``). Prints the mean reported metric per
task and writes docs/methods/figures/yellowfin_small_suite.json. The tuned baselines of the same
tasks are in docs/bench.md.

    python examples/yellowfin_small_suite.py --seeds 3
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from l2o.bench.suites import get_preset, suite_tasks
from l2o.io import atomic_write_text, jsonable
from l2o.optim.yellowfin import YellowFin
from l2o.train import train

VARIANTS = {"defaults": {}, "smoothed=True": dict(smoothed=True), "ALGORITHM_LISTING": YellowFin.ALGORITHM_LISTING}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "docs" / "methods" / "figures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    results: dict = {"seeds": list(range(args.seeds)), "tasks": {}}
    print(f"{'task':20s} {'metric':14s} " + " ".join(f"{v:>20s}" for v in VARIANTS))
    for task_id in suite_tasks("small"):
        preset = get_preset(task_id)
        row, metric = {}, None
        for label, kwargs in VARIANTS.items():
            values, diverged = [], 0
            for seed in range(args.seeds):
                task = preset.build(seed)
                metric = task.metric
                result = train(task, lambda p, kw=kwargs: YellowFin(p, **kw), seed=seed)
                if result.diverged:
                    diverged += 1
                    continue
                key = metric.split("_", 1)[1]
                values.append(result.final_test[key])
            row[label] = {"values": values, "diverged": diverged,
                          "mean": sum(values) / len(values) if values else math.nan}
        results["tasks"][task_id] = {"metric": metric, **row}
        cells = " ".join(f"{row[v]['mean']:>14.4g} ({row[v]['diverged']} div)" for v in VARIANTS)
        print(f"{task_id:20s} {metric:14s} {cells}", flush=True)
    results["command"] = f"python examples/yellowfin_small_suite.py --seeds {args.seeds}"
    results["seconds"] = time.time() - start
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "yellowfin_small_suite.json", json.dumps(jsonable(results), indent=1))
    print(f"wrote {args.out / 'yellowfin_small_suite.json'} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
