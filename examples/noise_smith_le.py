"""Smith & Le (2018): at a fixed learning rate ε the test accuracy peaks at a batch size B_opt, and
B_opt grows in proportion to ε and to the training set's size N (their Figures 5-7), because the
best runs share one noise scale g = ε(N/B − 1) ≈ εN/B.

Here: scikit-learn's digits (1348 training, 449 test images), a 64-256-10 ReLU MLP (standard
parameterization, PyTorch's default initialisation), plain SGD (no momentum, constant learning
rate), batches drawn without replacement from reshuffled epochs. For each (ε, N) the batch size is
swept over a grid of ratio about √2 and the test accuracy (mean over the evaluations in the last
20% of training, then over seeds) is recorded. Two budgets, because they disagree:

- constant epochs: every run sees the training set 20 times (steps = 20 N / B);
- constant steps: every run takes 2000 steps (epochs = 2000 B / N).

B_opt is the grid point with the best mean accuracy, and also the vertex of a parabola fitted to
the mean accuracy against log2 B at the best point and its two neighbours (between grid points).

    python examples/noise_smith_le.py              # about 10 minutes on one core
    python examples/noise_smith_le.py --quick      # a smoke run (1 seed, coarse grid)

writes docs/methods/figures/noise_smith_le.{json,png}.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_common import MLP, cpu_flags, digits, example_args, save_figure, train_sgd, write_results  # noqa: E402

from l2o.diagnostics import smith_le_noise_scale  # noqa: E402

BATCHES = [2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256]
CONFIGS = [(0.25, 1348), (0.5, 1348), (1.0, 1348), (0.5, 674), (1.0, 674)]  # (epsilon, N)
PROTOCOLS = {"epochs": {"epochs": 20}, "steps": {"steps": 2000}}
WIDTH = 256


def peak(batches: list[int], accs: list[float]) -> dict:
    """The grid argmax and the parabola vertex in log2 B through it and its neighbours."""
    i = max(range(len(accs)), key=lambda k: accs[k])
    out = {"grid": batches[i], "at_edge": i in (0, len(accs) - 1), "fit": None}
    if 0 < i < len(accs) - 1:
        x = [math.log2(b) for b in batches[i - 1:i + 2]]
        y = accs[i - 1:i + 2]
        # vertex of the parabola through three points
        d = (x[0] - x[1]) * (x[0] - x[2]) * (x[1] - x[2])
        a = (x[2] * (y[1] - y[0]) + x[1] * (y[0] - y[2]) + x[0] * (y[2] - y[1])) / d
        b = (x[2] ** 2 * (y[0] - y[1]) + x[1] ** 2 * (y[2] - y[0]) + x[0] ** 2 * (y[1] - y[2])) / d
        if a < 0:
            out["fit"] = 2 ** min(max(-b / (2 * a), x[0]), x[2])
    return out


def main(argv=None) -> int:
    args = example_args(__doc__, "noise_smith_le", 3, "1 seed, every other batch size, 4 epochs / 300 steps", argv, plot)
    if args is None:
        return 0
    from tqdm import tqdm

    batches = BATCHES[::2] if args.quick else BATCHES
    seeds = 1 if args.quick else args.seeds
    protocols = {"epochs": {"epochs": 4}, "steps": {"steps": 300}} if args.quick else PROTOCOLS
    model = MLP(WIDTH)
    results = {"command": "python examples/noise_smith_le.py" + (" --quick" if args.quick else "")
               + (f" --seeds {args.seeds}" if args.seeds != 3 and not args.quick else ""),
               "width": WIDTH, "batches": batches, "seeds": seeds, "protocols": protocols, "cpu": cpu_flags(),
               "runs": {}}
    start = time.time()
    bar = tqdm(total=len(protocols) * len(CONFIGS) * len(batches) * seeds, disable=args.no_progress, desc="runs")
    for proto, budget in protocols.items():
        for eps, n in CONFIGS:
            data = digits(None if n == 1348 else n)
            rows = []
            for b in batches:
                runs = []
                for seed in range(seeds):
                    r = train_sgd(model, data, eps, b, seed=seed, **budget)
                    runs.append({k: r[k] for k in ("diverged", "steps", "late_test_accuracy", "train_loss")})
                    bar.update(1)
                # a diverged run counts as chance accuracy (0.1) in the mean
                accs = [r["late_test_accuracy"] if not r["diverged"] else 0.1 for r in runs]
                rows.append({"batch_size": b, "g": smith_le_noise_scale(eps, n, b), "accuracy": statistics.mean(accs),
                             "accuracy_per_seed": accs, "diverged": sum(r["diverged"] for r in runs),
                             "train_loss": [r["train_loss"] for r in runs], "steps": runs[0]["steps"]})
            best = peak(batches, [r["accuracy"] for r in rows])
            per_seed = [peak(batches, [r["accuracy_per_seed"][s] for r in rows])["grid"] for s in range(seeds)]
            results["runs"][f"{proto} eps={eps:g} N={n}"] = {
                "protocol": proto, "epsilon": eps, "n_train": n, "rows": rows, "b_opt": best,
                "b_opt_per_seed": per_seed, "g_opt": smith_le_noise_scale(eps, n, best["grid"])}
    bar.close()
    results["seconds"] = time.time() - start

    lines = [f"{'budget':7s} {'eps':>5s} {'N':>5s}  {'B_opt (grid)':>12s} {'B_opt (fit)':>11s} {'per seed':>14s} "
             f"{'best acc':>8s} {'g_opt':>7s}"]
    for key, run in results["runs"].items():
        fit = run["b_opt"]["fit"]
        acc = max(r["accuracy"] for r in run["rows"])
        edge = " (grid edge)" if run["b_opt"]["at_edge"] else ""
        lines.append(f"{run['protocol']:7s} {run['epsilon']:5g} {run['n_train']:5d}  {run['b_opt']['grid']:12d} "
                     f"{(f'{fit:.1f}' if fit else '-'):>11s} {str(run['b_opt_per_seed']):>14s} {acc:8.4f} "
                     f"{run['g_opt']:7.1f}{edge}")
    write_results(results, lines, args.out, plot)
    return 0


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protos = list(results["protocols"])
    fig, axes = plt.subplots(1, len(protos), figsize=(6 * len(protos), 4.4), squeeze=False)
    styles = {1348: "-", 674: "--"}
    colors = {0.25: "C0", 0.5: "C1", 1.0: "C2"}
    for ax, proto in zip(axes[0], protos):
        for run in results["runs"].values():
            if run["protocol"] != proto:
                continue
            bs = [r["batch_size"] for r in run["rows"]]
            acc = [r["accuracy"] for r in run["rows"]]
            label = f"ε = {run['epsilon']:g}, N = {run['n_train']}"
            ax.plot(bs, acc, styles[run["n_train"]], marker="o", ms=3, color=colors[run["epsilon"]], label=label)
            best = run["b_opt"]["grid"]
            ax.plot([best], [max(acc)], "*", ms=14, color=colors[run["epsilon"]], mec="k")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0.9, 1.0)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("test accuracy (late-time mean over seeds)")
        budget = results["protocols"][proto]
        ax.set_title(f"constant {proto}: " + ", ".join(f"{v} {k}" for k, v in budget.items()))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Smith & Le on digits: 64-{results['width']}-10 ReLU MLP, plain SGD; ★ best batch size "
                 "(accuracy below 0.9 is cut off)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
