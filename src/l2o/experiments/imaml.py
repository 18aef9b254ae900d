"""`l2o reproduce imaml`: implicit MAML against MAML and first-order MAML (Rajeswaran et al. 2019).

Three parts:

1. **Cost against inner steps** (the paper's Figure 2): the memory that autograd holds during one
   meta-step (tensors saved for backward, deduplicated, peak) for MAML, first-order MAML and iMAML
   as the number of inner steps grows. Wall-clock time is measured in
   ``benchmarks/hyper_imaml_cost.py`` (timings are never taken here).
2. **Accuracy of the implicit gradient**: on sinusoid tasks, the implicit meta-gradient after K
   inner steps against the exact meta-gradient of the proximal problem (autograd through a long,
   converged inner run), as K grows; the truncated unrolled gradient through K steps beside it.
3. **Few-shot results**: sinusoid regression (10-shot MSE) and 5-way 1-shot digits (meta-training
   classes 0-4, meta-test classes 5-9): each method's inner learning rate (iMAML: its lambda) is
   chosen from a four-point grid on validation tasks of the meta-training distribution with a
   tuning seed, then each method is meta-trained with ``seeds`` fresh seeds and scored on
   ``test_tasks`` meta-test tasks per seed: mean and 95% interval over all seeds x tasks.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from l2o.hyper.fewshot import BatchedMLP, SinusoidFamily, digits_families
from l2o.hyper.imaml import (METHODS, InnerConfig, MetaTrainingDiverged, adapt, evaluate, graph_memory, meta_gradient,
                             meta_train)
from l2o.io import atomic_write_text, jsonable

FAMILIES = ("sinusoid", "digits")


@dataclass(frozen=True)
class IMAMLConfig:
    seeds: int = 3
    test_tasks: int = 600
    val_tasks: int = 200
    inner_steps: int = 5
    cg_steps: int = 5
    lam: float = 2.0
    lam_factors: tuple[float, ...] = (0.0625, 0.25, 1.0, 4.0)
    sinusoid_lr_grid: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)
    digits_lr_grid: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    sinusoid_meta_steps: int = 300
    digits_meta_steps: int = 200
    tune_fraction: float = 0.5
    meta_batch: int = 10
    meta_lr: float = 3e-3
    cost_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    convergence_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    convergence_reference_steps: int = 2000

    @classmethod
    def quick(cls) -> IMAMLConfig:
        return cls(seeds=1, test_tasks=100, val_tasks=50, sinusoid_meta_steps=20, digits_meta_steps=20,
                   cost_steps=(1, 4, 16), convergence_steps=(1, 4, 16, 64), convergence_reference_steps=400)


def make_model(family: str) -> tuple[BatchedMLP, Any, Any]:
    """The model and the meta-training / meta-test task families."""
    if family == "sinusoid":
        fam = SinusoidFamily(k_shot=10, k_query=10)
        return BatchedMLP([1, 40, 40, 1], "relu", regression=True), fam, fam
    train, test = digits_families(n_way=5, k_shot=1, k_query=15)
    return BatchedMLP([64, 64, 64, 5], "relu"), train, test


def _settings(method: str, family: str, config: IMAMLConfig) -> list[InnerConfig]:
    """The four-point tuning grid of a method: the inner learning rate (MAML, FOMAML) or lambda
    (iMAML, at the grid's second learning rate alpha): lambda = factor / (K alpha), around the
    proximal strength whose solution K steps of size alpha move about as far as MAML's do."""
    grid = config.sinusoid_lr_grid if family == "sinusoid" else config.digits_lr_grid
    base = dict(inner_steps=config.inner_steps, cg_steps=config.cg_steps, lam=config.lam)
    if method == "imaml":
        mid = grid[1]
        return [InnerConfig(method=method, inner_lr=mid,
                            **{**base, "lam": round(f / (config.inner_steps * mid), 4)}) for f in config.lam_factors]
    return [InnerConfig(method=method, inner_lr=lr, **base) for lr in grid]


def score_tasks(model, theta, family, inner: InnerConfig, tasks: int, seed: int, chunk: int = 100) -> list[float]:
    """Per-task query metric (MSE or accuracy) on ``tasks`` tasks drawn with ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    scores: list[float] = []
    while len(scores) < tasks:
        batch = family.sample(gen, min(chunk, tasks - len(scores)))
        scores += evaluate(model, theta, batch, inner).tolist()
    return scores


def _interval(values: list[float]) -> dict[str, float]:
    diverged = sum(not math.isfinite(v) for v in values)
    if diverged:
        return {"mean": float("nan"), "ci95": float("nan"), "n": len(values), "median": float("nan"),
                "above_10x_median": None, "diverged": diverged}
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, n - 1))
    ordered = sorted(values)
    median = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    return {"mean": mean, "ci95": 1.96 * std / math.sqrt(n), "n": n, "median": median,
            "above_10x_median": sum(v > 10 * abs(median) for v in values)}


def few_shot(family: str, config: IMAMLConfig, out_dir: Path, resume: bool, progress: bool) -> dict[str, Any]:
    model, train_family, test_family = make_model(family)
    steps = config.sinusoid_meta_steps if family == "sinusoid" else config.digits_meta_steps
    tune_steps = max(1, int(steps * config.tune_fraction))
    lower_is_better = family == "sinusoid"
    results: dict[str, Any] = {}
    for method in METHODS:
        tuning = {}
        for inner in _settings(method, family, config):
            try:
                theta, _ = meta_train(model, train_family, inner, steps=tune_steps, meta_batch=config.meta_batch,
                                      meta_lr=config.meta_lr, seed=1000, progress=progress)
                val = _interval(score_tasks(model, theta, train_family, inner, config.val_tasks, seed=2000))["mean"]
            except MetaTrainingDiverged:
                val = float("nan")  # recorded as diverged
            key = f"lam={inner.lam}" if method == "imaml" else f"inner_lr={inner.inner_lr}"
            tuning[key] = (val if math.isfinite(val) else None, inner)
        finite = {k: v for k, v in tuning.items() if v[0] is not None}
        pick = (min if lower_is_better else max)(finite, key=lambda k: finite[k][0])
        inner = finite[pick][1]
        keys = list(tuning)
        per_seed, pooled, curves = [], [], []
        for s in range(config.seeds):
            ckpt = out_dir / "checkpoints" / f"{family}-{method}-seed{s}.safetensors"
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            try:
                theta, history = meta_train(model, train_family, inner, steps=steps, meta_batch=config.meta_batch,
                                            meta_lr=config.meta_lr, seed=s, checkpoint=str(ckpt),
                                            checkpoint_every=25, resume=resume, progress=progress)
                scores = score_tasks(model, theta, test_family, inner, config.test_tasks, seed=10_000 + s)
            except MetaTrainingDiverged:  # counted as a failed seed: every task scored as diverged
                history, scores = [], [float("nan")] * config.test_tasks
            per_seed.append(sum(scores) / len(scores))
            pooled += scores
            curves.append(history)
        results[method] = {"chosen": pick, "at_grid_edge": pick in (keys[0], keys[-1]),
                           "tuning": {k: v[0] for k, v in tuning.items()}, "inner": inner.as_dict(),
                           "test": _interval(pooled), "per_seed": per_seed, "curves": curves}
    metric = "query MSE (lower is better)" if lower_is_better else "query accuracy (higher is better)"
    return {"family": family, "metric": metric, "meta_steps": steps, "tune_steps": tune_steps, "methods": results}


def cost_against_steps(config: IMAMLConfig) -> dict[str, Any]:
    model, family, _ = make_model("sinusoid")
    theta = model.init(torch.Generator().manual_seed(0))
    batch = family.sample(torch.Generator().manual_seed(1), config.meta_batch)
    out: dict[str, Any] = {"steps": list(config.cost_steps), "meta_batch": config.meta_batch, "peak_bytes": {}}
    for method in METHODS:
        peaks = []
        for k in config.cost_steps:
            with graph_memory() as stats:
                meta_gradient(model, theta, batch, InnerConfig(method=method, inner_steps=k, inner_lr=0.01,
                                                               lam=config.lam, cg_steps=config.cg_steps))
            peaks.append(stats["peak"])
        out["peak_bytes"][method] = peaks
    return out


def gradient_convergence(config: IMAMLConfig) -> dict[str, Any]:
    """Relative error of the implicit gradient (and of the truncated unrolled one) against the exact
    meta-gradient of the proximal problem, as the number of inner steps grows (float64)."""
    model = BatchedMLP([1, 40, 40, 1], "tanh", regression=True)
    theta = model.init(torch.Generator().manual_seed(0), torch.float64)
    batch = SinusoidFamily(k_shot=10, k_query=10).sample(torch.Generator().manual_seed(1), 4).to(torch.float64)
    lam, lr = 10.0, 0.01

    def unrolled(steps):
        leaves = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        cfg = InnerConfig(method="imaml", inner_steps=steps, inner_lr=lr, lam=lam)
        phi = adapt(model, leaves, batch, cfg, create_graph=True, proximal=True)
        q = model.task_losses(phi, batch.x_q, batch.y_q).mean()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(q, list(leaves.values()))])

    reference = unrolled(config.convergence_reference_steps)
    implicit, truncated, stopped = [], [], []
    for k in config.convergence_steps:
        cfg = InnerConfig(method="imaml", inner_steps=k, inner_lr=lr, lam=lam, cg_steps=30)
        grad, stats = meta_gradient(model, theta, batch, cfg)
        g = torch.cat([v.reshape(-1) for v in grad.values()])
        implicit.append(float((g - reference).norm() / reference.norm()))
        truncated.append(float((unrolled(k) - reference).norm() / reference.norm()))
        stopped.append(stats["cg_stopped"])
    return {"steps": list(config.convergence_steps), "implicit_error": implicit, "unrolled_error": truncated,
            "cg_stopped": stopped, "lam": lam, "inner_lr": lr, "cg_steps": 30,
            "reference_steps": config.convergence_reference_steps}


def plot(results: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    cost = results["cost"]
    for method in METHODS:
        axes[0].plot(cost["steps"], [b / 2**20 for b in cost["peak_bytes"][method]], marker="o", label=method)
    axes[0].set_xscale("log", base=2)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("inner gradient steps")
    axes[0].set_ylabel("peak autograd memory per meta-step (MiB)")
    axes[0].set_title(f"memory vs inner steps (sinusoid, meta-batch {cost['meta_batch']})")
    axes[0].legend()
    conv = results["convergence"]
    axes[1].plot(conv["steps"], conv["implicit_error"], marker="o", label=f"implicit (CG {conv['cg_steps']})")
    axes[1].plot(conv["steps"], conv["unrolled_error"], marker="s", label="unrolled through K steps")
    axes[1].set_xscale("log", base=2)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("inner gradient steps K")
    axes[1].set_ylabel("relative error vs exact meta-gradient")
    axes[1].set_title(f"implicit gradient accuracy (λ = {conv['lam']:g})")
    axes[1].legend()
    fig.tight_layout()
    path = out_dir / "imaml_cost_and_accuracy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, family in zip(axes, FAMILIES):
        res = results["few_shot"][family]
        names = list(res["methods"])
        means = [res["methods"][m]["test"]["mean"] for m in names]
        cis = [res["methods"][m]["test"]["ci95"] for m in names]
        ax.bar(names, means, yerr=cis, capsize=6, color=["C0", "C1", "C2"])
        for i, m in enumerate(names):
            ax.scatter([i] * len(res["methods"][m]["per_seed"]), res["methods"][m]["per_seed"], color="k", s=12,
                       zorder=3, label="seed means" if i == 0 else None)
            ax.scatter([i], [res["methods"][m]["test"]["median"]], marker="_", s=900, color="r", zorder=4,
                       label="median task" if i == 0 else None)
        if family == "sinusoid":
            ax.set_yscale("log")
        ax.set_ylabel(res["metric"])
        ax.set_title(f"{family}: meta-test tasks (mean, 95% interval)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "imaml_few_shot.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)
    return paths


def reproduce(out_dir, *, quick: bool, seeds: int | None, resume: bool, progress: bool, command: str) -> dict:
    torch.set_num_threads(1)
    config = IMAMLConfig.quick() if quick else IMAMLConfig()
    if seeds is not None:
        config = replace(config, seeds=seeds)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"config": asdict(config), "command": command}
    results["cost"] = cost_against_steps(config)
    results["convergence"] = gradient_convergence(config)
    results["few_shot"] = {family: few_shot(family, config, out_dir, resume, progress) for family in FAMILIES}
    json_path = out_dir / "results.json"
    atomic_write_text(json_path, json.dumps(jsonable(results), indent=1, allow_nan=False))
    plots = plot(results, out_dir)
    report = out_dir / "report.md"
    atomic_write_text(report, format_report(results))
    return {"report": report, "json": json_path, "plots": plots}


def format_report(r: dict[str, Any]) -> str:
    c = r["config"]
    lines = ["# iMAML against MAML and first-order MAML (Rajeswaran et al. 2019)", "", f"Command: `{r['command']}`", "",
             "## Memory per meta-step against inner steps", "",
             "Peak bytes held by autograd (tensors saved for backward) during one meta-gradient, sinusoid "
             f"1-40-40-1, meta-batch {r['cost']['meta_batch']}:", "",
             "| inner steps | " + " | ".join(str(k) for k in r["cost"]["steps"]) + " |",
             "| --- |" + " --- |" * len(r["cost"]["steps"])]
    for method, peaks in r["cost"]["peak_bytes"].items():
        lines.append(f"| {method} | " + " | ".join(f"{p / 2**10:.0f} KiB" for p in peaks) + " |")
    conv = r["convergence"]
    lines += ["", "## Implicit gradient against the exact meta-gradient", "",
              f"Relative error against autograd through {conv['reference_steps']} proximal inner steps "
              f"(λ = {conv['lam']:g}, inner lr {conv['inner_lr']}, CG {conv['cg_steps']}), 4 sinusoid tasks, float64:", "",
              "| inner steps K | implicit | unrolled through K steps |", "| --- | --- | --- |"]
    for k, a, b in zip(conv["steps"], conv["implicit_error"], conv["unrolled_error"]):
        lines.append(f"| {k} | {a:.2e} | {b:.2e} |")
    lines += ["", "## Few-shot results", "",
              f"Inner steps {c['inner_steps']} for every method (iMAML: CG {c['cg_steps']}); meta-batch "
              f"{c['meta_batch']}, outer Adam lr {c['meta_lr']}; {c['seeds']} seeds x {c['test_tasks']} meta-test "
              "tasks per seed; mean ± 95% interval over all of them (per-seed means in results.json). Each method's "
              "grid point chosen on validation tasks of the meta-training distribution (tuning seed 1000, "
              "half the meta-steps).", ""]
    for family, res in r["few_shot"].items():
        lines += [f"### {family} ({res['metric']}, {res['meta_steps']} meta-steps)", "",
                  "| method | meta-test mean ± 95% | median | tasks > 10× median | per-seed means | chosen | tuning scores |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for method, m in res["methods"].items():
            tuning = ", ".join(f"{k}: {'diverged' if v is None else f'{v:.4f}'}" for k, v in m["tuning"].items())
            edge = " (grid edge)" if m["at_grid_edge"] else ""
            lines.append(f"| {method} | {m['test']['mean']:.4f} ± {m['test']['ci95']:.4f} | {m['test']['median']:.4f} | "
                         f"{m['test']['above_10x_median']} | " + ", ".join(f"{v:.4f}" for v in m["per_seed"]) + f" | {m['chosen']}{edge} | {tuning} |")
        lines.append("")
    return "\n".join(lines)
