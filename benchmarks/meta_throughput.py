"""Meta-training throughput of the L2L LSTM (truncated BPTT), in optimizee steps per second.

Runs the real outer loop (:class:`l2o.meta.trainer.MetaTrainer` configured as the paper's truncated BPTT, unroll 20, horizon 100, no
validation, no checkpoints) on ``digits_mlp`` (1,510 optimizee parameters: every coordinate
goes through the LSTM in one batched call per step) and on the 10-dim quadratic, with second
derivatives off (the default) and on. The baseline, measured in the same run, is plain
training of the same task with ``torch.optim.Adam`` through ``l2o.train.train``: the ratio says
how much one meta-training inner step (LSTM forward, optimizee forward/backward, and its share
of the meta-backward and meta-update) costs relative to an ordinary training step.

Usage::

    python benchmarks/meta_throughput.py            # writes benchmarks/results/meta_throughput.json
    python benchmarks/meta_throughput.py --outer-steps 10 --out /tmp/quick.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from l2o.io import atomic_write_text
from l2o.learned import LSTMRule
from l2o.meta.trainer import MetaConfig, MetaTrainer
from l2o.tasks.digits import DigitsMLP, DigitsMLPFamily
from l2o.tasks.quadratic import QuadraticFamily, QuadraticTask
from l2o.train import train


def meta_steps_per_second(family, outer_steps, second_order):
    torch.manual_seed(0)
    config = MetaConfig(estimator="bptt", meta_loss="sum", batch_size=None, groups=1, clip=None, val_steps=None,
                        horizon=100, unroll=20, max_rollbacks=10, outer_steps=outer_steps, val_every=0,
                        second_order=second_order, meta_lr=1e-3)
    summary = MetaTrainer(LSTMRule(), family, config, log=None).train(progress_bar=False)
    return summary.inner_steps_per_second


def adam_steps_per_second(task, steps):
    result = train(task, lambda ps: torch.optim.Adam(ps, lr=1e-3), steps=steps, seed=0)
    return steps / result.seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outer-steps", type=int, default=50, help="meta-updates per measurement (x20 inner steps)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "meta_throughput.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cases = [("digits_mlp (1,510 params)", DigitsMLPFamily(), DigitsMLP()),
             ("quadratic (10 params)", QuadraticFamily(), QuadraticTask())]
    results = []
    for name, family, task in cases:
        adam = adam_steps_per_second(task, args.outer_steps * 20)
        for second_order in (False, True):
            meta = meta_steps_per_second(family, args.outer_steps, second_order)
            row = {"task": name, "second_order": second_order, "meta_inner_steps_per_s": meta,
                   "adam_train_steps_per_s": adam, "adam_step_time_ratio": adam / meta}
            results.append(row)
            print(f"{name:28s} second_order={second_order!s:5s} meta {meta:8.1f} inner steps/s   "
                  f"Adam training {adam:8.1f} steps/s   one meta step = {adam / meta:5.1f} Adam steps")
    out = {"benchmark": "meta_throughput", "torch": torch.__version__, "threads": 1,
           "machine": platform.processor() or platform.machine(), "outer_steps": args.outer_steps,
           "unroll": 20, "results": results}
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
