"""HAdam's moment order on a small digits MLP: even orders against Adam, and why odd orders need |g|.

Jiang et al. (2019) report that some higher even orders train at least as well as Adam (order 2)
and that odd orders, with the signed power g^p, diverge. This script trains the same 2-layer
ReLU MLP (64 hidden units, scikit-learn's 8x8 digits, minibatches of 128, 300 steps) with HAdam
of orders 2, 3, 4, 6, 8, each at its best learning rate from a grid (picked by mean final
training loss over 3 seeds), and also with the paper's signed odd power (order 3, ``g^3``), which
``l2o.optim.HAdam`` does not implement and is written here only for the comparison.

    python examples/hadam_orders.py          # writes docs/methods/figures/hadam_orders.{json,png}
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from l2o.optim import HAdam
from l2o.tasks.digits import DigitsMLP
from l2o.train import train

ORDERS = [2, 3, 4, 6, 8]
LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
SEEDS = [0, 1, 2]


class SignedOddHAdam(torch.optim.Optimizer):
    """The paper's update with the signed power g^p (for the odd-order comparison only)."""

    def __init__(self, params, lr, order, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, order=order, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                t, g = state["t"], p.grad
                state["m"].lerp_(g, 1 - beta1)
                state["v"].mul_(beta2).add_(g ** group["order"], alpha=1 - beta2)
                v_hat = state["v"] / (1 - beta2 ** t)
                p.sub_(group["lr"] * state["m"] / (1 - beta1 ** t) / (v_hat ** (1 / group["order"]) + group["eps"]))
        return loss


def run(make, seeds):
    task = DigitsMLP(hidden=64, layers=2, activation="relu", steps=300)
    rows = []
    for seed in seeds:
        result = train(task, make, seed=seed)
        rows.append(dict(diverged=result.diverged, train_loss=result.final_train.get("loss", float("nan")),
                         test_accuracy=result.final_test.get("accuracy", float("nan"))))
    return rows


def summary(rows):
    finite = [r for r in rows if not r["diverged"]]
    if len(finite) < len(rows):
        return dict(diverged=len(rows) - len(finite), train_loss=float("inf"), test_accuracy=float("nan"))
    return dict(diverged=0, train_loss=statistics.mean(r["train_loss"] for r in rows),
                train_loss_sd=statistics.stdev(r["train_loss"] for r in rows),
                test_accuracy=statistics.mean(r["test_accuracy"] for r in rows))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/methods/figures/hadam_orders"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from tqdm import tqdm

    grid = {}
    configs = [(f"order {p}", lambda lr, p=p: (lambda ps: HAdam(ps, lr=lr, order=p))) for p in ORDERS]
    configs.append(("order 3 signed g^3 (paper)", lambda lr: (lambda ps: SignedOddHAdam(ps, lr=lr, order=3))))
    for name, factory in tqdm(configs, desc="orders"):
        grid[name] = {lr: summary(run(factory(lr), SEEDS)) for lr in LRS}
    best = {name: min(by_lr.items(), key=lambda kv: kv[1]["train_loss"]) for name, by_lr in grid.items()}

    print(f"digits MLP 64-64 relu, 300 steps, batch 128, best lr of {LRS}, mean of seeds {SEEDS}")
    print(f"{'method':28s} {'best lr':>8s} {'train loss':>16s} {'test acc':>9s} {'diverged runs (all lrs)':>24s}")
    for name, (lr, s) in best.items():
        diverged = sum(v["diverged"] for v in grid[name].values())
        loss = f"{s['train_loss']:.4f} ± {s.get('train_loss_sd', float('nan')):.4f}" if s["diverged"] == 0 else "diverged"
        print(f"{name:28s} {lr:8.0e} {loss:>16s} {s['test_accuracy']:9.3f} {diverged:>20d}/{len(LRS) * len(SEEDS)}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(
        dict(command="python examples/hadam_orders.py", lrs=LRS, seeds=SEEDS,
             grid={n: {str(lr): s for lr, s in v.items()} for n, v in grid.items()},
             best={n: dict(lr=lr, **s) for n, (lr, s) in best.items()}), indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, by_lr in grid.items():
        losses = [by_lr[lr]["train_loss"] if by_lr[lr]["diverged"] == 0 else float("nan") for lr in LRS]
        ax.plot(LRS, losses, marker="o", label=name, linestyle="--" if "signed" in name else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final training loss (mean of 3 seeds)")
    ax.set_title("HAdam on digits MLP: order of the moment (missing points: diverged)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{args.out}.png", dpi=120)
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
