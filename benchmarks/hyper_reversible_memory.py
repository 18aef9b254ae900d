"""Reversible learning's memory against storing every iterate, as the number of steps grows.

For SGD with momentum 0.9 on the 64-50-50-10 tanh digits network (float64, batch 50), for each
number of steps T this records the information buffer of :func:`l2o.hyper.reversible_hypergradient`
(its information in bits, and the bytes its Python integers take here) against the bytes needed to
store every float64 weight and velocity iterate (what back-propagation through the unrolled run
keeps, before counting activations). It also times the reversible hypergradient as a ratio to
autograd through the unrolled run, measured in the same process, single-threaded, median of
``--rounds`` interleaved rounds.

Usage::

    python benchmarks/hyper_reversible_memory.py          # writes benchmarks/results/hyper_reversible_memory.json
    python benchmarks/hyper_reversible_memory.py --steps 10,20 --rounds 1 --out /tmp/rev.json
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
    parser.add_argument("--steps", default="10,25,50,100,200", help="comma-separated numbers of steps")
    parser.add_argument("--rounds", type=int, default=2, help="timing rounds (median kept)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hyper_reversible_memory.json"))
    args = parser.parse_args(argv)
    steps_list = [int(s) for s in args.steps.split(",") if s.strip()]
    if not steps_list or min(steps_list) < 1:
        parser.error("--steps needs positive integers")
    torch.set_num_threads(1)
    from l2o.experiments.reversible import DigitsProblem, ReversibleConfig
    from l2o.hyper.reversible import Hyperparameters, reversible_hypergradient, unrolled_hypergradient

    rows = []
    for steps in steps_list:
        config = ReversibleConfig(steps=steps)
        problem = DigitsProblem(config)
        raw, batches = problem.inputs(0, steps)
        hyper = Hyperparameters.constant(steps, 3, lr=2.0, momentum=0.9)
        result = reversible_hypergradient(problem.loss, raw, batches, hyper, problem.val_loss, track_buffer=True)
        params = sum(v.numel() for v in raw.values())
        times = {"reversible": [], "unrolled": []}
        for _ in range(args.rounds):
            for name, fn in (("reversible", reversible_hypergradient), ("unrolled", unrolled_hypergradient)):
                start = time.perf_counter()
                fn(problem.loss, raw, batches, hyper, problem.val_loss)
                times[name].append(time.perf_counter() - start)
        rev, unr = statistics.median(times["reversible"]), statistics.median(times["unrolled"])
        rows.append({"steps": steps, "parameters": params, "buffer_bits": result.buffer_bits[-1],
                     "buffer_bytes_information": result.buffer_bits[-1] / 8,
                     "buffer_bytes_python_ints": result.buffer_bytes,
                     "iterates_bytes_float64": steps * 2 * params * 8,
                     "bits_per_element_step": result.buffer_bits[-1] / (params * steps),
                     "exact_reversal": result.exact_reversal,
                     "time_ratio_reversible_to_unrolled": rev / unr})
        print(json.dumps(rows[-1]))
    out = {"benchmark": "hyper_reversible_memory", "cpu": cpu_info(), "torch": torch.__version__,
           "momentum": 0.9, "rows": rows}
    atomic_write_text(args.out, json.dumps(jsonable(out), indent=1, allow_nan=False))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
