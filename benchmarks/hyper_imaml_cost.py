"""Time and memory of one meta-gradient against the number of inner steps: MAML, FOMAML, iMAML.

The paper's Figure 2: MAML back-propagates through the inner steps (memory and time grow with
them), iMAML's implicit gradient needs only the final inner iterate (memory flat, time growing only
by the cheap inner steps). Sinusoid 1-40-40-1 network, meta-batch 10, CG 5 steps, float32,
single-threaded. Times are ratios to first-order MAML with one inner step measured in the same run
(interleaved rounds, medians) and, per round, to first-order MAML with the same number of inner
steps (the extra cost of the meta-gradient itself); memory is the peak of tensors held by autograd
(:func:`l2o.hyper.imaml.graph_memory`).

Usage::

    python benchmarks/hyper_imaml_cost.py          # writes benchmarks/results/hyper_imaml_cost.json
    python benchmarks/hyper_imaml_cost.py --steps 1,4 --rounds 2 --out /tmp/imaml.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from l2o.io import atomic_write_text, jsonable
from _machine import cpu_info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,2,4,8,16,32,64", help="comma-separated inner step counts")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (median kept)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hyper_imaml_cost.json"))
    args = parser.parse_args(argv)
    steps_list = [int(s) for s in args.steps.split(",") if s.strip()]
    if not steps_list or min(steps_list) < 1:
        parser.error("--steps needs positive integers")
    torch.set_num_threads(1)
    from l2o.hyper.fewshot import BatchedMLP, SinusoidFamily
    from l2o.hyper.imaml import METHODS, InnerConfig, graph_memory, meta_gradient

    model = BatchedMLP([1, 40, 40, 1], regression=True)
    theta = model.init(torch.Generator().manual_seed(0))
    batch = SinusoidFamily().sample(torch.Generator().manual_seed(1), 10)
    cfg = lambda m, k: InnerConfig(method=m, inner_steps=k, inner_lr=0.01, lam=2.0, cg_steps=5)  # noqa: E731
    cases = [("fomaml", 1, "baseline")] + [(m, k, None) for k in steps_list for m in METHODS]
    times: dict = {(m, k): [] for m, k, _ in cases}
    for _ in range(args.rounds):
        for method, k, _ in cases:
            start = time.perf_counter()
            meta_gradient(model, theta, batch, cfg(method, k))
            times[method, k].append(time.perf_counter() - start)
    base = statistics.median(times["fomaml", 1])
    rows = []
    for k in steps_list:
        for method in METHODS:
            with graph_memory() as stats:
                meta_gradient(model, theta, batch, cfg(method, k))
            rows.append({"method": method, "inner_steps": k, "peak_autograd_bytes": stats["peak"],
                         "time_ratio_to_fomaml_1_step": statistics.median(times[method, k]) / base,
                         "time_ratio_to_fomaml_same_steps": statistics.median(
                             [t / f for t, f in zip(times[method, k], times["fomaml", k])])})
            print(json.dumps(rows[-1]))
    out = {"benchmark": "hyper_imaml_cost", "cpu": cpu_info(), "torch": torch.__version__, "meta_batch": 10,
           "cg_steps": 5, "baseline_seconds": base, "rows": rows}
    atomic_write_text(args.out, json.dumps(jsonable(out), indent=1, allow_nan=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
