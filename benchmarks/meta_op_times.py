"""Where batched meta-training's time goes: each operation's own time, 8 tasks batched against 8 x one task.

The measurement behind docs/methods/mlp_lopt.md's reading of ``mlp_lopt.py``'s throughput ratio.
It runs the same truncated-BPTT meta-training as ``mlp_lopt.py`` (8 digits-MLP instances, unroll
20, the MLP rule, one thread) once batched and once one task at a time, and times every kernel
the two dispatch (a ``TorchDispatchMode`` wrapping each call: the kernel's own time, without the
Python and autograd bookkeeping between calls). Per operation and per-task input shape it
reports the batched time, 8 x the one-task time, and their ratio: about 8 where the batch pays a
cost once that the loop pays per task (per-call overhead), about 1 or below where the work grows
with the tasks (arithmetic at the same speed either way, or slower batched because larger arrays
fall out of cache). The totals' ratio is close to the throughput ratio ``mlp_lopt.py`` measures.

Usage::

    python benchmarks/meta_op_times.py      # writes benchmarks/results/meta_op_times.json
    python benchmarks/meta_op_times.py --truncations 1 --top 10 --out /tmp/ops.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from l2o.io import atomic_write_text

BATCH, UNROLL = 8, 20


def op_times(batched: bool, truncations: int) -> dict[str, list[float]]:
    """Seconds and calls per (operation, per-task input shapes) over ``truncations`` truncations
    of meta-training, after one truncation of warm-up."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from l2o.learned.mlp import MLPRule
    from l2o.meta.episode import MeanLogRatio, start_episode

    sys.path.insert(0, str(Path(__file__).parent))
    from mlp_lopt import digits_tasks

    stats: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])

    class Timed(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            start = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            elapsed = time.perf_counter() - start
            shapes = [tuple(a.shape[1:]) for a in args if isinstance(a, torch.Tensor)][:2]  # without the task axis
            entry = stats[f"{str(func).removeprefix('aten.')} {shapes}"]
            entry[0] += elapsed
            entry[1] += 1
            return out

    rule, tasks = MLPRule(), digits_tasks(BATCH)
    if batched:
        episodes = [start_episode(rule, tasks, list(range(BATCH)), 10**6)]
    else:
        episodes = [start_episode(rule, [task], [i], 10**6) for i, task in enumerate(tasks)]
    for episode in episodes:  # warm-up
        episode.advance(rule, UNROLL, MeanLogRatio()).meta_loss.backward()
    with Timed():
        for _ in range(truncations):
            for episode in episodes:
                episode.advance(rule, UNROLL, MeanLogRatio()).meta_loss.backward()
    return dict(stats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--truncations", type=int, default=3, help="timed truncations of each (default 3)")
    parser.add_argument("--top", type=int, default=30, help="operations listed, by batched time (default 30)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "meta_op_times.json"))
    args = parser.parse_args(argv)
    if args.truncations < 1 or args.top < 1:
        parser.error("--truncations and --top must be >= 1")
    torch.set_num_threads(1)
    batched, looped = op_times(True, args.truncations), op_times(False, args.truncations)
    total_batched = sum(v[0] for v in batched.values())
    total_looped = sum(v[0] for v in looped.values())
    rows = []
    for key in sorted(batched, key=lambda k: -batched[k][0])[:args.top]:
        seconds, calls = batched[key]
        loop_seconds = looped.get(key, [0.0, 0])[0]
        rows.append({"op": key, "calls_batched": int(calls), "batched_ms": round(seconds * 1e3, 3),
                     "looped_ms": round(loop_seconds * 1e3, 3),
                     "looped_over_batched": round(loop_seconds / seconds, 2) if seconds > 0 else None})
    result = {"command": ("python benchmarks/meta_op_times.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip(),
              "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
              "threads": 1, "batch": BATCH, "unroll": UNROLL, "truncations": args.truncations,
              "total_batched_ms": round(total_batched * 1e3, 1), "total_looped_ms": round(total_looped * 1e3, 1),
              "total_looped_over_batched": round(total_looped / total_batched, 2), "ops": rows}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "ops"}, indent=2))
    for row in rows:
        print(f"{row['batched_ms']:9.2f} ms batched {row['looped_ms']:9.2f} ms looped  x{row['looped_over_batched']}  "
              f"{row['op']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
