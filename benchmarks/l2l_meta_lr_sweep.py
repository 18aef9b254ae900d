"""How the L2L LSTM's meta-learning rate changes what 1000 outer steps of BPTT reach on digits.

This is the experiment behind the one deviation of ``l2o reproduce l2l`` from the paper's
meta-training settings (Adam lr 1e-2 instead of 1e-3; see docs/methods/l2l.md). For each
meta-learning rate it meta-trains the paper's LSTM (2x20, p = 10, output x 0.1, unroll 20,
horizon 100) for ``--outer-steps`` truncations on digits_mlp (1x20 sigmoid), keeps the best
of the validations every 100 outer steps, then trains 5 evaluation seeds for 100 and 200 steps
with it through ``l2o.train.train`` and reports the final full-training-set loss.

Usage::

    python benchmarks/l2l_meta_lr_sweep.py                      # 1e-3, 3e-3, 1e-2; 1000 outer steps
    python benchmarks/l2l_meta_lr_sweep.py --lrs 1e-2 --outer-steps 200 --out /tmp/sweep.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from l2o.io import atomic_write_text
from l2o.learned import LearnedOptimizer, LSTMRule
from l2o.meta.trainer import MetaConfig, MetaTrainer
from l2o.tasks.digits import DigitsMLP, DigitsMLPFamily
from l2o.train import train


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    parser.add_argument("--outer-steps", type=int, default=1000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "l2l_meta_lr_sweep.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    task = DigitsMLP()
    for lr in (float(v) for v in args.lrs.split(",")):
        torch.manual_seed(0)
        rule = LSTMRule(preprocess_p=10.0, output_scale=0.1)
        config = MetaConfig(estimator="bptt", meta_loss="sum", batch_size=None, groups=1, clip=None, val_steps=None,
                          horizon=100, unroll=20, max_rollbacks=10, outer_steps=args.outer_steps, val_every=100, checkpoint_every=100, val_episodes=4,
                            meta_lr=lr)
        start = time.perf_counter()
        trainer = MetaTrainer(rule, DigitsMLPFamily(), config, log=None)
        summary = trainer.train(progress_bar=False)
        rule.load_state_dict(trainer.best_state())
        row = {"meta_lr": lr, "outer_steps": args.outer_steps, "seconds": time.perf_counter() - start,
               "best_val": summary.best_val, "best_step": summary.best_step, "val_history": summary.val_history}
        for steps in (100, 200):
            finals = [train(task, lambda ps: LearnedOptimizer(ps, rule=rule), steps=steps, seed=10_000 + i)
                      .final_train["loss"] for i in range(5)]
            row[f"final_loss_{steps}"] = sum(finals) / len(finals)
            row[f"finals_{steps}"] = finals
        rows.append(row)
        print(f"meta lr {lr:g}: best validation {row['best_val']:.4f} (step {row['best_step']}), final loss "
              f"{row['final_loss_100']:.4f} after 100 steps, {row['final_loss_200']:.4f} after 200", flush=True)
    atomic_write_text(args.out, json.dumps({"benchmark": "l2l_meta_lr_sweep", "results": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
