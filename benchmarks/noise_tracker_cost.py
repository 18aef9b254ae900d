"""Cost of measuring the gradient noise scale, as ratios to a plain training step measured in the
same run.

The loop: a 64-256-10 ReLU ``nn.Sequential`` MLP on scikit-learn's digits, batches of 128,
``torch.optim.SGD``, cross-entropy. Rows:

- ``step``: one training step (zero_grad, forward, backward, optimizer step): the baseline.
- ``tracker two_batch``: the step plus ``NoiseScaleTracker(method="two_batch").update`` on every
  step (the extra forward and backward over half the batch).
- ``tracker exact``: the step plus ``NoiseScaleTracker(method="exact").update`` on every step
  (per-example gradients of the batch).
  With ``every=k`` the tracker's cost per step is its row's extra cost divided by k.
- ``gradient_noise_scale exact (1348 examples)``: one exact measurement over the whole training
  set, and ``... two_batch (16 draws of 512)``: McCandlish's estimator with its defaults; both as
  ratios to one training step.

Timings are single-threaded, in interleaved rounds (every row once per round), median over rounds.
The CPU's vector extensions (avx512f / avx2) are recorded beside the ratios.

Usage::

    python benchmarks/noise_tracker_cost.py         # writes benchmarks/results/noise_tracker_cost.json
    python benchmarks/noise_tracker_cost.py --rounds 3 --steps 5 --out /tmp/noise_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from l2o.data.digits import load_digits_split
from l2o.diagnostics import NoiseScaleTracker, gradient_noise_scale
from l2o.io import atomic_write_text, jsonable
from _machine import cpu_info

RESULTS = Path(__file__).resolve().parent / "results" / "noise_tracker_cost.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per row and round (default 20)")
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or args.batch < 2:
        parser.error("need --rounds >= 1, --steps >= 1, --batch >= 2")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y, _, _ = load_digits_split()
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    loss_fn = nn.functional.cross_entropy
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    trackers = {"two_batch": NoiseScaleTracker(model, loss_fn, every=1, method="two_batch"),
                "exact": NoiseScaleTracker(model, loss_fn, every=1, method="exact")}
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, x.shape[0], (args.batch,), generator=g) for _ in range(args.steps)]

    def loop(tracker=None):
        for idx in batches:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            if tracker is not None:
                tracker.update(x[idx], y[idx])
            optimizer.step()

    rows = {
        "step": lambda: loop(),
        "tracker two_batch (every step)": lambda: loop(trackers["two_batch"]),
        "tracker exact (every step)": lambda: loop(trackers["exact"]),
        "gradient_noise_scale exact (1348 examples)": lambda: gradient_noise_scale(model, loss_fn, x, y),
        "gradient_noise_scale two_batch (16 draws of 512)": lambda: gradient_noise_scale(
            model, loss_fn, x, y, method="two_batch"),
    }
    per_call_steps = {"step": args.steps, "tracker two_batch (every step)": args.steps,
                      "tracker exact (every step)": args.steps}
    for fn in rows.values():  # warm up
        fn()
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.rounds):
        for name, fn in rows.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / per_call_steps.get(name, 1))
    median = {k: statistics.median(v) for k, v in times.items()}
    base = median["step"]
    result = {
        "command": "python benchmarks/noise_tracker_cost.py" + " ".join([""] + (argv if argv is not None else sys.argv[1:])),
        "cpu": cpu_info(), "machine": platform.machine(), "processor": platform.processor(),
        "torch": torch.__version__, "threads": 1, "rounds": args.rounds, "steps": args.steps, "batch": args.batch,
        "model": "64-256-10 ReLU MLP, digits, SGD, cross-entropy",
        "seconds_per_step_or_call": median,
        "ratio_to_step": {k: v / base for k, v in median.items()},
        "tracker_extra_cost_per_step_every_10": {k: (median[k] - base) / base / 10 for k in median if "tracker" in k},
    }
    atomic_write_text(args.out, json.dumps(jsonable(result), indent=1) + "\n")
    for k, v in result["ratio_to_step"].items():
        print(f"{k:52s} {median[k] * 1e3:8.3f} ms  {v:7.2f}x a training step")
    print(f"cpu: {result['cpu']['widest']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
