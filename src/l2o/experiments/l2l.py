"""Reproduce "Learning to learn by gradient descent by gradient descent" (Andrychowicz et al. 2016).

``l2o reproduce l2l`` runs :func:`run`:

1. Meta-trains the coordinatewise LSTM optimizer on ``digits_mlp`` (one hidden layer of 20
   sigmoid units, minibatches of 128, 100 steps) by truncated BPTT, and a second one on the
   10-dimensional quadratic family, as the paper does for each problem class.
2. Tunes each baseline (SGD, NAG, RMSprop, Adam) per setting with a learning-rate grid, on
   tuning seeds disjoint from the evaluation seeds, by the reported criterion.
3. Evaluates every optimizer — the LSTM through ``l2o.LearnedOptimizer`` and the baselines —
   with the same loop (:func:`l2o.train.train`) on the evaluation seeds, in the training
   setting and in the paper's transfer settings: 200 steps, 40 hidden units, 2 hidden layers,
   ReLU instead of sigmoid; and on the quadratic.
4. Writes ``report.md`` (table), ``results.json`` (all curves), one PNG of loss curves per
   setting and ``loss_curves.png`` (all settings), and the trained weights with model cards.

The reported number, "final loss", is the optimizee's loss on its whole training set after the
last step (for the quadratic, f(theta_T)); learning rates are tuned on the mean of that same
number over the tuning seeds. Curves are the minibatch training loss at every step, as the
paper plots.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from l2o.learned.base import LearnedRule
from l2o.tasks.base import Task

#: name -> (title, task kind, task kwargs, steps)
SETTINGS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "train": ("Training setting: 1x20 sigmoid, 100 steps", "digits", {}, 100),
    "steps200": ("200 steps", "digits", {}, 200),
    "hidden40": ("40 hidden units", "digits", {"hidden": 40}, 100),
    "layers2": ("2 hidden layers", "digits", {"layers": 2}, 100),
    "relu": ("ReLU instead of sigmoid", "digits", {"activation": "relu"}, 100),
    "quadratic": ("Quadratic, 10-dim (its own LSTM)", "quadratic", {}, 100),
}

BASELINES: dict[str, Callable[[list, float], torch.optim.Optimizer]] = {
    "SGD": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "NAG": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
    "RMSprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "Adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}
LSTM_NAME = "L2L (LSTM)"

# Seed streams: evaluation, tuning and meta-training never share a seed.
EVAL_SEED0 = 10_000
TUNE_SEED0 = 20_000
QUADRATIC_TASK_SEED0 = 30_000


def _half_decades(low: int, high: int) -> tuple[float, ...]:
    return tuple(float(f"{10 ** (k / 2):.6g}") for k in range(2 * low, 2 * high + 1))


@dataclass
class L2LConfig:
    """Settings of the reproduction (defaults: the full run).

    Attributes:
        seeds: evaluation seeds per setting and optimizer.
        tune_seeds: seeds on which each baseline's learning rate is chosen.
        lr_grid: the learning rates tried for every baseline.
        digits_outer_steps, quadratic_outer_steps: meta-updates (truncations) of each LSTM.
        unroll, horizon, meta_lr: truncated BPTT settings (paper: 20, 100, 1e-3).
        preprocess_p, output_scale: the LSTM's gradient preprocessing and output scale.
        val_every, val_episodes, checkpoint_every: meta-training bookkeeping.
        seed: seeds meta-training.
        settings: which settings to evaluate.
    """

    seeds: int = 10
    tune_seeds: int = 3
    lr_grid: tuple[float, ...] = _half_decades(-4, 1)
    digits_outer_steps: int = 2000
    quadratic_outer_steps: int = 500
    unroll: int = 20
    horizon: int = 100
    meta_lr: float = 1e-2
    preprocess_p: float = 10.0
    output_scale: float = 0.1
    val_every: int = 100
    val_episodes: int = 4
    checkpoint_every: int = 50
    seed: int = 0
    settings: tuple[str, ...] = tuple(SETTINGS)

    @classmethod
    def quick(cls) -> L2LConfig:
        """A smoke-test configuration (about a minute): few seeds, decades only, short meta-training."""
        return cls(seeds=3, tune_seeds=1, lr_grid=tuple(10.0 ** k for k in range(-4, 2)),
                   digits_outer_steps=100, quadratic_outer_steps=50, val_every=25, val_episodes=2,
                   checkpoint_every=25)

    def __post_init__(self):
        if self.seeds < 1 or self.tune_seeds < 1:
            raise ValueError(f"seeds and tune_seeds must be >= 1, got {self.seeds}, {self.tune_seeds}")
        unknown = [s for s in self.settings if s not in SETTINGS]
        if unknown:
            raise ValueError(f"unknown settings {unknown}; available: {list(SETTINGS)}")
        if not self.lr_grid or min(self.lr_grid) <= 0:
            raise ValueError(f"lr_grid must be non-empty and positive, got {self.lr_grid}")


# ---------------------------------------------------------------------------------------------
# Tasks and meta-training


def make_task(setting: str, seed: int) -> Task:
    """The optimizee of ``setting`` for evaluation seed ``seed`` (the quadratic draws W, y per seed)."""
    _, kind, kwargs, steps = SETTINGS[setting]
    if kind == "quadratic":
        from l2o.tasks.quadratic import QuadraticTask

        return QuadraticTask(seed=QUADRATIC_TASK_SEED0 + seed, steps=steps, **kwargs)
    return _digits_task(steps=steps, **kwargs)


_DIGITS_CACHE: dict[tuple, Task] = {}


def _digits_task(**kwargs) -> Task:
    from l2o.tasks.digits import DigitsMLP

    key = tuple(sorted(kwargs.items()))
    if key not in _DIGITS_CACHE:
        _DIGITS_CACHE[key] = DigitsMLP(**kwargs)
    return _DIGITS_CACHE[key]


def meta_config(kind: str, config: L2LConfig):
    """The :class:`~l2o.meta.trainer.MetaConfig` of the paper's meta-training on ``kind``: truncated
    BPTT on one unstacked task per episode, the sum of the optimizee losses as the meta-loss,
    Adam, no clipping; validation by the mean loss over the horizon."""
    from l2o.meta.trainer import MetaConfig

    outer_steps = config.digits_outer_steps if kind == "digits" else config.quadratic_outer_steps
    return MetaConfig(estimator="bptt", meta_loss="sum", outer_steps=outer_steps, batch_size=None, groups=1,
                      unroll=config.unroll, horizon=config.horizon, meta_lr=config.meta_lr, clip=None,
                      checkpoint_every=config.checkpoint_every, val_every=config.val_every,
                      val_episodes=config.val_episodes, val_steps=None, seed=config.seed, max_rollbacks=10)


def meta_train(kind: str, config: L2LConfig, directory: Path | None, resume: bool = False,
               progress: bool = True):
    """Meta-train an LSTM rule on ``kind`` ("digits" or "quadratic"); returns (rule holding the
    best-on-validation weights, summary, meta-training config)."""
    from l2o.learned.lstm import LSTMRule
    from l2o.meta.trainer import MetaTrainer

    if kind == "digits":
        from l2o.tasks.digits import DigitsMLPFamily

        family = DigitsMLPFamily()
    elif kind == "quadratic":
        from l2o.tasks.quadratic import QuadraticFamily

        family = QuadraticFamily()
    else:
        raise ValueError(f"kind must be 'digits' or 'quadratic', got {kind!r}")
    if config.horizon % config.unroll:
        raise ValueError(f"horizon ({config.horizon}) must be a multiple of unroll ({config.unroll})")
    torch.manual_seed(config.seed)  # the LSTM's initial weights
    rule = LSTMRule(preprocess_p=config.preprocess_p, output_scale=config.output_scale)
    meta = meta_config(kind, config)
    trainer = MetaTrainer(rule, family, meta, directory=directory)
    summary = trainer.train(resume=resume, progress_bar=progress)
    rule.load_state_dict(trainer.best_state())
    return rule, summary, meta


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class RunSet:
    """One optimizer (at one learning rate) on one setting, over seeds."""

    final: list[float] = field(default_factory=list)  # final full-train-set loss per seed (inf if diverged)
    curves: list[list[float]] = field(default_factory=list)  # minibatch loss per step per seed
    diverged: int = 0

    @property
    def stats(self):
        from l2o.compare import summarize

        return summarize(self.final)

    @property
    def mean(self) -> float:
        return self.stats.mean if self.final else math.inf

    @property
    def std(self) -> float:
        return self.stats.std


def run_once(setting: str, make_optimizer: Callable[[list], torch.optim.Optimizer], seed: int):
    """Train ``setting``'s task with ``make_optimizer`` on ``seed`` (the shared loop); the result
    and its final loss (inf when it diverged)."""
    from l2o.train import train

    result = train(make_task(setting, seed), make_optimizer, steps=SETTINGS[setting][3], seed=seed)
    return result, (math.inf if result.diverged else float(result.final_train["loss"]))


def run_optimizer(setting: str, make_optimizer: Callable[[list], torch.optim.Optimizer], seeds: list[int],
                  keep_curves: bool = True) -> RunSet:
    """Train ``setting``'s task with ``make_optimizer`` once per evaluation seed."""
    from l2o.compare import run_seeds

    runs = RunSet()
    for result, final in run_seeds(lambda seed: run_once(setting, make_optimizer, seed), seeds):
        runs.final.append(final)
        runs.diverged += int(result.diverged)
        if keep_curves:
            runs.curves.append(result.losses)
    return runs


def tune(setting: str, name: str, config: L2LConfig) -> tuple[float, dict[str, float]]:
    """Choose ``name``'s learning rate on the tuning seeds (:func:`l2o.compare.tune`: the lowest
    mean final loss wins, ties to the smaller rate)."""
    from l2o.compare import tune as tune_grid

    seeds = [TUNE_SEED0 + i for i in range(config.tune_seeds)]
    result = tune_grid(sorted(config.lr_grid),
                       lambda lr, seed: run_once(setting, lambda params: BASELINES[name](params, lr), seed)[1],
                       seeds, key=repr)
    scores = {repr(lr): result.scores[repr(lr)] for lr in config.lr_grid}
    return result.best, scores


def evaluate_setting(setting: str, rule: LearnedRule, config: L2LConfig) -> dict[str, Any]:
    """Tune the baselines and evaluate everything on ``setting``; JSON-ready results."""
    from l2o.learned.optimizer import LearnedOptimizer

    seeds = [EVAL_SEED0 + i for i in range(config.seeds)]
    out: dict[str, Any] = {"title": SETTINGS[setting][0], "steps": SETTINGS[setting][3], "optimizers": {}}
    for name in BASELINES:
        lr, scores = tune(setting, name, config)
        runs = run_optimizer(setting, lambda params, lr=lr: BASELINES[name](params, lr), seeds)
        out["optimizers"][name] = {"lr": lr, "tuning": scores, **_runs_json(runs)}
    runs = run_optimizer(setting, lambda params: LearnedOptimizer(params, rule=rule), seeds)
    out["optimizers"][LSTM_NAME] = {"lr": None, **_runs_json(runs)}
    return out


def _runs_json(runs: RunSet) -> dict[str, Any]:
    return {"final_mean": runs.mean, "final_std": runs.std, "final": runs.final, "diverged": runs.diverged,
            "curves": runs.curves}


# ---------------------------------------------------------------------------------------------
# Report


def best_baseline(result: dict[str, Any]) -> str:
    """Name of the baseline with the lowest mean final loss in one setting's results."""
    return min(BASELINES, key=lambda n: result["optimizers"][n]["final_mean"])


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """The Markdown table: final loss mean ± std per optimizer (rows) and setting (columns)."""
    settings = list(results)
    header = "| optimizer | " + " | ".join(results[s]["title"] for s in settings) + " |"
    lines = [header, "|" + "---|" * (len(settings) + 1)]
    for name in [*BASELINES, LSTM_NAME]:
        cells = []
        for s in settings:
            r = results[s]["optimizers"][name]
            text = _fmt(r["final_mean"], r["final_std"], r["diverged"], len(r["final"]))
            if name in BASELINES:
                text += f" (lr {r['lr']:g})"
            if name == LSTM_NAME or name == best_baseline(results[s]):
                winner = min([*BASELINES, LSTM_NAME], key=lambda n: results[s]["optimizers"][n]["final_mean"])
                if winner == name:
                    text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(mean: float, std: float, diverged: int, n: int) -> str:
    from l2o.compare import Stats, format_stats

    return format_stats(Stats(mean, std, math.nan, n, diverged), runs=n)


def plot_curves(results: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per setting (mean minibatch loss ± std band, log scale) and one with all settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    colors = {"SGD": "tab:gray", "NAG": "tab:green", "RMSprop": "tab:purple", "Adam": "tab:blue", LSTM_NAME: "tab:red"}

    def draw(ax, setting):
        r = results[setting]
        for name, data in r["optimizers"].items():
            curves = [c for c in data["curves"] if len(c) == r["steps"]]
            if not curves:
                continue
            arr = np.asarray(curves, dtype=float)
            mean = arr.mean(0)
            low, high = np.percentile(arr, 10, axis=0), np.percentile(arr, 90, axis=0)
            steps = np.arange(1, arr.shape[1] + 1)
            label = name if data["lr"] is None else f"{name} (lr {data['lr']:g})"
            ax.plot(steps, mean, color=colors.get(name), label=label, lw=2 if data["lr"] is None else 1.3)
            ax.fill_between(steps, low, high, color=colors.get(name), alpha=0.12)
        ax.set_yscale("log")
        ax.set_title(r["title"], fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (minibatch)" if SETTINGS[setting][1] == "digits" else "f(θ)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)

    paths = []
    for setting in results:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        draw(ax, setting)
        fig.tight_layout()
        path = out_dir / f"curves_{setting}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    n = len(results)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
    for ax, setting in zip(axes.flat, results):
        draw(ax, setting)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Learned LSTM optimizer vs tuned baselines (mean over seeds; band: 10th-90th percentile)")
    fig.tight_layout()
    path = out_dir / "loss_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
    return paths


def write_report(results: dict, meta: dict, out_dir: Path, command: str) -> Path:
    table = format_table(results)
    lines = [
        "# Learning to learn by gradient descent by gradient descent: reproduction",
        "",
        f"Command: `{command}`",
        "",
        "Final loss = the optimizee's loss on its whole training set after the last step "
        "(quadratic: f(θ_T)); mean ± std over "
        f"{meta['config']['seeds']} evaluation seeds. Baselines' learning rates were chosen from "
        f"{len(meta['config']['lr_grid'])} values ({min(meta['config']['lr_grid']):g} … "
        f"{max(meta['config']['lr_grid']):g}) per setting on {meta['config']['tune_seeds']} separate tuning "
        "seeds by the same criterion. Bold: lowest mean in the column. "
        "The LSTM was meta-trained only in the training setting (and separately on quadratics).",
        "",
        table,
        "",
        "Meta-training:",
        "",
    ]
    for kind, info in meta["meta_training"].items():
        lines.append(f"- {kind}: {info}")
    lines += ["", "Curves: `loss_curves.png`, `curves_<setting>.png`; all numbers: `results.json`.", ""]
    path = out_dir / "report.md"
    from l2o.io import atomic_write_text

    atomic_write_text(path, "\n".join(lines))
    return path


# ---------------------------------------------------------------------------------------------
# The whole job


def run(out_dir: str | Path, config: L2LConfig | None = None, resume: bool = False,
        digits_weights: str | Path | None = None, quadratic_weights: str | Path | None = None,
        progress: bool = True, command: str = "l2o reproduce l2l", log=None) -> dict[str, Path]:
    """Meta-train (unless weights are given), evaluate, and write the report; returns the paths.

    Args:
        out_dir: report directory.
        config: settings (default: the full run).
        resume: continue interrupted meta-training from ``out_dir/checkpoints``.
        digits_weights, quadratic_weights: weights files to evaluate instead of meta-training
            (e.g. the shipped ``l2l-digits``).
        progress: show progress bars.
        command: the command line recorded in the report.
    """
    from l2o.io import atomic_write_text, jsonable
    from l2o.learned.weights import load_rule, save_rule

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    config = config or L2LConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    kinds_needed = {SETTINGS[s][1] for s in config.settings}
    rules: dict[str, LearnedRule] = {}
    meta_info: dict[str, Any] = {}
    for kind, given in (("digits", digits_weights), ("quadratic", quadratic_weights)):
        if kind not in kinds_needed:
            continue
        if given is not None:
            rules[kind] = load_rule(given)
            meta_info[kind] = f"weights loaded from {given} (not re-trained)"
            continue
        log(f"meta-training the LSTM on {kind} ...")
        rule, summary, bptt = meta_train(kind, config, out_dir / "checkpoints" / kind, resume, progress)
        rules[kind] = rule
        meta_info[kind] = (f"{summary.outer_steps} outer steps (unroll {bptt.unroll}, horizon {bptt.horizon}, "
                           f"Adam lr {bptt.meta_lr:g}); best validation score {summary.best_val:.4f} at step "
                           f"{summary.best_step}; {summary.inner_steps_per_second:.0f} inner steps/s; "
                           f"{summary.rollbacks} rollbacks")
        save_rule(out_dir / f"l2l-{kind}.safetensors", rule, {
            "name": f"l2l-{kind}",
            "description": "Coordinatewise 2-layer LSTM optimizer (Andrychowicz et al. 2016), "
                           f"meta-trained by truncated BPTT on {kind}.",
            "training": {**asdict(bptt), "family": "digits_mlp(hidden=20, layers=1, sigmoid, batch 128)"
                         if kind == "digits" else "quadratic(dim=10)", "best_val": summary.best_val,
                         "best_step": summary.best_step, "val_history": summary.val_history},
            "data": "scikit-learn digits (8x8), split seed 0, 75% train" if kind == "digits"
                    else "random 10-dim quadratics ||W theta - y||^2, W, y ~ N(0, 1)",
            "command": command,
        })
    results: dict[str, Any] = {}
    for setting in config.settings:
        log(f"evaluating {setting}: tuning {len(BASELINES)} baselines over {len(config.lr_grid)} learning rates ...")
        results[setting] = evaluate_setting(setting, rules[SETTINGS[setting][1]], config)
    meta = {"config": asdict(config), "meta_training": meta_info, "command": command,
            "seconds": time.perf_counter() - started,
            "final_loss": "loss on the whole training set after the last step (quadratic: f(theta_T))",
            "torch": torch.__version__}
    paths = {"json": out_dir / "results.json"}
    # strict JSON: a diverged run's inf (e.g. a learning rate too large in the tuning) is written as null
    atomic_write_text(paths["json"], json.dumps(jsonable({"meta": meta, "results": results}), indent=1))
    paths["report"] = write_report(results, meta, out_dir, command)
    paths["plots"] = plot_curves(results, out_dir)
    summary = {s: {n: {"final_mean": r["optimizers"][n]["final_mean"], "lr": r["optimizers"][n]["lr"]}
                   for n in r["optimizers"]} for s, r in results.items()}
    for kind in rules:
        path = out_dir / f"l2l-{kind}.safetensors"
        if path.is_file():  # add the evaluation to the model card of freshly trained weights
            from l2o.learned.weights import PretrainedIndex

            card = PretrainedIndex(out_dir).card(f"l2l-{kind}")
            card["metrics"] = {s: summary[s] for s in results if SETTINGS[s][1] == kind}
            card["metrics_note"] = (f"final training-set loss, mean over {config.seeds} seeds; baselines tuned "
                                    "per setting by learning-rate grid")
            save_rule(path, rules[kind], {k: v for k, v in card.items() if k not in ("rule", "config")})
    return paths


__all__ = ["SETTINGS", "BASELINES", "L2LConfig", "run", "meta_train", "evaluate_setting", "format_table",
           "make_task", "tune", "run_optimizer", "replace"]
