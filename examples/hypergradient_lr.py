"""Hypergradient descent: the learning rate rises from 0 and settles; less sensitivity to alpha_0.

Baydin et al. (2018) train logistic regression and an MLP on MNIST with SGD-HD and Adam-HD and
report that (i) started at a poor initial rate, even alpha_0 = 0, the learned rate quickly rises
and then settles, and (ii) the final loss depends much less on alpha_0 than for SGD or Adam. Here:
logistic regression on scikit-learn's 8x8 digits (the 'digits_logreg' task, minibatches of 128,
1000 steps), the paper's hypergradient step sizes (beta = 1e-3 for SGD-HD, 1e-7 for Adam-HD) and
also a larger one for Adam-HD, alpha_0 on a grid, 3 seeds.

    python examples/hypergradient_lr.py      # writes docs/methods/figures/hypergradient_lr.{json,png}
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from l2o.optim import SGDHD, AdamHD
from l2o.tasks.digits_extra import DigitsLogReg
from l2o.train import train

STEPS = 1000
SEEDS = [0, 1, 2]
METHODS = {
    "SGD": (lambda lr: (lambda ps: torch.optim.SGD(ps, lr=lr)), [0.0, 1e-3, 1e-2, 1e-1, 1.0]),
    "SGD-HD beta=1e-3": (lambda lr: (lambda ps: SGDHD(ps, lr=lr, hypergrad_lr=1e-3)), [0.0, 1e-3, 1e-2, 1e-1, 1.0]),
    "Adam": (lambda lr: (lambda ps: torch.optim.Adam(ps, lr=lr)), [0.0, 1e-4, 1e-3, 1e-2, 1e-1]),
    "Adam-HD beta=1e-7": (lambda lr: (lambda ps: AdamHD(ps, lr=lr, hypergrad_lr=1e-7)), [0.0, 1e-4, 1e-3, 1e-2, 1e-1]),
    "Adam-HD beta=1e-4": (lambda lr: (lambda ps: AdamHD(ps, lr=lr, hypergrad_lr=1e-4)), [0.0, 1e-4, 1e-3, 1e-2, 1e-1]),
}


class LrRecorder:
    """Wraps an optimizer factory to record group 0's learning rate after each step."""

    def __init__(self, factory):
        self.factory, self.optimizer, self.lrs = factory, None, []

    def __call__(self, params):
        self.optimizer = self.factory(params)
        return self.optimizer

    def hook(self, step, params):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/methods/figures/hypergradient_lr"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from tqdm import tqdm

    task = DigitsLogReg(steps=STEPS)
    results, trajectories = {}, {}
    for name, (make, alphas) in tqdm(METHODS.items(), desc="methods"):
        results[name] = {}
        for alpha0 in alphas:
            finals, lr_runs = [], []
            for seed in SEEDS:
                recorder = LrRecorder(make(alpha0))
                run = train(task, recorder, seed=seed, params_hook=recorder.hook)
                finals.append(run.final_train["loss"] if not run.diverged else float("inf"))
                lr_runs.append(recorder.lrs)
            results[name][alpha0] = dict(train_loss=statistics.mean(finals), per_seed=finals,
                                         lr_at=[lr_runs[0][i] for i in (0, 9, 49, 99, 299, STEPS - 1)])
            if alpha0 == 0.0:
                trajectories[name] = lr_runs[0]

    print(f"digits logistic regression, {STEPS} steps, batch 128, final training loss (mean of seeds {SEEDS})")
    for name, by_alpha in results.items():
        cells = "  ".join(f"a0={a:g}: {r['train_loss']:.4f}" for a, r in by_alpha.items())
        finite = [r["train_loss"] for r in by_alpha.values()]
        print(f"{name:18s} {cells}   spread max/min = {max(finite) / min(finite):.2f}")
    print("learning rate started at 0 (seed 0), after steps 1, 10, 50, 100, 300, 1000:")
    for name in trajectories:
        print(f"{name:18s} " + "  ".join(f"{v:.3g}" for v in results[name][0.0]["lr_at"]))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(
        dict(command="python examples/hypergradient_lr.py", steps=STEPS, seeds=SEEDS,
             results={n: {str(a): r for a, r in v.items()} for n, v in results.items()}), indent=2) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, lrs in trajectories.items():
        if "HD" in name:
            left.plot(range(1, len(lrs) + 1), lrs, label=name)
    left.set_xscale("log")
    left.set_yscale("symlog", linthresh=1e-4)
    left.set_xlabel("step")
    left.set_ylabel("learned learning rate")
    left.set_title("Started at alpha_0 = 0 (seed 0)")
    left.legend(fontsize=8)
    for name, by_alpha in results.items():
        alphas = [a for a in by_alpha if a > 0]
        right.plot(alphas, [by_alpha[a]["train_loss"] for a in alphas], marker="o", label=name,
                   linestyle="-" if "HD" in name else "--")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("initial learning rate alpha_0")
    right.set_ylabel(f"final training loss after {STEPS} steps")
    right.set_title("Sensitivity to alpha_0 (mean of 3 seeds)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=120)
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
