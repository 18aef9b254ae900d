"""Cross-entropy of stacked tasks: ``F.cross_entropy`` against ``logsumexp - target logit``.

``MLPTask.per_task_loss`` (the optimizee loss of batched meta-training) writes cross-entropy as
``logsumexp(logits) - logits[target]``, the same number as ``F.cross_entropy``, because
``log_softmax`` over a last dimension of 10 classes is slow on the CPU. This measures, in one run
and single-threaded:

1. forward and backward of the two formulations on the logits of 1 and 8 stacked digits tasks
   (128 examples each, 10 classes), median over interleaved rounds;
2. meta-training throughput (``benchmarks/mlp_lopt.py``'s measurement: 8 digits-MLP tasks
   batched against one at a time) with ``MLPTask.per_task_loss`` swapped between the two,
   interleaved.

Usage::

    python benchmarks/loss_formulation.py          # writes benchmarks/results/loss_formulation.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))

from mlp_lopt import meta_throughput  # noqa: E402

from l2o.io import atomic_write_text  # noqa: E402
from l2o.tasks import mlp_problems as family  # noqa: E402


def cross_entropy_loss(self, params, batch):
    """``MLPTask.per_task_loss`` with ``F.cross_entropy``, as it was written before."""
    x, y = batch
    out = self.forward(params, x)
    if self.classification:
        per_example = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none")
        return per_example.reshape(y.shape).mean(dim=-1)
    return (out.reshape(y.shape) - y).square().reshape(y.shape[0], -1).mean(dim=-1)


def loss_timings(rounds: int, repeats: int = 200) -> dict:
    results = {}
    for tasks in (1, 8):
        logits = torch.randn(tasks, 128, 10, generator=torch.Generator().manual_seed(tasks), requires_grad=True)
        targets = torch.randint(0, 10, (tasks, 128), generator=torch.Generator().manual_seed(0))

        def with_cross_entropy():
            loss = F.cross_entropy(logits.reshape(-1, 10), targets.reshape(-1), reduction="none")
            loss.reshape(tasks, 128).mean(-1).sum().backward()

        def with_logsumexp():
            target_logit = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            (torch.logsumexp(logits, dim=-1) - target_logit).mean(-1).sum().backward()

        times = {"cross_entropy": [], "logsumexp": []}
        for _ in range(rounds):
            for name, fn in (("cross_entropy", with_cross_entropy), ("logsumexp", with_logsumexp)):
                fn()
                start = time.perf_counter()
                for _ in range(repeats):
                    fn()
                times[name].append((time.perf_counter() - start) / repeats * 1e6)
        results[f"{tasks}_tasks"] = {name: round(statistics.median(t), 1) for name, t in times.items()}
        results[f"{tasks}_tasks"]["unit"] = "microseconds, forward + backward"
    return results


def throughput_ab(rounds: int) -> dict:
    current = family.MLPTask.per_task_loss
    variants = {"cross_entropy": cross_entropy_loss, "logsumexp (current)": current}
    runs = {name: [] for name in variants}
    try:
        for _ in range(rounds):
            for name, loss in variants.items():
                family.MLPTask.per_task_loss = loss
                r = meta_throughput(8, 20, 3, 2)
                runs[name].append([r["batched_inner_steps_per_s"], r["looped_inner_steps_per_s"], r["speedup"]])
    finally:
        family.MLPTask.per_task_loss = current
    return {name: {"batched_inner_steps_per_s": [r[0] for r in rs], "looped_inner_steps_per_s": [r[1] for r in rs],
                   "speedup": [r[2] for r in rs],
                   "batched_mean": round(statistics.mean(r[0] for r in rs), 1),
                   "looped_mean": round(statistics.mean(r[1] for r in rs), 1)}
            for name, rs in runs.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "loss_formulation.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {"command": "python benchmarks/loss_formulation.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "torch": torch.__version__, "threads": 1,
              "loss_forward_backward": loss_timings(max(args.rounds, 5)),
              "meta_training_throughput": throughput_ab(args.rounds)}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
