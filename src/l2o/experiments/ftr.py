"""Reproduce "On Solving Minimax Optimization Locally: A Follow-the-Ridge Approach" (Wang, Zhang & Ba,
ICLR 2020).

``l2o reproduce ftr`` runs :func:`reproduce`:

1. The three toy functions of Section 6.1 (f1 from (5, 7), f2 from (6, 5), f3 from (7, 5)),
   every method with step size 0.05 as in the paper: GDA, extragradient, optimistic GDA and
   Follow-the-Ridge (H_yy⁻¹ materialized and pseudo-inverted, as the reference code does, and by
   CG on the normal equations). Final distance to the origin, trajectories on the contours.
2. The bilinear game f = xᵀAy (4 + 4 dims): distance to the equilibrium over iterations.
3. GANs (Section 6.2): the 1-D mixture of Gaussians (modes -4, 0, 4, std 0.1) and a 2-D ring of
   eight Gaussians, GDA against FR with the same RMSprop preconditioning and step size, on
   several seeds: both players' gradient norms over iterations, mode coverage, samples.

Every run is saved to ``runs/`` as it finishes (``--resume`` skips finished runs); the report,
``results.json`` and the figures are written from the saved runs.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from l2o.io import atomic_write_text, jsonable
from l2o.minimax import BilinearGame, create, get, play, toy

TOY_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "GDA": ("gda", {}),
    "EG": ("extragradient", {}),
    "OGDA": ("ogda", {}),
    "FR": ("ftr", {"solver": "exact", "damping": 0.0}),
    "FR (CG, 2 iters)": ("ftr", {"solver": "cg", "cg_iters": 2, "damping": 0.0}),
}
GAN_METHODS = ("GDA", "FR")


@dataclass
class FTRConfig:
    """Settings (defaults: the full run).

    Attributes:
        toy_steps, toy_lr: the toy runs (paper: 1000 steps, 0.05).
        bilinear_steps: steps on the bilinear game.
        games: which GANs to run (names in :data:`l2o.minimax.GAMES`).
        seeds: GAN seeds per method.
        gan_steps, gan_lr, gan_record: GAN steps, the shared step size, and the recording period.
        hidden, batch_size, fixed_batch: the GANs' MLP widths (both players), batch and whether
            one fixed batch is played at every step.
        alternating: both GDA and FR take y's gradient after x's step (as the reference code's GAN
            runs do for both methods).
        cg_iters, damping, adaptive_damping: FR's solver on the GANs (paper: 5, 1.0, adaptive).
    """

    toy_steps: int = 1000
    toy_lr: float = 0.05
    bilinear_steps: int = 500
    games: tuple[str, ...] = ("mog1d", "ring8")
    seeds: int = 3
    gan_steps: int = 4000
    gan_lr: float = 2e-4
    gan_record: int = 50
    hidden: int = 64
    batch_size: int = 512
    fixed_batch: bool = False
    alternating: bool = True
    cg_iters: int = 5
    damping: float = 1.0
    adaptive_damping: bool = True

    @classmethod
    def quick(cls) -> "FTRConfig":
        return cls(toy_steps=400, bilinear_steps=200, games=("mog1d",), seeds=1, gan_steps=60, gan_record=20,
                   hidden=8, batch_size=64, gan_lr=5e-4)


def _make(name: str, kwargs: dict, lr: float):
    return lambda xs, ys: create(name, xs, ys, lr_x=lr, lr_y=lr, **kwargs)


def _run_toy(fn: str, method: str, cfg: FTRConfig) -> dict:
    name, kwargs = TOY_METHODS[method]
    r = play(toy(fn), _make(name, kwargs, cfg.toy_lr), steps=cfg.toy_steps, record_every=cfg.toy_steps)
    norms = [math.hypot(a, b) for a, b in r.trajectory]
    stride = max(1, len(r.trajectory) // 500)
    return {"function": fn, "method": method, "diverged": r.diverged, "steps": len(r.trajectory) - 1,
            "final": list(r.trajectory[-1]), "final_norm": norms[-1], "final_grad_norm": r.final.get("grad_norm"),
            "norms": norms[::stride] + ([norms[-1]] if (len(norms) - 1) % stride else []),
            "norm_steps": list(range(0, len(norms), stride)) + ([len(norms) - 1] if (len(norms) - 1) % stride else []),
            "trajectory": [list(p) for p in r.trajectory[:: max(1, stride // 2)]]}


def _run_bilinear(method: str, cfg: FTRConfig) -> dict:
    name, kwargs = TOY_METHODS[method]
    if name == "ftr":
        kwargs = {"solver": "cg", "cg_iters": 2, "damping": 1e-6}
    r = play(BilinearGame(dim=4, seed=0), _make(name, kwargs, cfg.toy_lr), steps=cfg.bilinear_steps, seed=0,
             record_every=max(1, cfg.bilinear_steps // 100))
    return {"method": method, "diverged": r.diverged, "steps": r.steps, "distance": [m["distance"] for m in r.metrics]}


def _gan(cfg: FTRConfig, game: str):
    return get(game, g_hidden=cfg.hidden, d_hidden=cfg.hidden, batch_size=cfg.batch_size, fixed_batch=cfg.fixed_batch)


def _run_gan(game_name: str, method: str, seed: int, cfg: FTRConfig, progress: bool) -> dict:
    game = _gan(cfg, game_name)
    kwargs: dict[str, Any] = {"precondition": "rmsprop", "alternating": cfg.alternating}
    if method == "FR":
        kwargs.update(cg_iters=cfg.cg_iters, damping=cfg.damping, adaptive_damping=cfg.adaptive_damping)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.gan_steps, desc=f"{game_name} {method} seed {seed}", leave=False)
    r = play(game, _make("gda" if method == "GDA" else "ftr", kwargs, cfg.gan_lr), steps=cfg.gan_steps, seed=seed,
             record_every=cfg.gan_record, progress=(lambda t: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    with torch.no_grad():
        z = torch.randn(1000, game.z_dim, generator=torch.Generator().manual_seed(10_000 + seed))
        samples = game.generate(r.x, z)
    return {"game": game_name, "method": method, "seed": seed, "diverged": r.diverged, "seconds": r.seconds,
            "steps": r.steps, "grad_x_norm": [m["grad_x_norm"] for m in r.metrics],
            "grad_y_norm": [m["grad_y_norm"] for m in r.metrics], "f": [m["f"] for m in r.metrics],
            "final": r.final, "samples": samples.tolist()}


def _cached(path: Path, resume: bool, fn):
    if resume and path.is_file():
        return json.loads(path.read_text())
    result = fn()
    atomic_write_text(path, json.dumps(jsonable(result)) + "\n")
    return result


def reproduce(out_dir, *, quick: bool, seeds: int | None, resume: bool, progress: bool, command: str,
              config: FTRConfig | None = None) -> dict:
    cfg = config or (FTRConfig.quick() if quick else FTRConfig())
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        cfg = replace(cfg, seeds=seeds)
    torch.set_num_threads(1)
    out = Path(out_dir)
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    stamp = out / "config.json"
    if resume and stamp.is_file() and json.loads(stamp.read_text()) != jsonable(asdict(cfg)):
        raise ValueError(f"--resume: {out} holds a run with other settings; use another --out or drop --resume")
    atomic_write_text(stamp, json.dumps(jsonable(asdict(cfg)), indent=2) + "\n")

    toys = {fn: {m: _cached(runs / f"toy_{fn}_{m.split()[0]}{'_cg' if 'CG' in m else ''}.json", resume,
                            lambda fn=fn, m=m: _run_toy(fn, m, cfg)) for m in TOY_METHODS} for fn in ("f1", "f2", "f3")}
    bilinear = {m: _cached(runs / f"bilinear_{m.split()[0]}{'_cg' if 'CG' in m else ''}.json", resume,
                           lambda m=m: _run_bilinear(m, cfg)) for m in ("GDA", "EG", "OGDA", "FR")}
    gans: dict[str, dict[str, list[dict]]] = {}
    for g in cfg.games:
        gans[g] = {}
        for m in GAN_METHODS:
            gans[g][m] = [_cached(runs / f"gan_{g}_{m}_seed{s}.json", resume,
                                  lambda g=g, m=m, s=s: _run_gan(g, m, s, cfg, progress)) for s in range(cfg.seeds)]

    summary = _summarize(toys, bilinear, gans)
    plots = _plots(out, cfg, toys, bilinear, gans)
    results = {"command": command, "config": asdict(cfg), "summary": summary,
               "toys": {fn: {m: {k: v for k, v in r.items() if k != "trajectory"} for m, r in d.items()}
                        for fn, d in toys.items()},
               "bilinear": bilinear,
               "gans": {g: {m: [{k: v for k, v in r.items() if k != "samples"} for r in rs] for m, rs in d.items()}
                        for g, d in gans.items()}}
    json_path = out / "results.json"
    atomic_write_text(json_path, json.dumps(jsonable(results), indent=1) + "\n")
    report = out / "report.md"
    atomic_write_text(report, _report(command, cfg, summary, plots))
    return {"report": report, "json": json_path, "plots": plots}


def _geo(values: list[float]) -> float:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(statistics.mean(math.log(v) for v in vals)) if vals else float("nan")


def _tail_median(values: list) -> float:
    """The median of the last quarter of a recorded curve (the curves oscillate: one final value
    can land on a peak or a trough)."""
    vals = [v for v in values if v is not None]
    vals = vals[-max(1, len(vals) // 4):]
    return statistics.median(vals) if vals else float("nan")


def _summarize(toys, bilinear, gans) -> dict:
    s: dict[str, Any] = {"toys": {fn: {m: {"final_norm": r["final_norm"], "diverged": r["diverged"],
                                           "final": r["final"]} for m, r in d.items()} for fn, d in toys.items()},
                         "bilinear": {m: {"start": r["distance"][0], "final": r["distance"][-1]}
                                      for m, r in bilinear.items()}}
    s["gans"] = {}
    for g, d in gans.items():
        s["gans"][g] = {}
        for m, rs in d.items():
            fin = [r["final"] for r in rs]
            tail = {k: [_tail_median(r[k]) for r in rs] for k in ("grad_x_norm", "grad_y_norm")}
            s["gans"][g][m] = {
                "seeds": len(rs), "diverged": sum(r["diverged"] for r in rs),
                "grad_x_norm_geomean": _geo([f.get("grad_x_norm") for f in fin]),
                "grad_y_norm_geomean": _geo([f.get("grad_y_norm") for f in fin]),
                "grad_x_norm_tail_median": tail["grad_x_norm"], "grad_y_norm_tail_median": tail["grad_y_norm"],
                "grad_x_norm_tail_geomean": _geo(tail["grad_x_norm"]),
                "grad_y_norm_tail_geomean": _geo(tail["grad_y_norm"]),
                "grad_x_norm": [f.get("grad_x_norm") for f in fin], "grad_y_norm": [f.get("grad_y_norm") for f in fin],
                "modes_covered": [f.get("modes_covered") for f in fin], "modes": fin[0].get("modes") if fin else None,
                "high_quality": [f.get("high_quality") for f in fin],
                "seconds": [r["seconds"] for r in rs],
            }
    return s


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "diverged (inf)"
    return f"{v:.3g}"


def _report(command: str, cfg: FTRConfig, s: dict, plots: list[Path]) -> str:
    lines = ["# Follow-the-Ridge (Wang, Zhang & Ba, ICLR 2020): reproduction", "", f"Command: `{command}`", "",
             f"Settings: `{json.dumps(asdict(cfg))}`", "",
             f"## Toy functions ({cfg.toy_steps} steps, step size {cfg.toy_lr}): final ||(x, y)||", "",
             "| method | f1 (origin is local minimax) | f2 (origin is not) | f3 (origin is local minimax) |",
             "| --- | --- | --- | --- |"]
    for m in TOY_METHODS:
        lines.append(f"| {m} | " + " | ".join(_fmt(s["toys"][fn][m]["final_norm"]) for fn in ("f1", "f2", "f3")) + " |")
    lines += ["", f"## Bilinear game f = xᵀAy ({cfg.bilinear_steps} steps): distance to the equilibrium", "",
              "| method | start | final |", "| --- | --- | --- |"]
    for m, r in s["bilinear"].items():
        lines.append(f"| {m} | {_fmt(r['start'])} | {_fmt(r['final'])} |")
    for g, d in s["gans"].items():
        lines += ["", f"## GAN `{g}` ({cfg.gan_steps} steps, RMSprop-preconditioned, step size {cfg.gan_lr}, "
                  f"{'alternating' if cfg.alternating else 'simultaneous'}, {cfg.seeds} seeds)", "",
                  "| method | ‖∇ₓf‖ final (geo-mean; per seed) | ‖∇ᵧf‖ final (geo-mean; per seed) | modes covered | "
                  "high-quality samples | diverged | seconds per run |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for m, r in d.items():
            modes = r["modes"]
            lines.append(
                f"| {m} | {_fmt(r['grad_x_norm_geomean'])} ({', '.join(_fmt(v) for v in r['grad_x_norm'])}) | "
                f"{_fmt(r['grad_y_norm_geomean'])} ({', '.join(_fmt(v) for v in r['grad_y_norm'])}) | "
                f"{', '.join(f'{v}/{modes}' for v in r['modes_covered'])} | "
                f"{', '.join(f'{v:.2f}' for v in r['high_quality'])} | {r['diverged']} | "
                f"{statistics.mean(r['seconds']):.0f} |")
        lines += ["", "Median of each run's last quarter of recorded gradient norms (geo-mean over seeds; per seed):",
                  "", "| method | ‖∇ₓf‖ | ‖∇ᵧf‖ |", "| --- | --- | --- |"]
        for m, r in d.items():
            cells = [f"{_fmt(r[f'{k}_tail_geomean'])} ({', '.join(_fmt(v) for v in r[f'{k}_tail_median'])})"
                     for k in ("grad_x_norm", "grad_y_norm")]
            lines.append(f"| {m} | {cells[0]} | {cells[1]} |")
        if "GDA" in d and "FR" in d:
            ratio_x = d["GDA"]["grad_x_norm_geomean"] / d["FR"]["grad_x_norm_geomean"]
            ratio_y = d["GDA"]["grad_y_norm_geomean"] / d["FR"]["grad_y_norm_geomean"]
            tx = d["GDA"]["grad_x_norm_tail_geomean"] / d["FR"]["grad_x_norm_tail_geomean"]
            ty = d["GDA"]["grad_y_norm_tail_geomean"] / d["FR"]["grad_y_norm_tail_geomean"]
            lines += ["", f"GDA / FR gradient norm (geometric means over seeds): final x {ratio_x:.3g}x, "
                      f"y {ratio_y:.3g}x; last-quarter median x {tx:.3g}x, y {ty:.3g}x (above 1: FR lower)."]
    lines += ["", "## Figures", ""] + [f"- `{p.name}`" for p in plots] + [""]
    return "\n".join(lines)


COLORS = {"GDA": "tab:blue", "EG": "tab:green", "OGDA": "tab:orange", "FR": "tab:red", "FR (CG, 2 iters)": "tab:purple"}
STYLES = {"GDA": "-", "EG": "--", "OGDA": ":", "FR": "-", "FR (CG, 2 iters)": "--"}
WIDTHS = {"GDA": 2.0, "EG": 2.0, "OGDA": 2.5, "FR": 3.5, "FR (CG, 2 iters)": 2.0}


def _plots(out: Path, cfg: FTRConfig, toys, bilinear, gans) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    # trajectories on the contours, like the paper's Figure 2
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, fn in zip(axes, ("f1", "f2", "f3")):
        game = toy(fn)
        w = game.plot_width
        grid = torch.linspace(-w, w, 241, dtype=torch.float64)
        X, Y = torch.meshgrid(grid, grid, indexing="xy")
        ax.contourf(X.numpy(), Y.numpy(), game.value(X, Y).numpy(), 30, cmap="gray")
        for m in ("GDA", "EG", "OGDA", "FR"):
            tr = toys[fn][m]["trajectory"]
            xs = [p[0] for p in tr if abs(p[0]) < 10 * w and abs(p[1]) < 10 * w]
            ys = [p[1] for p in tr if abs(p[0]) < 10 * w and abs(p[1]) < 10 * w]
            ax.plot(xs, ys, "-" if m == "FR" else "--", color=COLORS[m], lw=2, label=m, zorder=10 if m == "FR" else 2)
        ax.plot([game.start[0]], [game.start[1]], "^", color="red", ms=11, zorder=20, label="start")
        ax.plot([0], [0], "*", color="yellow", ms=13, mec="black", zorder=21, label="origin")
        ax.set_xlim(-w, w)
        ax.set_ylim(-w, w)
        ax.set_xlabel("x (minimizer)")
        ax.set_ylabel("y (maximizer)")
        ax.set_title({"f1": "f1 = -3x² - y² + 4xy", "f2": "f2 = 3x² + y² + 4xy", "f3": "f3 (paper's third function)"}[fn])
        ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    paths.append(out / "ftr_toy_trajectories.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # distance to the origin over iterations (log scale)
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    for ax, fn in zip(axes, ("f1", "f2", "f3")):
        for m, r in toys[fn].items():
            vals = [v if v > 0 else 1e-300 for v in r["norms"]]
            ax.plot(r["norm_steps"], vals, color=COLORS[m], lw=WIDTHS[m], ls=STYLES[m], label=m)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("‖(x, y)‖")
        ax.set_title(fn)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=9)
    ax = axes[3]
    for m, r in bilinear.items():
        ax.plot(r["steps"], r["distance"], color=COLORS[m], lw=WIDTHS[m], ls=STYLES[m], label=m)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("distance to equilibrium")
    ax.set_title("bilinear xᵀAy")
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / "ftr_toy_distance.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # GANs: gradient norms of both players over iterations, and samples
    for g, d in gans.items():
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
        for ax, key, title in ((axes[0], "grad_x_norm", "generator ‖∇ₓf‖"), (axes[1], "grad_y_norm", "discriminator ‖∇ᵧf‖")):
            for m, rs in d.items():
                for i, r in enumerate(rs):
                    ax.plot(r["steps"], [v if v is not None else float("nan") for v in r[key]], color=COLORS[m],
                            alpha=0.8, lw=1.5, label=m if i == 0 else None)
            ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_ylabel("gradient norm")
            ax.set_title(f"{g}: {title} ({len(d['GDA'])} seeds)")
            ax.grid(alpha=0.3)
            ax.legend()
        ax = axes[2]
        game = _gan(cfg, g)
        if game.dim == 1:
            bins = torch.linspace(-6, 6, 121).tolist()
            ax.hist(game.data[:1000, 0].tolist(), bins=bins, color="gray", alpha=0.5, label="data", density=True)
            for m, rs in d.items():
                ax.hist([s[0] for s in rs[0]["samples"]], bins=bins, histtype="step", lw=2, color=COLORS[m],
                        label=f"{m} (seed 0)", density=True)
            ax.set_xlabel("sample")
            ax.set_ylabel("density")
        else:
            ax.scatter(game.data[:1000, 0], game.data[:1000, 1], s=3, color="black", alpha=0.6, label="data", zorder=5)
            for m, rs in d.items():
                ax.scatter([s[0] for s in rs[0]["samples"]], [s[1] for s in rs[0]["samples"]], s=4, color=COLORS[m],
                           alpha=0.5, label=f"{m} (seed 0)")
            ax.set_xlabel("sample[0]")
            ax.set_ylabel("sample[1]")
            ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"{g}: generated samples after {cfg.gan_steps} steps")
        ax.legend(fontsize=9)
        fig.tight_layout()
        paths.append(out / f"ftr_gan_{g}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
