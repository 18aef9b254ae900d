"""Train a method on a stream of tasks in order, tune it on validation splits, run experiments.

:func:`train_sequence` is the one training loop every method goes through (fresh optimizer per
task, seeded minibatches, the method's hooks around ``optimizer.step()``) and returns the accuracy
matrices on the test and validation splits.

:func:`run_experiment` is ``l2o continual run``: for each method, every combination of its grid
(learning rate, and EWC's λ) is run on tuning seeds (``1000, 1001, ...``: other data splits,
permutations and initialisations than the evaluation seeds ``0..seeds-1``) and scored by the mean
final *validation* accuracy over the tasks; the best is then run on the evaluation seeds, whose
*test* accuracies are reported. Every finished run is written to ``OUT/runs/`` at once (atomic),
so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path

import torch

from l2o.continual import metrics
from l2o.continual.hat import HAT
from l2o.continual.methods import AGEM, EWC, Joint, Method
from l2o.continual.ogd import OGD
from l2o.continual.scenarios import make_stream

METHODS = {
    "sgd": (Method, {}),
    "ogd-gtl": (OGD, {"variant": "gtl"}),
    "ogd-ave": (OGD, {"variant": "ave"}),
    "ogd-all": (OGD, {"variant": "all"}),
    "hat": (HAT, {}),
    "ewc": (EWC, {}),
    "agem": (AGEM, {}),
    "joint": (Joint, {}),
}
TUNE_SEED0 = 1000


def parse_methods(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("no method given: --methods takes a comma-separated list, e.g. sgd,ogd-gtl,hat")
    for n in names:
        if n not in METHODS:
            raise ValueError(f"unknown method {n!r}: expected some of {', '.join(METHODS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a method is listed twice in {text!r}")
    return names


def make_method(name: str, **hp) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: expected one of {', '.join(METHODS)}")
    cls, fixed = METHODS[name]
    return cls(**fixed, **hp)


@torch.no_grad()
def accuracy(method: Method, stream, j: int, split: str) -> float:
    x, y = stream[j].split(split)
    return float((method.logits(x, j).argmax(1) == y).float().mean())


def train_sequence(method: Method, stream, seed: int, *, epochs: int = 5, batch_size: int = 32,
                   on_task=None) -> dict:
    """Train ``method`` on the tasks of ``stream`` in order; returns ``R`` (test), ``R_val``, the
    untrained network's accuracies ``b``/``b_val``, per-task ``extras`` and ``diverged``."""
    if len(stream) < 1:
        raise ValueError("the stream has no task")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    method.setup(stream, seed)
    gen = torch.Generator().manual_seed(seed)
    T = len(stream)
    result = {"b": [accuracy(method, stream, j, "test") for j in range(T)],
              "b_val": [accuracy(method, stream, j, "val") for j in range(T)],
              "R": [], "R_val": [], "extras": [], "diverged": False}
    for t in range(T):
        method.begin_task(stream, t)
        opt = method.make_optimizer()
        x, y, tids = method.train_data(stream, t)
        n = len(y)
        batches = math.ceil(n / batch_size)
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            for b in range(batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                opt.zero_grad(set_to_none=True)
                loss = method.loss(x[idx], y[idx], tids[idx], t, b, batches)
                if not torch.isfinite(loss):
                    result["diverged"] = True
                    break
                loss.backward()
                method.before_step(t)
                opt.step()
                method.after_step(t)
            if result["diverged"]:
                break
        method.end_task(stream, t, gen)
        result["R"].append([accuracy(method, stream, j, "test") for j in range(T)])
        result["R_val"].append([accuracy(method, stream, j, "val") for j in range(T)])
        result["extras"].append(method.extras())
        if on_task:
            on_task(t)
    return result


def _mean_std(values: list) -> dict:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "values": values}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "values": values}


def _grid(name: str, lr_grid, lr, ewc_lambda_grid=None) -> dict[str, tuple]:
    cls, _ = METHODS[name]
    grid = dict(cls.grids)
    if ewc_lambda_grid and "ewc_lambda" in grid:
        grid["ewc_lambda"] = tuple(ewc_lambda_grid)
    grid["lr"] = (lr,) if lr is not None else tuple(lr_grid) if lr_grid else grid["lr"]
    return grid


def _key(hp: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in sorted(hp.items()))


def run_experiment(out: str | Path, *, scenario: str = "permuted-digits", methods: list[str] | None = None,
                   tasks: int = 5, seeds: int = 3, tune_seeds: int = 1, epochs: int = 10, batch_size: int = 32,
                   memory: int = 20, lr: float | None = None, lr_grid: list[float] | None = None,
                   ewc_lambda_grid: list[float] | None = None,
                   rotation_step: float = 30.0, mnist_dir: str | None = None, progress: bool = True,
                   command: str = "") -> dict:
    """The whole experiment behind ``l2o continual run``; returns the results dict (also written)."""
    from tqdm.auto import tqdm

    from l2o.continual.report import write_report
    from l2o.io import atomic_write_text, jsonable

    methods = list(methods or METHODS)
    for n in methods:
        if n not in METHODS:
            raise ValueError(f"unknown method {n!r}: expected some of {', '.join(METHODS)}")
    if not isinstance(tasks, int) or tasks < 1:
        raise ValueError(f"--tasks must be >= 1, got {tasks}")
    if seeds < 1 or tune_seeds < 1:
        raise ValueError(f"--seeds and --tune-seeds must be >= 1, got {seeds} and {tune_seeds}")
    if memory < 1:
        raise ValueError(f"--memory must be >= 1, got {memory}")
    if lr is not None and not lr > 0:
        raise ValueError(f"--lr must be positive, got {lr}")
    if lr_grid is not None and (not lr_grid or any(not v > 0 for v in lr_grid)):
        raise ValueError(f"--lr-grid must hold positive learning rates, got {lr_grid}")
    if ewc_lambda_grid is not None and (not ewc_lambda_grid or any(not v >= 0 for v in ewc_lambda_grid)):
        raise ValueError(f"--ewc-lambda-grid must hold non-negative values, got {ewc_lambda_grid}")
    out = Path(out)
    config = {"scenario": scenario, "methods": methods, "tasks": tasks, "seeds": seeds, "tune_seeds": tune_seeds,
              "epochs": epochs, "batch_size": batch_size, "memory": memory, "lr": lr, "lr_grid": lr_grid,
              **({"ewc_lambda_grid": ewc_lambda_grid} if ewc_lambda_grid else {}),
              "rotation_step": rotation_step, "mnist_dir": mnist_dir}
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        differ = {k: (old.get(k), v) for k, v in config.items() if old.get(k) != v and k != "methods"}
        if differ:
            raise ValueError(f"{out} holds a run with other settings ({differ}); resume with the same ones or use "
                             "another --out")
    atomic_write_text(cfg_path, json.dumps(config, indent=2))
    make_stream(scenario, tasks, 0, rotation_step=rotation_step, mnist_dir=mnist_dir)  # fail early on bad input
    streams: dict[int, object] = {}

    def stream_for(seed: int):
        if seed not in streams:
            streams[seed] = make_stream(scenario, tasks, seed, rotation_step=rotation_step, mnist_dir=mnist_dir)
        return streams[seed]

    def hp_for(name: str, hp: dict) -> dict:
        extra = {"memory": memory} if name.startswith("ogd") or name == "agem" else {}
        return {**hp, **extra}

    def run(key: str, name: str, hp: dict, seed: int) -> dict:
        path = out / "runs" / f"{key}.json"
        if path.exists():
            return json.loads(path.read_text())
        torch.manual_seed(seed)
        res = train_sequence(make_method(name, **hp_for(name, hp)), stream_for(seed), seed,
                             epochs=epochs, batch_size=batch_size)
        res.update(method=name, hyperparameters=hp, seed=seed)
        atomic_write_text(path, json.dumps(jsonable(res)))
        return res

    grids = {n: _grid(n, lr_grid, lr, ewc_lambda_grid) for n in methods}
    combos = {n: [dict(zip(g, vals)) for vals in itertools.product(*g.values())] for n, g in grids.items()}
    tune_list = [s for s in range(TUNE_SEED0, TUNE_SEED0 + tune_seeds)]
    total = sum(len(c) * (len(tune_list) if len(c) > 1 else 0) + seeds for c in combos.values())
    bar = tqdm(total=total, disable=not progress, desc="continual", unit="run")
    results = {"command": command, "config": config, "methods": {}}
    try:
        for name in methods:
            tuning = {}
            if len(combos[name]) > 1:
                for hp in combos[name]:
                    scores = []
                    for s in tune_list:
                        bar.set_postfix_str(f"tune {name} {_key(hp)} seed {s}")
                        res = run(f"tune_{name}_{_key(hp)}_seed{s}", name, hp, s)
                        scores.append(statistics.fmean(res["R_val"][-1]))
                        bar.update()
                    tuning[_key(hp)] = {"hyperparameters": hp, "val_avg_accuracy": statistics.fmean(scores)}
                best = max(tuning.values(), key=lambda r: r["val_avg_accuracy"])["hyperparameters"]
            else:
                best = combos[name][0]
            edge = [k for k, vals in grids[name].items() if len(vals) > 1 and best[k] in (min(vals), max(vals))]
            runs = []
            for s in range(seeds):
                bar.set_postfix_str(f"{name} seed {s}")
                runs.append(run(f"eval_{name}_seed{s}_{_key(best)}", name, best, s))
                bar.update()
            summaries = [metrics.summarize(r["R"], r["b"]) for r in runs]
            results["methods"][name] = {
                "hyperparameters": hp_for(name, best), "grid": {k: list(v) for k, v in grids[name].items()},
                "at_grid_edge": edge, "tuning": tuning, "seeds": list(range(seeds)),
                "R": [r["R"] for r in runs], "R_val": [r["R_val"] for r in runs], "b": [r["b"] for r in runs],
                "diverged": [r["diverged"] for r in runs], "extras": [r["extras"] for r in runs],
                **{m: _mean_std([s[m] for s in summaries]) for m in ("avg_accuracy", "forgetting", "bwt", "fwt")},
            }
    finally:
        bar.close()
    results["task_names"] = [t.name for t in stream_for(0).tasks]
    paths = write_report(results, out)
    atomic_write_text(out / "results.json", json.dumps(jsonable(results), indent=1, allow_nan=False))
    results["paths"] = {k: str(v) for k, v in paths.items()}
    return results
