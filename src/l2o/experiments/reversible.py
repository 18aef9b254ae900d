"""`l2o reproduce reversible`: Maclaurin, Duvenaud & Adams (2015) §4.1 on digits.

A 64-50-50-10 tanh network is trained for ``T`` steps of SGD with momentum on scikit-learn's
digits. Its learning rates, one per step and per layer, are meta-learned from a constant start by
gradient descent (Adam on the log learning rates) on the validation loss after training, with the
exact reversible hypergradients of :mod:`l2o.hyper.reversible`. The learned schedule is compared
with the best constant learning rate of a grid (chosen on the same validation loss and training
seed), then both are re-run on fresh seeds (new initializations and minibatch orders) and scored on
the held-out test split. The run also checks the hypergradient against autograd through the
unrolled run and records the information buffer's size against storing every iterate.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from l2o.hyper.imaml import Adam
from l2o.hyper.reversible import (ChaoticHypergradientWarning, Hyperparameters, layer_groups, reversible_hypergradient,
                                  unrolled_hypergradient)
from l2o.io import atomic_write_text, jsonable, load_tensors, save_tensors
from l2o.tasks.base import init_linear_layers


@dataclass(frozen=True)
class ReversibleConfig:
    hidden: int = 50
    steps: int = 100
    batch_size: int = 50
    momentum: float = 0.9
    lr_grid: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    meta_iterations: int = 40
    meta_lr: float = 0.04
    train_seed: int = 0
    eval_seeds: tuple[int, ...] = (101, 102, 103, 104, 105)
    n_train: int = 1000
    check_steps: int = 10

    @classmethod
    def quick(cls) -> ReversibleConfig:
        return cls(hidden=20, steps=20, lr_grid=(1.0, 2.0, 4.0, 8.0, 16.0), meta_iterations=4, eval_seeds=(101, 102),
                   check_steps=5)


class DigitsProblem:
    """The 64-hidden-hidden-10 tanh network on digits in float64: train/validation/test splits."""

    def __init__(self, config: ReversibleConfig):
        from l2o.data.digits import load_digits_split

        x, y, x_test, y_test = load_digits_split(seed=0)
        n = config.n_train
        self.x_train, self.y_train = x[:n].double(), y[:n]
        self.x_val, self.y_val = x[n:].double(), y[n:]
        self.x_test, self.y_test = x_test.double(), y_test
        self.sizes = [64, config.hidden, config.hidden, 10]
        self.config = config

    def forward(self, params, x):
        layers = len(self.sizes) - 1
        for i in range(layers):
            x = torch.nn.functional.linear(x, params[f"layer{i}.weight"], params[f"layer{i}.bias"])
            if i < layers - 1:
                x = torch.tanh(x)
        return x

    def loss(self, params, batch):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.forward(params, x), y)

    def val_loss(self, params):
        return self.loss(params, (self.x_val, self.y_val))

    def inputs(self, seed: int, steps: int):
        gen = torch.Generator().manual_seed(int(seed))
        raw = {k: v.double() for k, v in init_linear_layers(self.sizes, gen).items()}
        n = self.x_train.shape[0]
        batches = []
        for _ in range(steps):
            idx = torch.randint(0, n, (self.config.batch_size,), generator=gen)
            batches.append((self.x_train[idx], self.y_train[idx]))
        return raw, batches

    def train(self, hyper: Hyperparameters, seed: int) -> dict[str, float]:
        """Plain float64 SGD with momentum under ``hyper`` (same update as the reversible run)."""
        raw, batches = self.inputs(seed, hyper.lr.shape[0])
        groups = layer_groups(list(raw))
        group_of = {n: gi for gi, g in enumerate(groups) for n in g}
        w = {n: hyper.init_scale[group_of[n]] * v for n, v in raw.items()}
        v = {n: torch.zeros_like(t) for n, t in w.items()}
        for t, batch in enumerate(batches):
            params = {n: x.clone().requires_grad_(True) for n, x in w.items()}
            grads = torch.autograd.grad(self.loss(params, batch), list(params.values()))
            for (n, _), g in zip(params.items(), grads):
                gi = group_of[n]
                v[n] = hyper.momentum[t, gi] * v[n] - (1 - hyper.momentum[t, gi]) * g
                w[n] = w[n] + hyper.lr[t, gi] * v[n]
        with torch.no_grad():
            out = self.forward(w, self.x_test)
            return {"val_loss": float(self.val_loss(w)),
                    "train_loss": float(self.loss(w, (self.x_train, self.y_train))),
                    "test_loss": float(torch.nn.functional.cross_entropy(out, self.y_test)),
                    "test_accuracy": float((out.argmax(-1) == self.y_test).double().mean())}


def _hyper(log_lr: torch.Tensor, config: ReversibleConfig) -> Hyperparameters:
    steps, groups = log_lr.shape
    base = Hyperparameters.constant(steps, groups, lr=1.0, momentum=config.momentum)
    base.lr = log_lr.exp()
    return base


def meta_learn(problem: DigitsProblem, config: ReversibleConfig, start_lr: float, out_dir: Path, *,
               resume: bool, progress: bool) -> dict[str, Any]:
    """Adam on the log learning rates ([steps, layers]) with reversible hypergradients; checkpointed
    after every meta-iteration (``meta_checkpoint.safetensors``)."""
    from tqdm import tqdm

    raw, batches = problem.inputs(config.train_seed, config.steps)
    groups = layer_groups(list(raw))
    log_lr = torch.full((config.steps, len(groups)), math.log(start_lr), dtype=torch.float64)
    opt = Adam({"log_lr": log_lr}, config.meta_lr)
    history: list[dict[str, Any]] = []
    path = out_dir / "meta_checkpoint.safetensors"
    # what the checkpoint must agree on to be continued (more meta-iterations may be asked for)
    signature = {**{k: v for k, v in asdict(config).items() if k not in ("meta_iterations", "eval_seeds")},
                 "start_lr": start_lr}
    if resume and path.is_file():
        tensors, meta = load_tensors(path)
        if meta.get("signature") != jsonable(json.loads(json.dumps(signature))):
            raise ValueError(f"{path} was written by another configuration; remove it or run without --resume")
        log_lr = tensors["log_lr"]
        opt.load_tensors(tensors, meta["adam_t"])
        history = meta["history"]
    bar = tqdm(range(len(history), config.meta_iterations), disable=not progress, desc="meta-learning schedules")
    for it in bar:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ChaoticHypergradientWarning)
            result = reversible_hypergradient(problem.loss, raw, batches, _hyper(log_lr, config), problem.val_loss,
                                              groups=groups)
        grad = result.grads["lr"] * log_lr.exp()  # chain rule to log learning rates
        history.append({"iteration": it, "val_loss": result.meta_loss, "exact_reversal": result.exact_reversal,
                        "growth": result.growth, "grad_norm": float(grad.norm()),
                        "chaotic": any(issubclass(w.category, ChaoticHypergradientWarning) for w in caught)})
        log_lr = opt.step({"log_lr": log_lr}, {"log_lr": grad})["log_lr"]
        bar.set_postfix(val_loss=f"{result.meta_loss:.4f}")
        save_tensors(path, {"log_lr": log_lr, **opt.state_tensors()},
                     {"adam_t": opt.t, "history": jsonable(history), "signature": jsonable(signature)})
    final = reversible_hypergradient(problem.loss, raw, batches, _hyper(log_lr, config), problem.val_loss,
                                     groups=groups, track_buffer=True)
    history.append({"iteration": config.meta_iterations, "val_loss": final.meta_loss,
                    "exact_reversal": final.exact_reversal, "growth": final.growth, "grad_norm": None, "chaotic": False})
    params = sum(v.numel() for v in raw.values())
    memory = {"parameters": params, "steps": config.steps, "buffer_bits_per_step": final.buffer_bits,
              "buffer_bits": final.buffer_bits[-1], "buffer_bytes_python_ints": final.buffer_bytes,
              "iterates_bytes_float64": config.steps * 2 * params * 8,
              "bits_per_element_step": final.buffer_bits[-1] / (params * config.steps),
              "log2_inverse_momentum": math.log2(1 / config.momentum)}
    return {"log_lr": log_lr, "history": history, "memory": memory, "groups": [".".join(g) for g in groups]}


def check_against_unrolled(problem: DigitsProblem, config: ReversibleConfig) -> dict[str, Any]:
    """The reversible hypergradient against autograd through the unrolled run, on the real network."""
    raw, batches = problem.inputs(config.train_seed, config.check_steps)
    groups = layer_groups(list(raw))
    gen = torch.Generator().manual_seed(5)
    hyper = Hyperparameters.constant(config.check_steps, len(groups), lr=1.0, momentum=config.momentum, l2=1e-3)
    hyper.lr = hyper.lr * (0.5 + torch.rand(hyper.lr.shape, generator=gen, dtype=torch.float64))
    hyper.momentum = hyper.momentum - 0.2 * torch.rand(hyper.lr.shape, generator=gen, dtype=torch.float64)
    rev = reversible_hypergradient(problem.loss, raw, batches, hyper, problem.val_loss, groups=groups)
    ref = unrolled_hypergradient(problem.loss, raw, batches, hyper, problem.val_loss, groups=groups)
    errors = {k: float((rev.grads[k] - ref.grads[k]).abs().max() / ref.grads[k].abs().max().clamp_min(1e-300))
              for k in ("lr", "momentum", "init_scale", "l2")}
    return {"steps": config.check_steps, "max_relative_error": errors, "exact_reversal": rev.exact_reversal}


def plot(results: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    lr = torch.tensor(results["learned_lr"])
    steps = range(1, lr.shape[0] + 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for gi, name in enumerate(results["groups"]):
        axes[0].plot(steps, lr[:, gi], label=f"layer {gi + 1} ({name.split('.')[0]})", color=colors[gi])
    axes[0].axhline(results["best_constant_lr"], color="gray", ls="--", label="constant start (best of grid)")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("learning rate")
    axes[0].set_title("meta-learned learning-rate schedules")
    axes[0].legend(fontsize=8)
    hist = results["meta_history"]
    axes[1].plot([h["iteration"] for h in hist], [h["val_loss"] for h in hist], marker=".", label="learned schedule")
    axes[1].axhline(results["grid"][repr(results["best_constant_lr"])], color="gray", ls="--",
                    label="best constant learning rate")
    axes[1].set_xlabel("meta-iteration")
    axes[1].set_ylabel("validation loss after training")
    axes[1].set_title("meta-objective")
    axes[1].legend(fontsize=8)
    grid = results["grid"]
    xs = [float(k) for k in grid]
    ys = [grid[k] if grid[k] is not None else float("nan") for k in grid]
    axes[2].plot(xs, ys, marker="o", label="constant learning rate")
    axes[2].axhline(hist[-1]["val_loss"], color=colors[1], ls="-", label="meta-learned schedule")
    axes[2].set_xscale("log", base=2)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("constant learning rate")
    axes[2].set_ylabel("validation loss after training")
    axes[2].set_title("grid of constants (training seed)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "reversible_schedules.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def reproduce(out_dir, *, quick: bool, seeds: int | None, resume: bool, progress: bool, command: str) -> dict:
    torch.set_num_threads(1)
    config = ReversibleConfig.quick() if quick else ReversibleConfig()
    if seeds is not None:
        config = ReversibleConfig(**{**asdict(config), "eval_seeds": tuple(range(101, 101 + seeds))})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problem = DigitsProblem(config)
    groups = len(problem.sizes) - 1
    grid = {}
    for lr in config.lr_grid:
        hyper = Hyperparameters.constant(config.steps, groups, lr=lr, momentum=config.momentum)
        score = problem.train(hyper, config.train_seed)["val_loss"]
        grid[repr(lr)] = score if math.isfinite(score) else None
    finite = {k: v for k, v in grid.items() if v is not None}
    if not finite:
        raise ValueError("every constant learning rate of the grid diverged")
    best_key = min(finite, key=finite.get)
    best_lr = float(best_key)
    at_edge = best_lr in (min(config.lr_grid), max(config.lr_grid))
    learned = meta_learn(problem, config, best_lr, out_dir, resume=resume, progress=progress)
    learned_hyper = _hyper(learned["log_lr"], config)
    constant_hyper = Hyperparameters.constant(config.steps, groups, lr=best_lr, momentum=config.momentum)
    evaluation = {"learned": [problem.train(learned_hyper, s) for s in config.eval_seeds],
                  "best_constant": [problem.train(constant_hyper, s) for s in config.eval_seeds]}
    check = check_against_unrolled(problem, config)

    def summary(runs, key):
        values = [r[key] for r in runs]
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))
        return {"mean": mean, "std": std, "values": values}

    results = {
        "config": asdict(config), "command": command, "groups": learned["groups"], "grid": grid,
        "best_constant_lr": best_lr, "best_at_grid_edge": at_edge,
        "learned_lr": learned["log_lr"].exp().tolist(), "meta_history": learned["history"],
        "train_seed": {"best_constant_val_loss": grid[best_key], "learned_val_loss": learned["history"][-1]["val_loss"]},
        "eval_seeds": {name: {k: summary(runs, k) for k in ("val_loss", "test_loss", "test_accuracy", "train_loss")}
                       for name, runs in evaluation.items()},
        "all_reversals_exact": all(h["exact_reversal"] for h in learned["history"]),
        "chaotic_iterations": sum(bool(h["chaotic"]) for h in learned["history"]),
        "memory": learned["memory"], "check_vs_unrolled": check,
    }
    json_path = out_dir / "results.json"
    atomic_write_text(json_path, json.dumps(jsonable(results), indent=1, allow_nan=False))
    plot_path = plot(results, out_dir)
    report = out_dir / "report.md"
    atomic_write_text(report, format_report(results))
    return {"report": report, "json": json_path, "plots": [plot_path]}


def format_report(r: dict[str, Any]) -> str:
    c = r["config"]
    ev = r["eval_seeds"]
    mem = r["memory"]
    fmt = lambda s: f"{s['mean']:.4f} ± {s['std']:.4f}"  # noqa: E731
    lines = [
        "# Reversible learning: meta-learned learning-rate schedules (Maclaurin et al. 2015, §4.1)", "",
        f"Command: `{r['command']}`", "",
        f"Network 64-{c['hidden']}-{c['hidden']}-10 (tanh) on digits, {c['steps']} steps of SGD with momentum "
        f"{c['momentum']} (batch {c['batch_size']}, {c['n_train']} training images); learning rates per step and "
        f"per layer meta-learned by Adam (lr {c['meta_lr']}) on log learning rates for {c['meta_iterations']} "
        f"meta-iterations from the best constant of the grid {list(c['lr_grid'])} "
        f"(best: {r['best_constant_lr']}{', at the grid edge' if r['best_at_grid_edge'] else ''}).", "",
        "| | validation loss (training seed) | test loss (fresh seeds) | test accuracy (fresh seeds) |",
        "| --- | --- | --- | --- |",
        f"| best constant lr {r['best_constant_lr']} | {r['train_seed']['best_constant_val_loss']:.4f} | "
        f"{fmt(ev['best_constant']['test_loss'])} | {fmt(ev['best_constant']['test_accuracy'])} |",
        f"| meta-learned schedule | {r['train_seed']['learned_val_loss']:.4f} | {fmt(ev['learned']['test_loss'])} | "
        f"{fmt(ev['learned']['test_accuracy'])} |", "",
        f"Fresh seeds (new initializations and minibatch orders): {list(c['eval_seeds'])}; mean ± std.", "",
        f"Every reverse pass recovered the initial weights bit for bit: {r['all_reversals_exact']}. "
        f"Meta-iterations flagged chaotic: {r['chaotic_iterations']}.", "",
        f"Hypergradient vs autograd through the unrolled run ({r['check_vs_unrolled']['steps']} steps, random "
        "per-step learning rates and momenta, L2 1e-3): max relative error "
        + ", ".join(f"{k} {v:.1e}" for k, v in r["check_vs_unrolled"]["max_relative_error"].items()) + ".", "",
        f"Memory ({mem['parameters']} parameters, {mem['steps']} steps): information buffer {mem['buffer_bits']} bits "
        f"({mem['bits_per_element_step']:.3f} bits per element and step; log2(1/momentum) = "
        f"{mem['log2_inverse_momentum']:.3f}), {mem['buffer_bytes_python_ints']} bytes as held here (Python "
        f"integers), against {mem['iterates_bytes_float64']} bytes to store every float64 weight and velocity.", "",
    ]
    return "\n".join(lines)
