"""YellowFin on DeepOBS's ``quadratic_deep``: its defaults, the other choices, and what misleads its tuner.

``quadratic_deep`` (100 dimensions, Hessian eigenvalues 90 x U(0, 1) and 10 x U(30, 60), data
noise N(0, 0.6^2), batch 128, 700 steps) has everything YellowFin's SingleStep tuner needs to be
fed exactly: the true curvature range is the extreme eigenvalues of Q, the true gradient variance
C = E|g_B - grad F|^2 does not depend on theta (g_B - grad F = Q (mean(x) - mean(x_B))), and the
true distance to the optimum is |theta - mean(x_train)|. The script

1. runs YellowFin with its defaults (the authors' code, which the paper's experiments ran) and with
   each other choice (smoothed values applied, the initial values, the step cap, the clipping,
   linear curvature averages, tuning before the first step, the paper's algorithm listing), on 3
   seeds, beside momentum SGD at the learning rate the DeepOBS protocol chose
   (docs/bench.md: lr 0.00398, momentum 0.9);
2. records YellowFin's measurements along a default run beside their true values;
3. re-runs the defaults with one measurement at a time replaced by its true value (and all three),
   which shows which measurement misleads the tuner.

    python examples/yellowfin_quadratic_deep.py            # writes docs/methods/figures/yellowfin_quadratic_deep.{json,png}
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from l2o import tasks
from l2o.io import atomic_write_text, jsonable
from l2o.optim.yellowfin import YellowFin
from l2o.train import train

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "methods" / "figures"
LISTING = YellowFin.ALGORITHM_LISTING

VARIANTS = {
    "defaults (authors' code)": {},
    "smoothed values applied": dict(smoothed=True),
    "smoothed, init_lr=0.1": dict(smoothed=True, init_lr=0.1),
    "tune_first_step=True": dict(tune_first_step=True),
    "no step cap (max_move=None)": dict(max_move=None),
    "no clipping": dict(adaptive_clip=None, stat_clip=None),
    "linear curvature averages": dict(log_curvature=False),
    "no slow start": dict(slow_start=False),
    "paper's listing (ALGORITHM_LISTING)": LISTING,
    "listing, unsmoothed": {**LISTING, "smoothed": False},
    "listing, init_lr=0.1": {**LISTING, "init_lr": 0.1},
}


def true_quantities(task) -> dict:
    """The true curvature range, gradient variance and optimum of the training loss."""
    q = task.hessian.double()
    eig = torch.linalg.eigvalsh(q)
    x = task.data["train"].double()
    n, b = x.shape[0], task.batch_size
    centred = x - x.mean(0)
    population_cov = centred.T @ centred / n
    # a batch is a uniform random subset of size b (epochs without replacement)
    mean_cov = population_cov * (n - b) / (b * (n - 1))
    variance = float(torch.trace(q @ mean_cov @ q))
    return {"h_min": float(eig[0]), "h_max": float(eig[-1]), "variance": variance, "optimum": x.mean(0)}


class OracleYellowFin(YellowFin):
    """YellowFin whose SingleStep is fed some measurements' true values instead of its own."""

    def __init__(self, params, truth: dict, replace: tuple[str, ...], **kwargs):
        self.theta = params[0]
        self.truth, self.replace = truth, replace
        super().__init__(params, **kwargs)

    def _tune(self, h_min, h_max, variance, distance):
        if "curvature" in self.replace:
            h_min, h_max = self.truth["h_min"], self.truth["h_max"]
        if "variance" in self.replace:
            variance = self.truth["variance"]
        if "distance" in self.replace:
            distance = float((self.theta.detach().double() - self.truth["optimum"]).norm())
        return super()._tune(h_min, h_max, variance, distance)


def final_losses(task, make, seeds) -> list[float]:
    out = []
    for seed in seeds:
        result = train(task, make, seed=seed)
        out.append(math.nan if result.diverged else result.final_test["loss"])
    return out


def trace_run(task, truth, seed: int = 0) -> dict[str, list[float]]:
    """One default run, recording YellowFin's measurements and the true distance every step."""
    record = {k: [] for k in ("h_min", "h_max", "variance", "distance", "true_distance", "lr", "momentum",
                              "step_size", "sq_norm")}
    holder = {}

    def make(params):
        holder["opt"] = YellowFin(params)
        holder["theta"] = params[0]
        return holder["opt"]

    def hook(step, params):
        state = holder["opt"].tuner_state()
        for key in ("h_min", "h_max", "variance", "distance", "lr", "momentum", "step_size"):
            record[key].append(state[key])
        record["true_distance"].append(float((params["theta"].detach().double() - truth["optimum"]).norm()))

    train(task, make, seed=seed, params_hook=hook)
    return record


def plot(trace, truth, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(trace["h_min"]) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0), layout="constrained")
    ax = axes[0]
    ax.plot(steps, trace["h_max"], label="measured $h_{\\max}$ (from $\\|g\\|^2$)")
    ax.plot(steps, trace["h_min"], label="measured $h_{\\min}$")
    ax.axhline(truth["h_max"], color="k", ls="--", label=f"true $\\lambda_{{\\max}}$ = {truth['h_max']:.3g}")
    ax.axhline(truth["h_min"], color="k", ls=":", label=f"true $\\lambda_{{\\min}}$ = {truth['h_min']:.2g}")
    ax.set(yscale="log", xlabel="step", ylabel="curvature", title="curvature range")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(steps, trace["variance"], label="measured C")
    ax.axhline(truth["variance"], color="k", ls="--", label=f"true C = {truth['variance']:.3g}")
    ax.set(yscale="log", xlabel="step", ylabel="gradient variance", title="variance")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(steps, trace["distance"], label="measured D")
    ax.plot(steps, trace["true_distance"], "k--", label="true $\\|\\theta-\\theta^*\\|$")
    ax.set(yscale="log", xlabel="step", ylabel="distance", title="distance to the optimum")
    ax.legend(fontsize=8)
    fig.suptitle("YellowFin's measurements on quadratic_deep (defaults, seed 0) against their true values")
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=FIGURES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    task = tasks.get("quadratic_deep")
    truth = true_quantities(task)
    seeds = list(range(args.seeds))
    results: dict = {"seeds": seeds, "true": {k: v for k, v in truth.items() if k != "optimum"}, "variants": {},
                     "oracle": {}}
    print(f"true curvature range [{truth['h_min']:.4g}, {truth['h_max']:.4g}], true variance C = "
          f"{truth['variance']:.4g}, initial distance {float((torch.ones(100) - truth['optimum']).norm()):.4g}")
    print(f"final test loss, mean over seeds {seeds} (per seed)")
    momentum = final_losses(task, lambda p: torch.optim.SGD(p, lr=0.00398, momentum=0.9), seeds)
    results["momentum lr=0.00398"] = momentum
    print(f"  {'momentum SGD lr=0.00398 (DeepOBS protocol choice)':52s} {np.mean(momentum):8.2f}  "
          f"({', '.join(f'{v:.2f}' for v in momentum)})")
    for name, kwargs in VARIANTS.items():
        losses = final_losses(task, lambda p, kw=kwargs: YellowFin(p, **kw), seeds)
        results["variants"][name] = {"kwargs": kwargs, "test_loss": losses}
        print(f"  YellowFin {name:42s} {np.mean(losses):8.2f}  ({', '.join(f'{v:.4g}' for v in losses)})",
              flush=True)
    print("defaults with true values fed to SingleStep instead of the measured ones:")
    for replace in (("curvature",), ("variance",), ("distance",), ("curvature", "distance"),
                    ("curvature", "variance", "distance")):
        losses = final_losses(task, lambda p, r=replace: OracleYellowFin(p, truth, r), seeds)
        label = "true " + " + ".join(replace)
        results["oracle"][label] = losses
        print(f"  {label:52s} {np.mean(losses):8.2f}  ({', '.join(f'{v:.4g}' for v in losses)})", flush=True)
    trace = trace_run(task, truth)
    results["trace_seed0"] = trace
    for step in (1, 10, 100, 300, 700):
        i = step - 1
        print(f"  step {step:3d}: h_min {trace['h_min'][i]:.3g} h_max {trace['h_max'][i]:.3g} C {trace['variance'][i]:.3g}"
              f" D {trace['distance'][i]:.3g} (true {trace['true_distance'][i]:.3g})  alpha {trace['lr'][i]:.3g}"
              f" mu {trace['momentum'][i]:.3g} step size {trace['step_size'][i]:.3g}")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(trace, truth, args.out / "yellowfin_quadratic_deep.png")
    results["command"] = "python examples/yellowfin_quadratic_deep.py"
    results["seconds"] = time.time() - start
    atomic_write_text(args.out / "yellowfin_quadratic_deep.json", json.dumps(jsonable(results), indent=1))
    print(f"wrote {args.out / 'yellowfin_quadratic_deep.png'} and .json ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
