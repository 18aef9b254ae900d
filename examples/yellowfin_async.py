"""YellowFin under gradient staleness: open loop against closed-loop momentum control.

Asynchronous training applies gradients computed at parameters that are ``tau`` steps old,
which adds momentum of its own (Mitliagkas et al., 2016): the *total* momentum of the
trajectory exceeds the momentum the optimizer applies. Closed-loop YellowFin (Zhang &
Mitliagkas) measures the total momentum from the trajectory and lowers the applied
momentum until the total matches the tuned target.

This script simulates the staleness exactly: a noisy quadratic (50 coordinates, curvatures
log-spaced in [10^-1.5, 1], gradient noise sigma 0.1, start at 1) where the gradient applied
at step t is evaluated at x_{t-tau}. It runs synchronous YellowFin (tau = 0), open-loop
YellowFin with stale gradients, and closed-loop YellowFin with the same stale gradients, all
with the paper's listing (YellowFin.ALGORITHM_LISTING, as its closed-loop algorithm; beta 0.999,
window 20, gain 0.01), measures the total momentum of
every run with the same estimator, prints a summary and plots the curves.

    python examples/yellowfin_async.py                 # the documented run (tau = 8)
    python examples/yellowfin_async.py --tau 4 --steps 4000
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import time
from pathlib import Path

import torch

from l2o.optim.yellowfin import YellowFin, measure_total_momentum


def simulate(tau: int, closed_loop: bool, steps: int, dim: int, noise: float, seed: int) -> dict[str, list[float]]:
    """Run YellowFin on the noisy quadratic with gradients ``tau`` steps old."""
    generator = torch.Generator().manual_seed(seed)
    curvature = torch.logspace(-1.5, 0.0, dim, dtype=torch.float64)
    x = torch.ones(dim, dtype=torch.float64, requires_grad=True)
    optimizer = YellowFin([x], closed_loop=closed_loop, staleness=tau, **YellowFin.ALGORITHM_LISTING)
    stale = collections.deque([x.detach().clone()], maxlen=tau + 1)  # x_{t-tau} .. x_t
    trajectory = [x.detach().clone()]
    step_sizes: list[float] = []
    record = {key: [] for key in ("loss", "target", "applied", "total")}
    for t in range(steps):
        grad = curvature * stale[0] + noise * torch.randn(dim, generator=generator, dtype=torch.float64)
        x.grad = grad
        optimizer.step()
        tuner = optimizer.tuner_state()
        step_sizes.append(tuner["lr"] * optimizer.param_groups[0]["lr"])  # the step size used at step t
        trajectory.append(x.detach().clone())
        stale.append(x.detach().clone())
        s = t - tau  # this gradient was evaluated at x_s
        total = None
        if s >= 1:
            total = measure_total_momentum(trajectory[s + 1] - trajectory[s], trajectory[s] - trajectory[s - 1],
                                           grad, step_sizes[s])
        record["total"].append(math.nan if total is None else total)
        record["target"].append(tuner["momentum"])
        record["applied"].append(tuner["applied_momentum"])
        record["loss"].append(0.5 * float((curvature * x.detach() ** 2).sum()))
    return record


def tail_mean(values: list[float], n: int) -> float:
    tail = [v for v in values[-n:] if math.isfinite(v)]
    return sum(tail) / len(tail) if tail else math.nan


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tau", type=int, default=8, help="gradient staleness in steps")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--window", type=int, default=500, help="final values average the last WINDOW steps")
    parser.add_argument("--skip", type=int, default=200, help="steps left out of the tracking error (warm-up)")
    parser.add_argument("--out", default="docs/methods/figures/yellowfin_async")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    runs = {"synchronous (tau=0)": (0, False), f"open loop (tau={args.tau})": (args.tau, False),
            f"closed loop (tau={args.tau})": (args.tau, True)}
    start = time.perf_counter()
    results = {}
    for name, (tau, closed) in runs.items():
        results[name] = [simulate(tau, closed, args.steps, args.dim, args.noise, seed) for seed in args.seeds]
    seconds = time.perf_counter() - start

    summary = {}
    print(f"mean over seeds {args.seeds}; tracking error = mean over steps >= {args.skip} of |measured total "
          f"momentum (100-step mean) - target|; final = mean of the last {args.window} steps")
    for name, records in results.items():
        rows = [{"tracking_error": sum(abs(m - t) for m, t in zip(smooth(r["total"])[args.skip:], r["target"][args.skip:]))
                 / (len(r["target"]) - args.skip),
                 "peak_loss": max(smooth(r["loss"])),
                 "final_loss": tail_mean(r["loss"], args.window),
                 "final_target": tail_mean(r["target"], args.window),
                 "final_applied": tail_mean(r["applied"], args.window),
                 "final_total": tail_mean(r["total"], args.window)} for r in records]
        row = {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
        row["peak_loss_per_seed"] = [r["peak_loss"] for r in rows]
        summary[name] = row
        print(f"  {name:<22} tracking error {row['tracking_error']:.3f}   peak loss {row['peak_loss']:.3g} "
              f"(per seed {', '.join(f'{v:.2g}' for v in row['peak_loss_per_seed'])})   final loss {row['final_loss']:.3g}"
              f"   final mu: target {row['final_target']:.3f} applied {row['final_applied']:.3f} "
              f"total {row['final_total']:.3f}")
    print(f"{seconds:.1f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(args), "summary": summary, "seconds": seconds},
                                                    indent=1))
    plot(results, args, out.with_suffix(".png"))


def smooth(values: list[float], width: int = 100) -> list[float]:
    out, window = [], collections.deque(maxlen=width)
    for v in values:
        if math.isfinite(v):
            window.append(v)
        out.append(sum(window) / len(window) if window else math.nan)
    return out


def plot(results, args, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    names = list(results)
    for ax, name in zip(axes[:2], names[1:]):
        record = results[name][0]
        ax.plot(record["target"], label="target momentum (tuned)", color="k")
        ax.plot(record["applied"], label="applied (algorithmic) momentum", color="C0")
        ax.plot(smooth(record["total"]), label="measured total momentum (100-step mean)", color="C3")
        ax.set(title=f"{name}, seed {args.seeds[0]}", xlabel="step", ylabel="momentum", ylim=(-0.2, 1.05))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    for i, name in enumerate(names):
        for j, record in enumerate(results[name]):
            axes[2].semilogy(smooth(record["loss"]), color=f"C{i}", alpha=0.8, label=name if j == 0 else None)
    axes[2].set(title=f"noisy quadratic, {len(args.seeds)} seeds", xlabel="step", ylabel="loss (100-step mean)")
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
