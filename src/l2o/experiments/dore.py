"""``l2o reproduce dore``: DORE (Liu, Li, Tang & Yan 2019) against its baselines, in the simulator.

1. Least squares with full local gradients: DORE's gradient and model residuals decay
   exponentially (the paper's linear-regression figure), DoubleSqueeze's compressed quantities
   do not.
2. Digits logistic regression (4 workers) and a digits MLP (8 workers), minibatch SGD: training
   loss against iterations and against bits sent, for full precision, QSGD, MEM-SGD, DIANA,
   DoubleSqueeze and DORE, all with the same 2-bit quantizer; each algorithm's learning rate
   chosen on a tuning seed disjoint from the evaluation seeds; the bits each needs to reach full
   precision's final loss.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from l2o.io import atomic_write_text, jsonable

ALGOS = ("full", "qsgd", "memsgd", "diana", "doublesqueeze", "dore")
LABELS = {"full": "full precision", "qsgd": "QSGD", "memsgd": "MEM-SGD", "diana": "DIANA",
          "doublesqueeze": "DoubleSqueeze", "dore": "DORE"}
COLORS = {"full": "black", "qsgd": "tab:blue", "memsgd": "tab:orange", "diana": "tab:green",
          "doublesqueeze": "tab:purple", "dore": "tab:red"}
TUNING_SEED = 1000
#: a loss "reaches full precision's" when it is within this factor of full precision's final loss
TARGET_SLACK = 1.05


def _config(quick: bool, seeds: int | None) -> dict:
    if quick:
        return {"seeds": seeds or 1, "ls_steps": 60, "problems": {
            "digits_logistic": {"kwargs": {"workers": 4, "batch_size": 32}, "steps": 30, "grid": [0.5]},
            "digits_mlp": {"kwargs": {"workers": 4, "batch_size": 32, "hidden": 32}, "steps": 20, "grid": [0.3]}}}
    return {"seeds": seeds or 2, "ls_steps": 300, "problems": {
        "digits_logistic": {"kwargs": {"workers": 4, "batch_size": 32}, "steps": 150, "grid": [0.3, 1.0, 3.0, 10.0]},
        "digits_mlp": {"kwargs": {"workers": 8, "batch_size": 32, "hidden": 32}, "steps": 100,
                       "grid": [0.1, 0.3, 0.6, 1.0, 2.0]}}}


def _run_cached(out: Path, key: str, resume: bool, fn):
    path = out / "runs" / f"{key}.json"
    if resume and path.exists():
        return json.loads(path.read_text())
    result = fn()
    atomic_write_text(path, json.dumps(jsonable(result)))
    return result


def _final(run) -> float:
    value = run["eval"][-1][1] if run["eval"] else float("nan")
    return value if (value is not None and math.isfinite(value)) else float("inf")


def _bits_to_reach(run, target) -> float | None:
    bits = run["bits"]
    for step, loss in run["eval"]:
        if step > 0 and loss is not None and loss <= target:
            return bits[step - 1]
    return None


def reproduce(out_dir, *, quick: bool, seeds: int | None, resume: bool, progress: bool, command: str) -> dict:
    from l2o.distributed import make_algorithm, simulate
    from l2o.distributed.problems import make_problem

    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = _config(quick, seeds)
    started = time.time()
    results = {"command": command, "quick": quick, "seeds": cfg["seeds"], "tuning_seed": TUNING_SEED,
               "compressor": repr(make_algorithm("dore").uplink), "target_slack": TARGET_SLACK, "problems": {}}

    # 1. least squares: residual norms
    ls = make_problem("least_squares", workers=4, dim=50, examples=400)
    ls_runs = {}
    for name in ("dore", "doublesqueeze", "diana"):
        ls_runs[name] = _run_cached(out, f"ls_{name}", resume, lambda name=name: simulate(
            ls, make_algorithm(name), lr=0.05, steps=cfg["ls_steps"], record_residuals=True, eval_every=10,
            progress=progress, desc=f"least squares {name}"))
    f_star = ls.optimum()
    ls_summary = {}
    for name, run in ls_runs.items():
        w = run["worker_residual"]
        half = len(w) // 2
        rate = (math.log(w[half]) - math.log(w[-1])) / (len(w) - 1 - half) if w[-1] > 0 else None
        ls_summary[name] = {"worker_residual_first": w[0], "worker_residual_last": w[-1],
                            "server_residual_first": run["server_residual"][0] if name != "diana" else None,
                            "server_residual_last": run["server_residual"][-1] if name != "diana" else None,
                            "worker_residual_log_decay_per_step_second_half": rate,
                            "final_suboptimality": _final(run) - f_star, "bits": run["bits"][-1]}
    results["least_squares"] = {"workers": 4, "dim": 50, "examples": 400, "lr": 0.05, "steps": cfg["ls_steps"],
                                "optimum": f_star, "algorithms": ls_summary}

    # 2. digits problems
    curves = {}
    for pname, pc in cfg["problems"].items():
        steps, grid = pc["steps"], pc["grid"]
        eval_every = max(1, steps // 25)
        entry = {"kwargs": pc["kwargs"], "steps": steps, "grid": grid, "algorithms": {}}
        curves[pname] = {}
        for name in ALGOS:
            tuning = {}
            for lr in grid:
                problem = make_problem(pname, seed=TUNING_SEED, **pc["kwargs"])
                run = _run_cached(out, f"{pname}_{name}_tune_lr{lr:g}", resume, lambda: simulate(
                    problem, make_algorithm(name), lr=lr, steps=steps, seed=TUNING_SEED, eval_every=eval_every,
                    progress=progress, desc=f"{pname} {name} tune lr={lr:g}"))
                tuning[lr] = _final(run)
            best = min(grid, key=lambda lr: tuning[lr])
            runs = []
            for seed in range(cfg["seeds"]):
                problem = make_problem(pname, seed=seed, **pc["kwargs"])
                runs.append(_run_cached(out, f"{pname}_{name}_lr{best:g}_seed{seed}", resume, lambda: simulate(
                    problem, make_algorithm(name), lr=best, steps=steps, seed=seed, eval_every=eval_every,
                    progress=progress, desc=f"{pname} {name} seed {seed}")))
            curves[pname][name] = runs
            finals = [_final(r) for r in runs]
            entry["algorithms"][name] = {
                "lr": best, "lr_at_grid_edge": len(grid) > 1 and best in (grid[0], grid[-1]),
                "tuning_final_loss": {f"{lr:g}": tuning[lr] for lr in grid},
                "final_loss": sum(finals) / len(finals), "final_loss_per_seed": finals,
                "bits": runs[0]["bits"][-1], "bits_per_step": runs[0]["bits"][0]}
        target = TARGET_SLACK * entry["algorithms"]["full"]["final_loss"]
        entry["target_loss"] = target
        for name in ALGOS:
            reach = [_bits_to_reach(r, target) for r in curves[pname][name]]
            a = entry["algorithms"][name]
            a["bits_to_target_per_seed"] = reach
            a["bits_to_target"] = max(reach) if all(b is not None for b in reach) else None
        full_bits = entry["algorithms"]["full"]["bits_to_target"]
        for name in ALGOS:
            a = entry["algorithms"][name]
            a["bit_savings_to_target"] = (full_bits / a["bits_to_target"]
                                          if a["bits_to_target"] and full_bits else None)
        results["problems"][pname] = entry
    results["seconds"] = time.time() - started

    plots = [_plot_least_squares(out / "dore_least_squares.png", ls_runs, f_star)]
    for pname in cfg["problems"]:
        plots.append(_plot_problem(out / f"dore_{pname}.png", pname, curves[pname], results["problems"][pname]))
    json_path = out / "results.json"
    atomic_write_text(json_path, json.dumps(jsonable(results), indent=2, allow_nan=False))
    report = out / "report.md"
    atomic_write_text(report, _report(results))
    return {"report": report, "json": json_path, "plots": plots}


def _report(r: dict) -> str:
    lines = ["# DORE: double residual compression (Liu, Li, Tang & Yan 2019)", "",
             f"Command: `{r['command']}`", "",
             f"Quantizer on every compressed link: {r['compressor']} (2 bits per element plus one float32 scale "
             f"per 256). Seeds {r['seeds']} (evaluation seeds 0..{r['seeds'] - 1}); learning rates chosen per "
             f"algorithm on seed {r['tuning_seed']} by final training loss.", "",
             "## Least squares (full local gradients, 4 workers)", "",
             "| algorithm | worker residual first → last | server residual first → last | log-decay/step (2nd half) "
             "| final suboptimality |", "| --- | --- | --- | --- | --- |"]
    for name, s in r["least_squares"]["algorithms"].items():
        server = (f"{s['server_residual_first']:.3g} → {s['server_residual_last']:.3g}"
                  if s["server_residual_first"] is not None else "(uncompressed)")
        rate = s["worker_residual_log_decay_per_step_second_half"]
        lines.append(f"| {LABELS[name]} | {s['worker_residual_first']:.3g} → {s['worker_residual_last']:.3g} | "
                     f"{server} | {rate:.3g} | {s['final_suboptimality']:.3g} |" if rate is not None else
                     f"| {LABELS[name]} | {s['worker_residual_first']:.3g} → {s['worker_residual_last']:.3g} | "
                     f"{server} | - | {s['final_suboptimality']:.3g} |")
    for pname, e in r["problems"].items():
        lines += ["", f"## {pname} ({e['kwargs']['workers']} workers, {e['steps']} steps, lr grid {e['grid']})", "",
                  f"Target: {TARGET_SLACK:g} × full precision's final loss = {e['target_loss']:.4f}.", "",
                  "| algorithm | lr | final train loss | Mbit sent | Mbit to target | bits saved vs full |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for name, a in e["algorithms"].items():
            to_target = f"{a['bits_to_target'] / 1e6:.2f}" if a["bits_to_target"] else "not reached"
            saving = f"{a['bit_savings_to_target']:.1f}×" if a["bit_savings_to_target"] else "-"
            edge = " (grid edge)" if a["lr_at_grid_edge"] else ""
            lines.append(f"| {LABELS[name]} | {a['lr']:g}{edge} | {a['final_loss']:.4f} | {a['bits'] / 1e6:.2f} | "
                         f"{to_target} | {saving} |")
    lines += ["", f"Ran in {r['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _plot_least_squares(path: Path, runs: dict, f_star: float) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, run in runs.items():
        axes[0].semilogy(run["worker_residual"], color=COLORS[name], label=LABELS[name])
        if name != "diana":
            axes[1].semilogy(run["server_residual"], color=COLORS[name], label=LABELS[name])
        steps = [s for s, _ in run["eval"]]
        sub = [max(v - f_star, 1e-16) for _, v in run["eval"]]
        axes[2].semilogy(steps, sub, color=COLORS[name], label=LABELS[name])
    axes[0].set_title("worker side: what is compressed\n(DORE, DIANA: Δᵢ = gᵢ − hᵢ; DoubleSqueeze: gᵢ + δᵢ)", fontsize=10)
    axes[1].set_title("server side: what is compressed\n(DORE: q; DoubleSqueeze: v)", fontsize=10)
    axes[2].set_title("f(x) − f*")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("norm (mean over workers)")
    axes[1].set_ylabel("norm")
    fig.suptitle("Least squares, 4 workers, full local gradients, 2-bit quantization")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_problem(path: Path, pname: str, curves: dict, entry: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, runs in curves.items():
        steps = [s for s, _ in runs[0]["eval"]]
        mean = [sum(r["eval"][k][1] for r in runs) / len(runs) for k in range(len(steps))]
        bits = [0.0] + [runs[0]["bits"][s - 1] for s in steps[1:]]
        label = f"{LABELS[name]} (lr {entry['algorithms'][name]['lr']:g})"
        axes[0].plot(steps, mean, color=COLORS[name], label=label)
        axes[1].plot([max(b, 1.0) for b in bits][1:], mean[1:], color=COLORS[name], label=label)
    for ax in axes:
        ax.set_yscale("log")
        ax.set_ylabel("training loss (full training set)")
        ax.axhline(entry["target_loss"], color="gray", ls=":", lw=1)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_xlabel("iteration")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("bits sent (all workers, both directions)")
    axes[1].legend(loc="lower left", fontsize=9)
    w = entry["kwargs"]["workers"]
    fig.suptitle(f"{pname}: {w} workers, mean over seeds (dotted: {TARGET_SLACK:g} × full precision's final loss)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
