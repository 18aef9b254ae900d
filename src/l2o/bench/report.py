"""Turn a results store into a report directory: a Markdown summary, PNG figures, and the data.

Output (in ``out_dir``):

- ``summary.md``: per task, one row per optimizer: the chosen hyperparameters, the task's
  metric (mean ± std over the final seeds), test loss, diverged seeds, steps to the target,
  speedup over tuned Adam, time per step relative to SGD.
- ``curves_train.png`` / ``curves_test.png``: training loss (smoothed) and test loss per task,
  mean over seeds with 10th-90th percentile bands.
- ``lr_sensitivity.png``: the tuning runs: selection loss against learning rate.
- ``performance_profile.png``: Dolan-Moré profile across tasks on the reported metric.
- ``summary.json``, ``curves_train.json``, ``curves_test.json``, ``lr_sensitivity.csv``,
  ``performance_profile.csv``: the numbers behind the table and the figures.

Games (:mod:`l2o.minimax`) get their own table layout (the game's metric, both players' gradient
norms, mode coverage for GANs, time per step relative to GDA) and ``curves_games.png``/``.json``
(metric and gradient norm against step).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from l2o.bench import metrics
from l2o.bench.optimizers import BUILTINS, TUNED_PREFIX
from l2o.bench.store import ResultsStore, canonical_json
from l2o.io import jsonable
from l2o.plotting import save_figure

MIN_SMOOTH_WINDOW = 10
#: The baseline that the time-per-step column divides by: the first of these that ran on the task
#: (without any of them, the column gives milliseconds per step).
TIME_REFERENCES = ("sgd", "momentum", "nag", "rmsprop", "adam")
#: How every table of the report states its spread.
SPREAD = "mean ± std"
#: The time reference of games: the first of these two-player optimizers that ran on the game.
GAME_TIME_REFERENCES = ("gda", "gda+rmsprop", "gda+adam")
#: How the report names a game metric.
GAME_METRIC_LABELS = {"distance": "distance to the equilibrium", "grad_norm": "‖∇ₓf‖ + ‖∇ᵧf‖",
                      "grad_x_norm": "‖∇ₓf‖", "grad_y_norm": "‖∇ᵧf‖", "f": "f(x, y)"}


def smooth_window(steps: int) -> int:
    """Moving-average window for training curves: a tenth of the budget, at least 10 steps, so
    minibatch noise does not decide when a target is reached."""
    return max(MIN_SMOOTH_WINDOW, int(steps) // 10)


def _metric_of(task_id: str) -> str:
    """The task's reported metric: the preset's, else the task class's (building the task, which
    may load data, only if the class does not say)."""
    from l2o import tasks
    from l2o.bench.suites import get_preset

    try:
        preset = get_preset(task_id)
        if preset.metric:
            return preset.metric
        metric = getattr(tasks.TASKS.get(preset.task), "metric", None)
        return metric if isinstance(metric, str) else preset.build(0).metric
    except Exception:
        return "test_loss"


def _fmt(mean: float, std: float, digits: int = 4) -> str:
    if mean is None or not math.isfinite(mean):
        return "—"
    return f"{mean:.{digits}g} ± {std:.2g}"


def _fmt_hp(hparams: dict[str, Any], edges: dict[str, str] | None = None) -> str:
    if not hparams:
        return "defaults"
    edges = edges or {}
    marks = {"low": " (grid bottom)", "high": " (grid top)"}
    return ", ".join((f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}") + marks.get(edges.get(k), "")
                     for k, v in sorted(hparams.items()))


def grid_edges(chosen: dict[str, Any], tuning: list[tuple[dict[str, Any], int, Any]]) -> dict[str, str]:
    """Tuned numeric hyperparameters whose chosen value is the smallest ("low") or the largest
    ("high") of the values tried (diverged tries included): the best value may lie beyond the
    grid, so the row may be under-tuned. ``tuning`` holds ``(hparams, seed, loss)`` per tuning run."""
    def is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    edges = {}
    for key, value in chosen.items():
        if not is_number(value):
            continue
        tried = sorted({hp[key] for hp, _, _ in tuning if is_number(hp.get(key))})
        if len(tried) < 2:
            continue
        if value == tried[0]:
            edges[key] = "low"
        elif value == tried[-1]:
            edges[key] = "high"
    return edges


def collect(store: ResultsStore) -> dict[str, Any]:
    """Everything the report shows, as plain data: ``{task: {optimizer: stats}}`` plus tuning runs."""
    results: dict[str, dict[str, Any]] = {}
    for sel in store.selections():
        task, opt = sel["task"], sel["optimizer"]
        hp = canonical_json(sel["hparams"])
        rows = [r for r in store.runs(task=task, optimizer=opt)
                if canonical_json(r["hparams"]) == hp and r["seed"] in sel["final_seeds"] and r["steps"] == sel["steps"]]
        finished = [r for r in rows if r["status"] in ("complete", "diverged")]
        complete = [r for r in rows if r["status"] == "complete"]
        if any(r["task_config"].get("game") for r in rows):
            results.setdefault(task, {})[opt] = _collect_game(store, sel, rows, finished, complete)
            continue
        train_curves, plot_curves, test_curves, b_simple = [], [], [], []
        for r in complete:
            curves = store.curves(r["id"])
            if "b_simple" in curves:  # l2o bench run --noise-scale
                b_simple.append(float(curves["b_simple"][1][-1]))
            train_curves.append(metrics.smooth(curves["train_loss"][1], smooth_window(sel["steps"])))
            plot_curves.append(metrics.smooth(curves["train_loss"][1], MIN_SMOOTH_WINDOW))
            if "test_loss" in curves:
                test_curves.append((curves["test_loss"][0], curves["test_loss"][1]))
        tune_rows = [r for r in store.runs(task=task, optimizer=opt) if r["seed"] in sel["tune_seeds"]
                     and r["steps"] == sel["steps"]] if sel["tuned"] else []
        results.setdefault(task, {})[opt] = {
            "selection": sel,
            "n_seeds": len(sel["final_seeds"]), "n_finished": len(finished),
            "n_diverged": sum(r["status"] == "diverged" for r in rows),
            "n_failed": sum(r["status"] == "failed" for r in rows),
            "test_loss": metrics.mean_std([r["final_test_loss"] if r["status"] == "complete" else None for r in rows]),
            "test_accuracy": metrics.mean_std([r["final_test_accuracy"] if r["status"] == "complete" else None
                                               for r in rows]),
            "final_train_smoothed": [float(c[-1]) for c in train_curves if len(c)],
            # every complete run of this optimizer on the task (tuning runs too: more samples of a
            # number that depends little on the learning rate). Diverged runs are left out: they
            # stop early, so their few timed steps are a poor sample of the optimizer's step time.
            "seconds_per_step": [r["seconds_per_step"] for r in store.runs(task=task, optimizer=opt)
                                 if r["steps"] == sel["steps"] and r["status"] == "complete"
                                 and r["seconds_per_step"]],
            "train_curves": train_curves, "plot_curves": plot_curves, "test_curves": test_curves,
            "b_simple": b_simple,
            "tuning": [(r["hparams"], r["seed"], r["selection_loss"] if r["status"] == "complete" else None)
                       for r in tune_rows],
            "steps": sel["steps"],
        }
    return results


def _collect_game(store: ResultsStore, sel: dict[str, Any], rows, finished, complete) -> dict[str, Any]:
    """:func:`collect`'s entry for a game: final metrics and the metric curves of its final runs."""
    task, opt = sel["task"], sel["optimizer"]
    curves = [store.curves(r["id"]) for r in complete]
    metric = next((r["selection_split"] for r in complete if r["selection_split"]), None)

    def finals(name):
        return metrics.mean_std([c[name][1][-1] if name in c and c[name][1] else None for c in curves])

    tune_rows = [r for r in store.runs(task=task, optimizer=opt) if r["seed"] in sel["tune_seeds"]
                 and r["steps"] == sel["steps"]] if sel["tuned"] else []
    return {
        "game": True, "metric": metric, "selection": sel,
        "n_seeds": len(sel["final_seeds"]), "n_finished": len(finished),
        "n_diverged": sum(r["status"] == "diverged" for r in rows),
        "n_failed": sum(r["status"] == "failed" for r in rows),
        "final": {name: finals(name) for name in ("distance", "grad_norm", "grad_x_norm", "grad_y_norm", "f",
                                                  "modes_covered", "high_quality")
                  if any(name in c for c in curves)},
        "modes": next((int(c["modes"][1][-1]) for c in curves if "modes" in c), None),
        "metric_curves": [c[metric] for c in curves if metric in c],
        "grad_curves": [c["grad_norm"] for c in curves if "grad_norm" in c],
        "seconds_per_step": [r["seconds_per_step"] for r in store.runs(task=task, optimizer=opt)
                             if r["steps"] == sel["steps"] and r["status"] == "complete" and r["seconds_per_step"]],
        "tuning": [(r["hparams"], r["seed"], r["selection_loss"] if r["status"] == "complete" else None)
                   for r in tune_rows],
        "steps": sel["steps"],
        # what the task rows have, empty, so that code shared by both reads one shape
        "test_loss": (math.nan, math.nan, 0), "test_accuracy": (math.nan, math.nan, 0),
        "final_train_smoothed": [], "train_curves": [], "plot_curves": [], "test_curves": [], "b_simple": [],
    }


def _derived(task: str, per_opt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Steps-to-target, speedup over tuned Adam and time ratio to SGD for one task (for a game:
    the time ratio to GDA only)."""
    if _is_game(per_opt):
        return _time_ratios(per_opt, GAME_TIME_REFERENCES)
    out = {o: {} for o in per_opt}
    baselines = {o: s["final_train_smoothed"] + [math.inf] * (s["n_seeds"] - len(s["final_train_smoothed"]))
                 for o, s in per_opt.items() if o in BUILTINS} or \
                {o: s["final_train_smoothed"] for o, s in per_opt.items()}
    best, target = metrics.baseline_target(baselines)
    # Speedup: reference = seed-mean smoothed training curve of tuned Adam; each optimizer's
    # loss = the last value of its own seed-mean curve, computed the same way (so Adam gets 1).
    adam_curve = None
    if "adam" in per_opt and per_opt["adam"]["train_curves"]:
        adam_curve = metrics.mean_curve(per_opt["adam"]["train_curves"])
    for o, s in per_opt.items():
        reached = [metrics.steps_to_target(c, target) for c in s["train_curves"]] if math.isfinite(target) else []
        hits = [r for r in reached if r is not None]
        out[o]["target"] = target
        out[o]["target_from"] = best
        out[o]["steps_to_target"] = float(np.median(hits)) if hits else None
        out[o]["reached_target"] = f"{len(hits)}/{s['n_seeds']}"
        own = metrics.mean_curve(s["train_curves"])
        if adam_curve is not None and adam_curve.size and own.size:
            out[o]["speedup_vs_adam"] = metrics.speedup(adam_curve, float(own[-1]), s["steps"])
        else:
            out[o]["speedup_vs_adam"] = None
    for o, times in _time_ratios(per_opt, TIME_REFERENCES).items():
        out[o].update(times)
    return out


def _time_ratios(per_opt: dict[str, Any], references: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each optimizer's fastest seconds per step, over that of the first of ``references`` that
    ran on the task (SGD for tasks where it did; GDA for games)."""
    ref = next((r for r in references if r in per_opt and per_opt[r]["seconds_per_step"]), None)
    out = {}
    for o, s in per_opt.items():
        times = [v for v in s["seconds_per_step"] if v and math.isfinite(v)]
        ratio = metrics.time_ratio(s["seconds_per_step"], per_opt[ref]["seconds_per_step"]) if ref else math.nan
        out[o] = {"seconds_per_step": min(times) if times else math.nan, "time_reference": ref,
                  "time_ratio": ratio, "time_vs_sgd": ratio if ref == "sgd" else math.nan}
    return out


def make_report(db_path: str, out_dir: str, title: str = "l2o benchmark") -> Path:
    """Write the report of ``db_path`` into ``out_dir``; returns the summary's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with ResultsStore(db_path) as store:
        results = collect(store)
        counts = store.count()
        selected = {(sel["task"], sel["optimizer"]) for sel in store.selections()}
        untuned = sorted({(r["task"], r["optimizer"]) for r in store.runs()} - selected)
    if not results:
        raise ValueError(f"results file {db_path} has no finished sweep to report (run 'l2o bench run' first)"
                         + (f"; its tuning phase was stopped before any choice was made ({len(untuned)} task/optimizer "
                            f"pairs started): run the same 'l2o bench run ... --db {db_path}' command again to "
                            "finish it" if untuned else ""))
    games = {t for t, per_opt in results.items() if _is_game(per_opt)}
    task_metric = {t: _game_metric_of(results[t]) if t in games else _metric_of(t) for t in results}
    derived = {t: _derived(t, per_opt) for t, per_opt in results.items()}

    spread = ("± is the sample standard deviation over the final seeds (every table: mean ± std); diverged seeds "
              "are counted, not averaged.")
    about_tasks = (
        "Steps to target: median over the seeds that reach the target (the median final training loss, "
        "smoothed over a trailing tenth of the budget (at least 10 steps), of the best baseline). Speedup over tuned "
        "Adam: the step from which Adam's seed-mean smoothed training loss stays below the optimizer's final "
        "seed-mean smoothed training loss (interpolated), over the optimizer's budget; Adam itself gets 1 "
        "(≥: Adam does not get there within its budget, the speedup is at least that). "
        "Time/step ÷ REF: seconds per step (evaluations included) of the optimizer's fastest complete run "
        "on the task (tuning runs included) over the fastest of the reference baseline REF (the first of "
        f"{', '.join(TIME_REFERENCES)} that ran on the task; with none of them, milliseconds per step); "
        "load from other jobs only adds time. "
        "Hyperparameters were chosen on validation/training loss, never on test numbers; ")
    about_games = (
        "Games (two players: x minimizes f(x, y), y maximizes it): the reported metric is measured at the end of "
        "the budget on the game's evaluation batch, and tuning selects on the same metric (on the tuning seeds, "
        "which are the first final seeds). Time/step ÷ REF: the fastest complete run's seconds per step (metric "
        f"evaluations excluded) over that of the first of {', '.join(GAME_TIME_REFERENCES)} that ran on the game. ")
    edges_note = ("'grid top'/'grid bottom' marks a chosen value that is the largest/smallest of its grid "
                  "(the best value may lie beyond it: that row may be under-tuned).")
    lines = [f"# {title}", "",
             f"Results file: `{db_path}` ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))} runs). "
             + spread + " " + (about_tasks if len(games) < len(results) else "") + (about_games if games else "")
             + edges_note, ""]
    summary_json: dict[str, Any] = {}
    missing: list[str] = []  # rows with fewer finished seeds than planned (an interrupted sweep)
    for task, per_opt in sorted(results.items()):
        if task in games:
            lines += _game_table(task, per_opt, derived[task], summary_json, missing)
            continue
        metric = task_metric[task]
        first = next(iter(per_opt.values()))
        extra = " test loss |" if metric == "test_accuracy" else ""
        noise = any(s["b_simple"] for s in per_opt.values())  # B_simple column: l2o bench run --noise-scale
        ref = derived[task][next(iter(per_opt))]["time_reference"]
        time_head = f"time/step ÷ {_label(ref)}" if ref else "time/step (ms)"
        extra = f" test loss ({SPREAD}) |" if extra else ""
        lines += [f"## {task}", "", f"Budget {first['steps']} steps; reported metric: {metric.replace('_', ' ')}.", "",
                  f"| optimizer | hyperparameters | {metric.replace('_', ' ')} ({SPREAD}) |{extra} diverged "
                  f"| steps to target | speedup vs Adam | {time_head} |"
                  + (" B_simple at the end (median) |" if noise else ""),
                  "|---|---|---|---|---|---|---|" + ("---|" if extra else "") + ("---|" if noise else "")]
        summary_json[task] = {"metric": metric, "steps": first["steps"], "optimizers": {}}
        for opt, s in sorted(per_opt.items()):
            d = derived[task][opt]
            sel = s["selection"]
            edges = grid_edges(sel["hparams"], s["tuning"]) if sel["tuned"] else {}
            hp = _fmt_hp(sel["hparams"], edges) + ("" if sel["tuned"] else " (untuned)")
            headline = s["test_accuracy"] if metric == "test_accuracy" else s["test_loss"]
            sp = d["speedup_vs_adam"]
            sp_text = "—" if sp is None else (f"≥{sp[0]:.2f}×" if sp[1] else f"{sp[0]:.2f}×")
            stt = d["steps_to_target"]
            stt_text = "—" if stt is None else f"{stt:.0f} ({d['reached_target']})"
            tr = d["time_vs_sgd"]
            tr_text = (f"{d['time_ratio']:.2f}" if math.isfinite(d["time_ratio"]) else "—") if d["time_reference"] \
                else (f"{1e3 * d['seconds_per_step']:.3g}" if math.isfinite(d["seconds_per_step"]) else "—")
            failed_text = f" ({s['n_failed']} failed)" if s["n_failed"] else ""
            incomplete = s["n_finished"] < s["n_seeds"]
            if incomplete:
                missing.append(f"{task} / {opt}: {s['n_finished']} of {s['n_seeds']} seeds")
            loss_text = f" {_fmt(*s['test_loss'][:2])} |" if extra else ""
            name = f"{opt} **(incomplete: {s['n_finished']}/{s['n_seeds']} seeds)**" if incomplete else opt
            lines.append(f"| {name} | {hp} | {_fmt(*headline[:2])} |{loss_text} "
                         f"{s['n_diverged']}/{s['n_seeds']}{failed_text} | "
                         f"{stt_text} | {sp_text} | {tr_text} |"
                         + ((f" {statistics.median(s['b_simple']):.4g} |" if s["b_simple"] else " — |") if noise else ""))
            summary_json[task]["optimizers"][opt] = {
                "hparams": sel["hparams"], "tuned": sel["tuned"], "n_configs": sel["n_configs"], "grid_edges": edges,
                "selection_loss": sel["selection_loss"],
                "test_loss_mean": s["test_loss"][0], "test_loss_std": s["test_loss"][1],
                "test_accuracy_mean": s["test_accuracy"][0], "test_accuracy_std": s["test_accuracy"][1],
                "seeds": s["n_seeds"], "diverged": s["n_diverged"], "failed": s["n_failed"],
                "target": d["target"], "target_from": d["target_from"], "steps_to_target": stt,
                "reached_target": d["reached_target"],
                "speedup_vs_adam": None if sp is None else sp[0], "speedup_is_lower_bound": None if sp is None else sp[1],
                "time_per_step_vs_sgd": tr,
                "time_reference": d["time_reference"], "time_per_step_vs_reference": d["time_ratio"],
                "seconds_per_step": d["seconds_per_step"],
                "seeds_finished": s["n_finished"], "incomplete": incomplete,
                "b_simple_median": statistics.median(s["b_simple"]) if s["b_simple"] else None,
            }
        lines.append("")
    figures = []
    if len(games) < len(results):
        figures += [("training loss", "curves_train.png"), ("test loss", "curves_test.png")]
    if games:
        figures += [("games: metric and gradient norms", "curves_games.png")]
    if any(s["tuning"] for per_opt in results.values() for s in per_opt.values()):
        figures += [("learning-rate sensitivity", "lr_sensitivity.png")]
    if len(games) < len(results):
        figures += [("performance profile", "performance_profile.png")]
    lines += ["## Figures", ""] + [line for alt, name in figures for line in (f"![{alt}]({name})", "")]
    if missing or untuned:
        warning = ["**Incomplete sweep.** "
                   + (f"{len(missing)} row(s) have fewer finished seeds than planned, so their numbers rest on "
                      f"those seeds alone: {'; '.join(missing)}. " if missing else "")
                   + (f"Tuning did not finish for {', '.join(f'{t} / {o}' for t, o in untuned)} (no row yet). "
                      if untuned else "")
                   + f"To finish, run the same `l2o bench run` command again with `--db {db_path}`: the finished "
                     "runs are kept and only the missing ones run; then report again.", ""]
        lines[2:2] = warning
    (out / "summary.json").write_text(json.dumps(jsonable(summary_json), indent=2))
    tasks_only = {t: v for t, v in results.items() if t not in games}
    games_only = {t: v for t, v in results.items() if t in games}
    if tasks_only:
        _plot_curves(tasks_only, out, kind="train")
        _plot_curves(tasks_only, out, kind="test")
        _plot_profile(tasks_only, task_metric, out)
    if games_only:
        # no performance profile of games: their metrics reach 0 (an equilibrium to the last bit)
        # and span hundreds of decades, so ratios to the best say nothing
        _plot_games(games_only, task_metric, out)
    _plot_lr_sensitivity(results, out)
    summary = out / "summary.md"
    summary.write_text("\n".join(lines))
    return summary


def _is_game(per_opt: dict[str, Any]) -> bool:
    return any(s.get("game") for s in per_opt.values())


def _game_metric_of(per_opt: dict[str, Any]) -> str:
    """The metric a game's runs were selected on (what :func:`l2o.bench.suites.game_metric` chose)."""
    return next((s["metric"] for s in per_opt.values() if s.get("metric")), "grad_norm")


def _game_table(task: str, per_opt: dict[str, Any], derived: dict[str, Any], summary_json: dict[str, Any],
                missing: list[str]) -> list[str]:
    """A game's section of summary.md (and its summary.json entry)."""
    metric = _game_metric_of(per_opt)
    label = GAME_METRIC_LABELS.get(metric, metric)
    first = next(iter(per_opt.values()))
    show_grad = metric != "grad_norm"
    modes = next((s["modes"] for s in per_opt.values() if s["modes"]), None)
    ref = derived[next(iter(per_opt))]["time_reference"]
    time_head = f"time/step ÷ {ref}" if ref else "time/step (ms)"
    head = (f"| optimizer | hyperparameters | {label} ({SPREAD}) |"
            + (f" ‖∇ₓf‖ + ‖∇ᵧf‖ ({SPREAD}) |" if show_grad else "")
            + (f" modes covered of {modes} ({SPREAD}) |" if modes else "") + f" diverged | {time_head} |")
    lines = [f"## {task}", "", f"A game; budget {first['steps']} steps; reported metric: {label} at the end "
             "(lower is better).", "", head, "|---|---|---|" + ("---|" if show_grad else "") + ("---|" if modes else "")
             + "---|---|"]
    summary_json[task] = {"game": True, "metric": metric, "steps": first["steps"], "optimizers": {}}
    for opt, s in sorted(per_opt.items()):
        d = derived[opt]
        sel = s["selection"]
        edges = grid_edges(sel["hparams"], s["tuning"]) if sel["tuned"] else {}
        hp = _fmt_hp(sel["hparams"], edges) + ("" if sel["tuned"] else " (untuned)")
        final = s["final"]
        nan = (math.nan, math.nan, 0)
        incomplete = s["n_finished"] < s["n_seeds"]
        if incomplete:
            missing.append(f"{task} / {opt}: {s['n_finished']} of {s['n_seeds']} seeds")
        name = f"{opt} **(incomplete: {s['n_finished']}/{s['n_seeds']} seeds)**" if incomplete else opt
        time_text = (f"{d['time_ratio']:.2f}" if math.isfinite(d["time_ratio"]) else "—") if ref \
            else (f"{1e3 * d['seconds_per_step']:.3g}" if math.isfinite(d["seconds_per_step"]) else "—")
        failed_text = f" ({s['n_failed']} failed)" if s["n_failed"] else ""
        lines.append(f"| {name} | {hp} | {_fmt(*final.get(metric, nan)[:2])} |"
                     + (f" {_fmt(*final.get('grad_norm', nan)[:2])} |" if show_grad else "")
                     + (f" {_fmt(*final.get('modes_covered', nan)[:2], digits=2)} |" if modes else "")
                     + f" {s['n_diverged']}/{s['n_seeds']}{failed_text} | {time_text} |")
        summary_json[task]["optimizers"][opt] = {
            "hparams": sel["hparams"], "tuned": sel["tuned"], "n_configs": sel["n_configs"], "grid_edges": edges,
            "selection_loss": sel["selection_loss"],
            **{f"{k}_mean": v[0] for k, v in final.items()}, **{f"{k}_std": v[1] for k, v in final.items()},
            "seeds": s["n_seeds"], "diverged": s["n_diverged"], "failed": s["n_failed"],
            "seeds_finished": s["n_finished"], "incomplete": incomplete,
            "time_reference": ref, "time_per_step_vs_reference": d["time_ratio"],
            "seconds_per_step": d["seconds_per_step"],
        }
    return lines + [""]


def _label(name: str) -> str:
    return {"sgd": "SGD", "nag": "NAG", "rmsprop": "RMSprop", "adam": "Adam"}.get(name, name)


def _grid_shape(n: int) -> tuple[int, int]:
    cols = min(n, 3)
    return math.ceil(n / cols), cols


def _colors(names):
    """A colour per optimizer; ``tuned:NAME`` shares NAME's colour (and is drawn dashed, see
    :func:`_dash`), so the untuned and tuned rows of one optimizer read as a pair."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    bases = sorted({_base(n) for n in names})
    by_base = {b: cmap(i % 10) for i, b in enumerate(bases)}
    return {name: by_base[_base(name)] for name in names}


def _base(name: str) -> str:
    return name[len(TUNED_PREFIX):] if name.startswith(TUNED_PREFIX) else name


def _dash(name: str) -> str:
    return "--" if name.startswith(TUNED_PREFIX) else "-"


def _plot_curves(results, out: Path, kind: str) -> None:
    """Seed-mean curve per optimizer with a 10th-90th percentile band (stays positive where the
    losses are, so a log axis can show it); one legend for the whole figure, so no legend sits
    on a curve; optimizers with no finished seed on a task are named in the panel title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(results)
    rows, cols = _grid_shape(len(tasks))
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows + 0.9), squeeze=False)
    colors = _colors({o for t in tasks for o in results[t]})
    data = {}
    handles = {}
    for ax, task in zip(axes.flat, tasks):
        lows, highs, missing = [], [], []
        for opt, s in sorted(results[task].items()):
            if kind == "train":
                curves = s["plot_curves"]
                if not curves:
                    missing.append(opt)
                    continue
                length = min(len(c) for c in curves)
                steps = np.arange(1, length + 1)
                stack = np.array([c[:length] for c in curves])
            else:
                if not s["test_curves"]:
                    missing.append(opt)
                    continue
                length = min(len(v) for _, v in s["test_curves"])
                steps = np.array(s["test_curves"][0][0][:length])
                stack = np.array([v[:length] for _, v in s["test_curves"]])
            mean = stack.mean(axis=0)
            lo, hi = np.percentile(stack, 10, axis=0), np.percentile(stack, 90, axis=0)
            lows.append(min(lo.min(), mean.min()))
            highs.append(max(hi.max(), mean.max()))
            label = opt if len(stack) == s["n_seeds"] else f"{opt} ({len(stack)}/{s['n_seeds']} seeds)"
            (line,) = ax.plot(steps, mean, color=colors[opt], ls=_dash(opt), lw=1.5, label=label)
            handles.setdefault(opt, line)
            ax.fill_between(steps, lo, hi, color=colors[opt], alpha=0.2, lw=0)
            data.setdefault(task, {})[opt] = {"steps": steps.tolist(), "mean": mean.tolist(), "p10": lo.tolist(),
                                              "p90": hi.tolist(), "seeds": len(stack)}
        finals = [abs(v["mean"][-1]) for v in data.get(task, {}).values()]
        if lows and min(lows) > 0 and max(highs) / min(lows) > 3:
            ax.set_yscale("log")
        elif lows and finals and max(highs) > 30 * max(float(np.median(finals)), 1e-12):
            # Losses that cross zero (noisy 2-D problems) with a large start: symmetric log axis,
            # linear within a decade of the typical final loss.
            ax.set_yscale("symlog", linthresh=10.0 ** math.floor(math.log10(max(float(np.median(finals)), 1e-8))))
        title = task + (f"\n(no finished seed: {', '.join(missing)})" if missing else "")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(f"training loss ({MIN_SMOOTH_WINDOW}-step mean)" if kind == "train" else "test loss")
        ax.grid(alpha=0.3)
        partial = [h for h in ax.lines if "seeds)" in h.get_label()]
        if partial:  # only optimizers with diverged seeds get a legend in the panel
            ax.legend(handles=partial, fontsize=7, loc="best", framealpha=0.7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    what = "Training loss" if kind == "train" else "Test loss"
    fig.suptitle(f"{what} of the tuned optimizers: mean over seeds, band 10th-90th percentile")
    legend_rows = 0
    if handles:
        # as many columns as the figure's width holds (about 1.7 inches per entry), more rows if needed
        ncol = max(1, min(len(handles), 6, int(fig.get_figwidth() / 1.7)))
        legend_rows = math.ceil(len(handles) / ncol)
        fig.legend([handles[o] for o in sorted(handles)], sorted(handles), loc="upper center",
                   ncol=ncol, bbox_to_anchor=(0.5, 1 - 0.4 / fig.get_figheight()), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.4 + 0.25 * legend_rows) / fig.get_figheight()))
    save_figure(fig, out / f"curves_{kind}.png", layout=False)
    (out / f"curves_{kind}.json").write_text(json.dumps(jsonable(data)))


def y_scale(values) -> tuple[str, float | None]:
    """("log", None) for positive values spanning more than a factor 20, ("symlog", linthresh) for
    values that span decades but reach zero or below (linear within the decade of their median
    magnitude), else ("linear", None)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "linear", None
    lo, hi = min(finite), max(finite)
    if lo > 0:
        return ("log", None) if hi / lo > 20 else ("linear", None)
    typical = float(np.median(np.abs(finite)))
    spread = max(abs(lo), abs(hi))
    if spread > 0 and spread > 30 * max(typical, 1e-12):
        return "symlog", 10.0 ** math.floor(math.log10(max(typical, spread * 1e-8, 1e-12)))
    return "linear", None


def _plot_lr_sensitivity(results, out: Path) -> dict[str, str]:
    """Writes lr_sensitivity.png and .csv; returns the y-axis scale of each task's panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(t for t in results if any(s["tuning"] for s in results[t].values()))
    rows_csv = [("task", "optimizer", "lr", "seed", "selection_loss")]
    for task in tasks:
        for opt, s in results[task].items():
            for hp, seed, loss in s["tuning"]:
                if "lr" in hp:
                    rows_csv.append((task, opt, hp["lr"], seed, loss))
    with open(out / "lr_sensitivity.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows_csv)
    n = max(len(tasks), 1)
    rows, cols = _grid_shape(n)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    colors = _colors({o for t in results for o in results[t]})
    scales: dict[str, str] = {}
    for ax, task in zip(axes.flat, tasks):
        ceiling = []
        series = {}
        for opt, s in sorted(results[task].items()):
            by_lr: dict[float, list] = {}
            for hp, _, loss in s["tuning"]:
                if "lr" in hp and len(hp) == 1:
                    by_lr.setdefault(float(hp["lr"]), []).append(loss)
            if not by_lr:
                continue
            lrs = sorted(by_lr)
            means = [np.mean(by_lr[lr]) if all(v is not None for v in by_lr[lr]) else np.nan for lr in lrs]
            series[opt] = (lrs, means)
            ceiling += [m for m in means if np.isfinite(m)]
        if not ceiling:
            ax.set_title(task)
            continue
        game = _is_game(results[task])
        if game:
            # game metrics are >= 0 and span decades; an exact 0 (an equilibrium reached to the last
            # bit) is drawn at a tenth of the smallest positive value
            floor = min([m for m in ceiling if m > 0] or [1.0]) / 10
            series = {o: (lrs, [max(m, floor) if np.isfinite(m) else m for m in means])
                      for o, (lrs, means) in series.items()}
            ceiling = [max(m, floor) for m in ceiling]
        lo, hi = min(ceiling), max(ceiling)
        scale, linthresh = y_scale(ceiling)
        log_y = scale != "linear"
        top = hi * 2 if log_y and hi > 0 else hi + 0.1 * (hi - lo + 1e-12)
        # rows of crosses a visible step apart: 6% of the axis's decades on a log axis
        step = max(1.35, (hi / (lo if lo > 0 else (linthresh or 1.0))) ** 0.06) if log_y and hi > 0 else 1.0
        for i, (opt, (lrs, means)) in enumerate(series.items()):
            ax.plot(lrs, means, marker="o", ls=_dash(opt), color=colors[opt], label=opt, ms=3, lw=1.2)
            bad = [lr for lr, m in zip(lrs, means) if not np.isfinite(m)]
            if bad:  # one row of crosses per optimizer, so they do not hide each other
                height = top * step ** i if log_y and hi > 0 else top + 0.06 * i * (hi - lo + 1e-12)
                ax.plot(bad, [height] * len(bad), "x", color=colors[opt], ms=6)
            best = results[task][opt]["selection"]["hparams"].get("lr")
            if best is not None:
                ax.axvline(best, color=colors[opt], ls=":", lw=1)
        ax.set_xscale("log")
        if scale == "log":
            ax.set_yscale("log")
        elif scale == "symlog":  # losses that span decades and reach zero or below: linear near 0 only
            ax.set_yscale("symlog", linthresh=linthresh)
        scales[task] = scale
        ax.set_title(task)
        multipliers = any(opt.startswith(TUNED_PREFIX) for opt in series)
        ax.set_xlabel("learning rate" + (" (tuned:NAME: step multiplier)" if multipliers else ""))
        ax.set_ylabel(f"final {GAME_METRIC_LABELS.get(_game_metric_of(results[task]), 'metric')}" if game
                      else "selection loss (valid/train)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best", framealpha=0.7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.suptitle("Learning-rate sensitivity (x: diverged; dotted: chosen)")
    save_figure(fig, out / "lr_sensitivity.png")
    return scales


def _plot_games(results, task_metric, out: Path) -> None:
    """Per game, two panels: the reported metric and ||grad_x f|| + ||grad_y f|| against the step,
    the geometric mean over the complete seeds (log axes: these span decades) with the range of
    the seeds as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(results)
    fig, axes = plt.subplots(len(tasks), 2, figsize=(10.4, 3.4 * len(tasks) + 0.9), squeeze=False)
    colors = _colors({o for t in tasks for o in results[t]})
    data, handles = {}, {}
    for row, task in zip(axes, tasks):
        metric = task_metric[task]
        # the gradient norms beside the metric; where they are the metric, each player's final norm
        panels = [(metric, "metric_curves")] + ([("grad_norm", "grad_curves")] if metric != "grad_norm" else [])
        for ax, (name, key) in zip(row, panels):
            for opt, s in sorted(results[task].items()):
                curves = s[key]
                if not curves:
                    continue
                length = min(len(c[1]) for c in curves)
                steps = np.asarray(curves[0][0][:length], dtype=float)
                stack = np.array([c[1][:length] for c in curves], dtype=float)
                positive = np.clip(stack, 1e-300, None)  # a zero (an exact equilibrium) drawn at the axis floor
                mean = np.exp(np.log(positive).mean(axis=0))
                (line,) = ax.plot(steps, mean, color=colors[opt], lw=1.5, label=opt)
                handles.setdefault(opt, line)
                ax.fill_between(steps, positive.min(axis=0), positive.max(axis=0), color=colors[opt], alpha=0.15, lw=0)
                data.setdefault(task, {}).setdefault(name, {})[opt] = {
                    "steps": steps.tolist(), "geometric_mean": mean.tolist(), "min": positive.min(axis=0).tolist(),
                    "max": positive.max(axis=0).tolist(), "seeds": len(stack)}
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_ylabel(GAME_METRIC_LABELS.get(name, name))
            ax.set_title(f"{task}: {GAME_METRIC_LABELS.get(name, name)}", fontsize=10)
            ax.grid(alpha=0.3, which="both")
        if metric == "grad_norm":
            ax = row[1]
            ticks, labels = [], []
            for i, (opt, s) in enumerate(sorted(results[task].items())):
                finals = s["final"]
                if "grad_x_norm" in finals:  # x and y side by side per optimizer, in its colour
                    ax.bar([3 * i, 3 * i + 1], [finals["grad_x_norm"][0], finals["grad_y_norm"][0]],
                           color=colors[opt], alpha=0.8)
                    ticks += [3 * i, 3 * i + 1]
                    labels += ["‖∇ₓf‖", "‖∇ᵧf‖"]
            ax.set_xticks(ticks, labels, fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("final gradient norm (mean over seeds)")
            ax.set_title(f"{task}: each player's final gradient norm", fontsize=10)
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Games: geometric mean over seeds, band from the lowest to the highest seed")
    ncol = max(1, min(len(handles), 6))
    fig.legend([handles[o] for o in sorted(handles)], sorted(handles), loc="upper center", ncol=ncol,
               bbox_to_anchor=(0.5, 1 - 0.4 / fig.get_figheight()), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / fig.get_figheight()))
    save_figure(fig, out / "curves_games.png", layout=False)
    (out / "curves_games.json").write_text(json.dumps(jsonable(data)))


def _plot_profile(results, task_metric, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = {}
    for task, per_opt in results.items():
        costs[task] = {}
        for opt, s in per_opt.items():
            if task_metric[task] == "test_accuracy":
                value = 1.0 - s["test_accuracy"][0] if math.isfinite(s["test_accuracy"][0]) else math.inf
                value = max(value, 1e-4)  # a perfect score still gets a finite ratio
            else:
                value = s["test_loss"][0] if math.isfinite(s["test_loss"][0]) else math.inf
            if s["n_diverged"] or s["n_failed"]:
                value = math.inf if s["n_finished"] == s["n_diverged"] else value
            costs[task][opt] = value
    # The tau axis spans the ratios that occur (at least 1 to 1.05), so close results stay visible.
    max_ratio = 1.05
    for per_task in costs.values():
        finite = [v for v in per_task.values() if math.isfinite(v) and v > 0]
        if finite:
            max_ratio = max(max_ratio, 1.05 * max(finite) / min(finite))
    taus = np.logspace(0, math.log10(max_ratio), 300)
    profile = metrics.performance_profile(costs, taus)
    with open(out / "performance_profile.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tau", *profile])
        for i, tau in enumerate(taus):
            writer.writerow([f"{tau:.5g}", *(f"{profile[o][i]:.4g}" for o in profile)])
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = _colors(profile)
    for opt, rho in profile.items():
        ax.step(taus, rho, where="post", color=colors[opt], ls=_dash(opt), label=opt, lw=1.8)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("τ (within a factor τ of the best on the task)")
    ax.set_ylabel("fraction of tasks")
    ax.set_title(f"Performance profile over {len(costs)} tasks\n(test loss; 1 − accuracy on accuracy tasks)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=9)
    save_figure(fig, out / "performance_profile.png")
