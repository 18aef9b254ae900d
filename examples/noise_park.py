"""Park, Sohl-Dickstein, Le & Smith (2019): without batch normalization, the normalized noise scale
that gives the best test accuracy grows in proportion to the network's width.

Here: scikit-learn's digits (1348 training, 449 test images), one-hidden-layer ReLU MLPs of several
widths in the NTK parameterization (unit-Gaussian weights scaled by σ_w/√fan_in in the forward
pass, σ_w = √2, biases scaled by 0.1), plain SGD on reshuffled epochs, constant epochs (20; steps =
20 N/B). For each width, the learning rate ε (of the NTK parameterization) and the batch size B are
swept on a grid; the normalized noise scale is ĝ = ε(N/B − 1) (:func:`l2o.diagnostics.normalized_noise_scale`).
The best (ε, B) by test accuracy (mean over the evaluations in the last 20% of training, then over
seeds) gives ĝ_opt for that width; ĝ_opt is also given per learning rate (best B at that ε).

    python examples/noise_park.py           # about 5-10 minutes on one core
    python examples/noise_park.py --quick   # a smoke run

writes docs/methods/figures/noise_park.{json,png}.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_common import MLP, cpu_flags, digits, example_args, save_figure, train_sgd, write_results  # noqa: E402

from l2o.diagnostics import normalized_noise_scale  # noqa: E402

WIDTHS = [16, 64, 256, 1024]
LRS = [4.0, 16.0, 64.0]
BATCHES = [4, 8, 16, 32, 64, 128, 256]
EPOCHS = 20


def main(argv=None) -> int:
    args = example_args(__doc__, "noise_park", 2, "2 widths, 1 seed, 3 epochs", argv, plot)
    if args is None:
        return 0
    from tqdm import tqdm

    widths = [16, 256] if args.quick else WIDTHS
    seeds = 1 if args.quick else args.seeds
    epochs = 3 if args.quick else EPOCHS
    data = digits()
    n = data[0].shape[0]
    start = time.time()
    results = {"command": "python examples/noise_park.py" + (" --quick" if args.quick else "")
               + (f" --seeds {args.seeds}" if args.seeds != 2 and not args.quick else ""),
               "widths": widths, "lrs": LRS, "batches": BATCHES, "epochs": epochs, "seeds": seeds,
               "parameterization": "ntk, sigma_w = sqrt(2), sigma_b = 0.1", "cpu": cpu_flags(), "by_width": {}}
    bar = tqdm(total=len(widths) * len(LRS) * len(BATCHES) * seeds, disable=args.no_progress, desc="runs")
    for width in widths:
        model = MLP(width, parameterization="ntk")
        cells = []
        for lr in LRS:
            for b in BATCHES:
                accs, diverged = [], 0
                for seed in range(seeds):
                    r = train_sgd(model, data, lr, b, epochs=epochs, seed=seed)
                    diverged += r["diverged"]
                    accs.append(0.1 if r["diverged"] else r["late_test_accuracy"])  # diverged: chance
                    bar.update(1)
                cells.append({"lr": lr, "batch_size": b, "g_hat": normalized_noise_scale(lr, n, b),
                              "accuracy": statistics.mean(accs), "accuracy_per_seed": accs, "diverged": diverged})
        best = max(cells, key=lambda c: c["accuracy"])
        per_lr = {}
        for lr in LRS:
            row = [c for c in cells if c["lr"] == lr]
            top = max(row, key=lambda c: c["accuracy"])
            per_lr[str(lr)] = {"batch_size": top["batch_size"], "g_hat": top["g_hat"], "accuracy": top["accuracy"],
                               "at_edge": top["batch_size"] in (BATCHES[0], BATCHES[-1])}
        results["by_width"][str(width)] = {
            "cells": cells, "best": best, "g_hat_opt": best["g_hat"], "per_lr": per_lr,
            "best_at_grid_edge": best["batch_size"] in (BATCHES[0], BATCHES[-1]) or best["lr"] in (LRS[0], LRS[-1])}
    bar.close()
    results["seconds"] = time.time() - start
    lines = [f"{'width':>6s} {'best eps':>8s} {'best B':>6s} {'g_hat_opt':>9s} {'acc':>7s}   "
             + "   ".join(f"eps={lr:g}: B, g_hat, acc" for lr in LRS)]
    for w, r in results["by_width"].items():
        per = "   ".join(f"{p['batch_size']:4d}{'*' if p['at_edge'] else ' '} {p['g_hat']:7.0f} {p['accuracy']:.4f}"
                         for p in r["per_lr"].values())
        lines.append(f"{w:>6s} {r['best']['lr']:8g} {r['best']['batch_size']:6d} {r['g_hat_opt']:9.0f} "
                     f"{r['best']['accuracy']:7.4f}   {per}")
    lines.append("(* best batch size at the edge of the grid)")
    write_results(results, lines, args.out, plot)
    return 0


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    markers = {lr: m for lr, m in zip(results["lrs"], "os^vD")}
    for i, (w, r) in enumerate(results["by_width"].items()):
        color = f"C{i}"
        for lr in results["lrs"]:
            cells = sorted((c for c in r["cells"] if c["lr"] == lr), key=lambda c: c["g_hat"])
            ax1.plot([c["g_hat"] for c in cells], [c["accuracy"] for c in cells], "-", marker=markers[lr], ms=4,
                     color=color, alpha=0.8, label=f"width {w}" if lr == results["lrs"][0] else None)
        ax1.plot([r["g_hat_opt"]], [r["best"]["accuracy"]], "*", ms=15, color=color, mec="k")
    ax1.set_xscale("log")
    ax1.set_ylim(0.9, 1.0)
    ax1.set_xlabel("normalized noise scale ĝ = ε(N/B − 1)  (ε of the NTK parameterization)")
    ax1.set_ylabel("test accuracy (late-time mean over seeds)")
    ax1.set_title("accuracy against ĝ (markers: ε = " + ", ".join(
        f"{lr:g} {m}" for lr, m in markers.items()) + "); ★ best per width", fontsize=9)
    ax1.legend(fontsize=8, loc="lower left")
    ax1.grid(alpha=0.3)
    widths = [int(w) for w in results["by_width"]]
    opt = [results["by_width"][str(w)]["g_hat_opt"] for w in widths]
    ax2.plot(widths, opt, "*-", ms=12, color="k", label="ĝ_opt (best ε and B)")
    for lr in results["lrs"]:  # only where that learning rate trained at all (best accuracy above 0.5)
        pts = [(w, results["by_width"][str(w)]["per_lr"][str(lr)]) for w in widths]
        pts = [(w, p) for w, p in pts if p["accuracy"] > 0.5]
        ax2.plot([w for w, _ in pts], [p["g_hat"] for _, p in pts], marker=markers[lr], ls="--", alpha=0.7,
                 label=f"best B at ε = {lr:g} (hollow: B at the grid's edge)")
        edge = [(w, p) for w, p in pts if p["at_edge"]]
        ax2.plot([w for w, _ in edge], [p["g_hat"] for _, p in edge], marker=markers[lr], ls="none", ms=11,
                 mfc="none", mec="k")
    ax2.plot(widths, [opt[0] * w / widths[0] for w in widths], ":", color="gray", label="∝ width (from the narrowest)")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("width (hidden units)")
    ax2.set_ylabel("optimal normalized noise scale ĝ_opt")
    ax2.set_title("optimal ĝ against width")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"Park et al. on digits: one-hidden-layer ReLU MLPs (NTK parameterization), plain SGD, "
                 f"{results['epochs']} epochs (accuracy below 0.9 cut off)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
