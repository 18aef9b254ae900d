"""Figures of meta-training: a run's, from its ``history.jsonl`` (``l2o meta train``, ``l2o meta
plot``), and a learned optimizer's training curves against tuned Adam (``l2o meta eval --plot``).

``MetaTrainer`` appends to ``OUT/history.jsonl`` at every checkpoint: every 10 outer steps the
mean meta-loss of those steps (``{"step", "meta_loss", "world_size"}``), and each
validation (``{"step", "val"}``). A rollback or a resume can write a step again; the later row
wins, since it belongs to the run that went on from there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def read_history(path: str | Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(step, meta-loss) and (step, validation) rows of a history file, by step, the last
    occurrence of a step kept."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no meta-training history at {path} (l2o meta train writes it at each checkpoint)")
    meta, val = {}, {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not JSON ({exc.msg})") from None
        value = row.get("meta_loss", row.get("val"))
        if "step" not in row or value is None:  # null: a non-finite value, not plotted
            continue
        (meta if "meta_loss" in row else val)[int(row["step"])] = float(value)
    return sorted(meta.items()), sorted(val.items())


def plot_history(path: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Write the figure of the run whose history is ``path`` to ``out`` (PNG): the meta-loss by
    outer step (with a running mean) and, when the run validated, the validation score with its
    best point marked."""
    plt = _pyplot()
    meta, val = read_history(path)
    if not meta and not val:
        raise ValueError(f"{path} holds no meta-loss or validation rows yet")
    panels = [p for p, rows in (("meta", meta), ("val", val)) if rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.0), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "meta":
            steps, values = zip(*meta)
            width = max(1, len(values) // 20)
            ax.plot(steps, values, color="tab:blue", alpha=0.35 if width > 1 else 1.0, linewidth=1,
                    marker="" if width > 1 else ".", label="mean of 10 outer steps")
            if width > 1:
                smooth = [sum(values[max(0, i - width + 1):i + 1]) / len(values[max(0, i - width + 1):i + 1])
                          for i in range(len(values))]
                ax.plot(steps, smooth, color="tab:blue", linewidth=2, label=f"running mean of {width} points")
            ax.set_ylabel("meta-loss: mean log(f_t / f_0) over a truncation")
            ax.set_title("meta-training")
        else:
            steps, values = zip(*val)
            ax.plot(steps, values, "o-", color="tab:green", label="validation")
            finite = [(s, v) for s, v in val if math.isfinite(v)]
            if finite:
                best = min(finite, key=lambda sv: sv[1])
                ax.plot(*best, "*", color="tab:red", markersize=14, label=f"best: {best[1]:.3f} at {best[0]}")
            ax.set_ylabel("validation: mean final log(f_T / f_0)")
            ax.set_title("validation (lower is better)")
        ax.set_xlabel("outer step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, out)


def plot_comparison(results: dict, out: str | Path) -> Path:
    """Write the training curves of :func:`l2o.meta.evaluate.compare_with_adam`'s ``results`` to
    ``out`` (PNG): one panel per budget, the learned optimizer and tuned Adam, mean minibatch loss
    over seeds with the 10th-90th percentile band."""
    plt = _pyplot()
    budgets = results["budgets"]
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.5 * len(budgets), 4.0), squeeze=False)
    learned = f"{results.get('rule', 'learned')} (learned)" + (f", adapt {results['adapt']:g}" if results.get("adapt") else "")
    for ax, (steps, row) in zip(axes[0], budgets.items()):
        for label, name, color in (("learned", learned, "tab:red"), ("adam", f"Adam, lr {row['adam_lr']:g} (tuned)",
                                                                       "tab:blue")):
            curve = row[label]["curve"]
            if not curve["mean"]:
                continue
            x = range(1, len(curve["mean"]) + 1)
            diverged = row[label]["train"].get("diverged", 0)
            ax.plot(x, curve["mean"], color=color, label=name + (f" ({diverged} diverged, left out)" if diverged else ""))
            ax.fill_between(x, curve["p10"], curve["p90"], color=color, alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (minibatch)")
        ax.set_title(f"{steps} steps")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    args = ", ".join(f"{k}={v}" for k, v in (results.get("task_args") or {}).items())
    fig.suptitle(f"{results['task']}{f' ({args})' if args else ''}: mean over {results['seeds']} seeds, "
                 "band 10th-90th percentile")
    return _save(plt, fig, out)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, whatever display there is
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, out: str | Path) -> Path:
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from l2o.plotting import save_figure  # every artist inside the saved canvas, nothing cut

    save_figure(fig, out, dpi=100, close=False)
    plt.close(fig)
    return out


__all__ = ["read_history", "plot_history", "plot_comparison"]
