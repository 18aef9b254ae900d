"""Step time of the deployed L2L LSTM optimizer, as a ratio to torch.optim.Adam in the same run.

Each model gets fixed random gradients; ``LearnedOptimizer`` (the coordinatewise 2x20 LSTM, its
in-place step over chunks of 8,192 coordinates) and ``torch.optim.Adam`` (default
settings) step it in interleaved rounds, single-threaded, so load from other processes hits
both alike; the median over rounds is kept.

Usage::

    python benchmarks/learned_step_time.py            # writes benchmarks/results/learned_step_time.json
    python benchmarks/learned_step_time.py --rounds 3 --out /tmp/quick.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from l2o.io import atomic_write_text
from l2o.learned import LearnedOptimizer, LSTMRule

MODELS = {
    "digits_mlp 64-20-10 (1,510 params)": [64, 20, 10],
    "mlp 784-100-10 (79,510 params)": [784, 100, 10],
    "mlp 784-256-256-10 (269,322 params)": [784, 256, 256, 10],
}


def make_params(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        params += [torch.randn(fan_out, fan_in, generator=gen) * 0.1, torch.zeros(fan_out)]
    for p in params:
        p.requires_grad_(True)
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    return params


def time_steps(optimizer, steps):
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "learned_step_time.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rule = LSTMRule()
    results = []
    for name, sizes in MODELS.items():
        lstm_params, adam_params = make_params(sizes), make_params(sizes)
        lstm = LearnedOptimizer(lstm_params, rule=rule)
        adam = torch.optim.Adam(adam_params, lr=1e-3)
        time_steps(lstm, 2), time_steps(adam, 2)  # warm-up (state allocation)
        lstm_times, adam_times = [], []
        for _ in range(args.rounds):
            lstm_times.append(time_steps(lstm, args.steps))
            adam_times.append(time_steps(adam, args.steps))
        lstm_s, adam_s = statistics.median(lstm_times), statistics.median(adam_times)
        row = {"model": name, "params": sum(p.numel() for p in lstm_params), "lstm_step_ms": lstm_s * 1e3,
               "adam_step_ms": adam_s * 1e3, "ratio_to_adam": lstm_s / adam_s}
        results.append(row)
        print(f"{name:40s} LSTM {row['lstm_step_ms']:8.3f} ms  Adam {row['adam_step_ms']:7.3f} ms  "
              f"ratio {row['ratio_to_adam']:6.1f}x")
    out = {"benchmark": "learned_step_time", "torch": torch.__version__, "threads": 1,
           "machine": platform.processor() or platform.machine(), "rounds": args.rounds, "steps": args.steps,
           "results": results}
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
