"""McCandlish et al. (2018): the steps S and the examples E = S·B needed to reach a target loss trade
off as (S/S_min − 1)(E/E_min − 1) = 1 across batch sizes, i.e. S(B) = S_min + E_min/B, with the
critical batch size B_crit = E_min/S_min close to the measured gradient noise scale B_simple.

Here: scikit-learn's digits (1348 training images), a 64-256-10 ReLU MLP (PyTorch's default
initialisation), plain SGD on reshuffled epochs, target: full training loss (cross-entropy) <= 0.1.
For each batch size the learning rate is tuned on a grid (powers of 2, 1/8..8) to the fewest steps
on tuning seeds 0-1; the steps at that rate are then measured on seeds 2-4 (disjoint). S_min and
E_min are fitted by least squares on S = S_min + E_min/B with relative residuals. B_simple is
measured exactly (per-example gradients over the whole training set) along the seed-2 run at the
batch size nearest the fitted B_crit, from initialisation to the target.

    python examples/noise_mccandlish.py          # a few minutes on one core
    python examples/noise_mccandlish.py --quick  # a smoke run

writes docs/methods/figures/noise_mccandlish.{json,png}.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from noise_common import MLP, cpu_flags, digits, example_args, save_figure, train_sgd, write_results  # noqa: E402

from l2o.diagnostics import exact_noise_scale  # noqa: E402

BATCHES = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
LRS = [2.0**k for k in range(-3, 4)]
TUNE_SEEDS, EVAL_SEEDS = [0, 1], [2, 3, 4]
TARGET = 0.1
MAX_STEPS = 6000
WIDTH = 256


def fit(batches: list[int], steps: list[float]) -> tuple[float, float]:
    """S_min, E_min minimising Σ ((S_min + E_min/B − S)/S)² (weighted linear least squares)."""
    w = [1.0 / s**2 for s in steps]
    a11 = sum(wi for wi in w)
    a12 = sum(wi / b for wi, b in zip(w, batches))
    a22 = sum(wi / b**2 for wi, b in zip(w, batches))
    r1 = sum(wi * s for wi, s in zip(w, steps))
    r2 = sum(wi * s / b for wi, s, b in zip(w, steps, batches))
    det = a11 * a22 - a12 * a12
    return (r1 * a22 - r2 * a12) / det, (a11 * r2 - a12 * r1) / det


def main(argv=None) -> int:
    args = example_args(__doc__, "noise_mccandlish", None, "fewer batch sizes and rates, one seed each", argv, plot)
    if args is None:
        return 0
    from tqdm import tqdm

    batches = [8, 64, 512] if args.quick else BATCHES
    lrs = [0.5, 2.0] if args.quick else LRS
    tune, evaluate = ([0], [1]) if args.quick else (TUNE_SEEDS, EVAL_SEEDS)
    data = digits()
    model = MLP(WIDTH)
    start = time.time()
    rows = []
    bar = tqdm(total=len(batches) * (len(lrs) * len(tune) + len(evaluate)), disable=args.no_progress, desc="runs")
    for b in batches:
        tuning = {}
        for lr in lrs:
            steps = []
            for seed in tune:
                r = train_sgd(model, data, lr, b, seed=seed, target_loss=TARGET, max_steps=MAX_STEPS)
                steps.append(r["reached_at"] if r["reached_at"] is not None else math.inf)
                bar.update(1)
            tuning[lr] = statistics.mean(steps)
        best = min(tuning, key=lambda k: tuning[k])
        measured = []
        for seed in evaluate:
            r = train_sgd(model, data, best, b, seed=seed, target_loss=TARGET, max_steps=MAX_STEPS)
            measured.append(r["reached_at"] if r["reached_at"] is not None else math.inf)
            bar.update(1)
        rows.append({"batch_size": b, "lr": best, "lr_at_grid_edge": best in (lrs[0], lrs[-1]),
                     "tuning_steps": {str(k): v for k, v in tuning.items()}, "steps_per_seed": measured,
                     "steps": statistics.mean(measured), "examples": statistics.mean(measured) * b})
    bar.close()
    ok = [r for r in rows if math.isfinite(r["steps"])]
    s_min, e_min = fit([r["batch_size"] for r in ok], [r["steps"] for r in ok])
    b_crit = e_min / s_min
    for r in rows:
        r["fit_steps"] = s_min + e_min / r["batch_size"]
        r["tradeoff"] = (r["steps"] / s_min - 1) * (r["examples"] / e_min - 1) if math.isfinite(r["steps"]) else None

    # B_simple along one run (seed 2, or the first evaluation seed) at the batch size nearest B_crit
    near = min(rows, key=lambda r: abs(math.log(r["batch_size"] / b_crit)))
    x, y = data[0], data[1]
    trace = []

    next_measure = [0]

    def hook(step, params, final=False):
        if step < next_measure[0] and not final:
            return
        next_measure[0] = max(step + 1, int(step * 1.3))
        named = {f"p{i}": p.detach() for i, p in enumerate(params)}
        ns = exact_noise_scale(lambda p, xb, yb: model.loss([p[f"p{i}"] for i in range(len(p))], xb, yb), named, x, y)
        with torch.no_grad():
            loss = float(model.loss(params, x, y))
        trace.append({"step": step, "train_loss": loss, **ns.as_dict()})

    run = train_sgd(model, data, near["lr"], near["batch_size"], seed=evaluate[0], target_loss=TARGET,
                    max_steps=MAX_STEPS, hook=hook)
    if trace[-1]["step"] != run["steps"]:
        hook(run["steps"], run["params"], final=True)
    finite = [t["b_simple"] for t in trace if math.isfinite(t["b_simple"]) and t["b_simple"] > 0]
    summary = {"b_crit_fit": b_crit, "s_min": s_min, "e_min": e_min,
               "b_simple_at_init": trace[0]["b_simple"], "b_simple_at_target": trace[-1]["b_simple"],
               "b_simple_at_target_se": trace[-1]["b_simple_se"],
               "b_simple_run_median": statistics.median(finite) if finite else None,
               "b_simple_measured_at_batch": near["batch_size"]}
    results = {"command": "python examples/noise_mccandlish.py" + (" --quick" if args.quick else ""),
               "width": WIDTH, "target_train_loss": TARGET, "lr_grid": lrs, "tune_seeds": tune, "eval_seeds": evaluate,
               "max_steps": MAX_STEPS, "cpu": cpu_flags(), "rows": rows, "summary": summary, "b_simple_trace": trace,
               "seconds": time.time() - start}
    lines = [f"{'B':>5s} {'lr':>6s} {'steps':>8s} {'fit':>8s} {'examples':>9s} {'(S/Smin-1)(E/Emin-1)':>21s}"]
    for r in rows:
        edge = " (lr at grid edge)" if r["lr_at_grid_edge"] else ""
        tradeoff = f"{r['tradeoff']:.2f}" if r["tradeoff"] is not None else "-"
        lines.append(f"{r['batch_size']:5d} {r['lr']:6g} {r['steps']:8.1f} {r['fit_steps']:8.1f} {r['examples']:9.0f} "
                     f"{tradeoff:>21s}{edge}")
    lines.append(f"fit: S_min = {s_min:.1f} steps, E_min = {e_min:.0f} examples, B_crit = E_min/S_min = {b_crit:.1f}")
    lines.append(f"B_simple (exact, whole training set) along the B = {near['batch_size']} run: at init "
                 f"{summary['b_simple_at_init']:.1f}, median {summary['b_simple_run_median']:.1f}, at the target "
                 f"{summary['b_simple_at_target']:.1f} ± {summary['b_simple_at_target_se'] or float('nan'):.1f}")
    write_results(results, lines, args.out, plot)
    return 0


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if math.isfinite(r["steps"])]
    s = results["summary"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.4))
    ex = [r["examples"] for r in rows]
    st = [r["steps"] for r in rows]
    ax1.plot(ex, st, "o", color="C0", label="measured (mean of seeds)")
    for r in rows:
        ax1.annotate(f"B={r['batch_size']}", (r["examples"], r["steps"]), fontsize=7, xytext=(4, 4),
                     textcoords="offset points")
    grid = [2.0 ** (k / 4) for k in range(0, 4 * 11)]
    ax1.plot([s["s_min"] * b + s["e_min"] for b in grid], [s["s_min"] + s["e_min"] / b for b in grid], "-",
             color="C1", label="fit: (S/S_min − 1)(E/E_min − 1) = 1")
    ax1.axhline(s["s_min"], color="gray", ls=":", lw=1)
    ax1.axvline(s["e_min"], color="gray", ls=":", lw=1)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("examples E to reach the target")
    ax1.set_ylabel("steps S to reach the target")
    ax1.set_title(f"steps against examples (train loss ≤ {results['target_train_loss']})")
    ax1.legend(fontsize=8)
    bs = [r["batch_size"] for r in rows]
    ax2.plot(bs, [r["tradeoff"] for r in rows], "o-", color="C0")
    ax2.axhline(1.0, color="C1", ls="--", label="model: 1")
    ax2.set_xscale("log", base=2)
    values = [r["tradeoff"] for r in rows]
    ax2.set_ylim(min(-0.2, min(values) - 0.2), max(3.0, max(values) + 0.2))
    ax2.set_xlabel("batch size B")
    ax2.set_ylabel("(S/S_min − 1)(E/E_min − 1)")
    ax2.set_title("the trade-off, batch by batch")
    ax2.legend(fontsize=8)
    tr = results["b_simple_trace"]
    ax3.plot([t["step"] + 1 for t in tr], [t["b_simple"] for t in tr], "o-", ms=3, color="C0",
             label=f"B_simple (exact) along the B = {s['b_simple_measured_at_batch']} run")
    ax3.axhline(s["b_crit_fit"], color="C1", ls="--", label=f"fitted B_crit = {s['b_crit_fit']:.0f}")
    ax3.set_xscale("log")
    ax3.set_yscale("log")
    ax3.set_xlabel(f"step + 1 (the last point: training loss ≤ {results['target_train_loss']})")
    ax3.set_ylabel("batch size")
    ax3.set_title("measured noise scale against the fit")
    ax3.legend(fontsize=8)
    fig.suptitle(f"McCandlish et al. on digits: 64-{results['width']}-10 ReLU MLP, plain SGD, learning rate tuned "
                 "per batch size", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
