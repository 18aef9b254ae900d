"""Training and test curves of mlp-general and tuned Adam on the digits MLP with ReLU.

Adam's learning rate is the one ``l2o meta eval`` chose for the 1,000-step budget (pass it with
``--adam-lr``; 0.1 in docs/methods/mlp_lopt.md). Mean over seeds 0..N-1 of the minibatch training
loss (smoothed over 20 steps) and of the test loss every 25 steps; writes a PNG and its data.

Usage::

    python benchmarks/mlp_general_curves.py --adam-lr 0.1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from l2o.io import atomic_write_text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adam-lr", type=float, required=True)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=10)
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--png", default=str(root / "docs" / "methods" / "figures" / "mlp_general_digits_relu.png"))
    parser.add_argument("--out", default=str(root / "benchmarks" / "results" / "mlp_general_curves.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import l2o
    from l2o.tasks import get
    from l2o.train import train

    task = get("digits_mlp", activation="relu")
    factories = {"mlp-general": lambda ps: l2o.LearnedOptimizer.pretrained("mlp-general", ps),
                 f"Adam lr={args.adam_lr:g} (tuned)": lambda ps: torch.optim.Adam(ps, lr=args.adam_lr)}
    data = {}
    for name, factory in factories.items():
        runs = [train(task, factory, steps=args.steps, seed=s, eval_every=25) for s in range(args.seeds)]
        losses = np.array([r.losses for r in runs])
        kernel = np.ones(20) / 20
        smooth = np.array([np.convolve(row, kernel, mode="valid") for row in losses]).mean(0)
        test = np.array([[e["loss"] for e in r.eval_curve] for r in runs]).mean(0)
        data[name] = {"train_smoothed": smooth.tolist(), "eval_steps": runs[0].eval_steps, "test_loss": test.tolist()}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, d in data.items():
        axes[0].plot(np.arange(len(d["train_smoothed"])) + 20, d["train_smoothed"], label=name)
        axes[1].plot(d["eval_steps"], d["test_loss"], label=name)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].set_title("training loss (minibatch, 20-step mean)")
    axes[1].set_title("test loss")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"digits MLP (20 ReLU units), mean of {args.seeds} seeds")
    fig.tight_layout()
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=110)
    atomic_write_text(args.out, json.dumps({"adam_lr": args.adam_lr, "curves": data}) + "\n")
    print(f"wrote {args.png} and {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
