"""report.md and figures of a continual-learning experiment (from its results dict)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def _fmt(stat: dict, pct: bool = True) -> str:
    if stat is None or stat.get("mean") is None:
        return "n/a"
    k = 100.0 if pct else 1.0
    return f"{k * stat['mean']:.1f} ± {k * stat['std']:.1f}"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    from l2o.io import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_task_curves(results: dict, path: Path) -> None:
    """One panel per method: each task's test accuracy (mean over seeds) after each task of the sequence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["methods"])
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.9 * rows), squeeze=False, sharey=True)
    labels = results.get("task_names")
    for ax, name in zip(axes.flat, names):
        R = np.array(results["methods"][name]["R"], dtype=float).mean(0)
        T = R.shape[0]
        for j in range(T):
            ax.plot(range(j + 1, T + 1), 100 * R[j:, j], "o-", ms=3, label=labels[j] if labels else f"task {j + 1}")
        ax.set_title(name, fontsize=10)
        ax.set_xticks(range(1, T + 1))
        ax.set_xlabel("after training task")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, lab = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, lab, loc="lower center", ncol=min(len(lab), 5), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"{results['config']['scenario']}: accuracy of each task along the sequence "
                 f"(mean of {results['config']['seeds']} seed{'s' if results['config']['seeds'] > 1 else ''})", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save(fig, path)


def plot_heatmaps(results: dict, path: Path) -> None:
    """One heat map of R (mean over seeds, %) per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["methods"])
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        R = 100 * np.array(results["methods"][name]["R"], dtype=float).mean(0)
        T = R.shape[0]
        im = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
        for i in range(T):
            for j in range(T):
                ax.text(j, i, f"{R[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if R[i, j] < 60 else "black")
        ax.set_xticks(range(T), [str(j + 1) for j in range(T)])
        ax.set_yticks(range(T), [str(i + 1) for i in range(T)])
        ax.set_xlabel("evaluated on task j")
        ax.set_title(name, fontsize=10)
    for ax in axes[:, 0]:
        ax.set_ylabel("after training task i")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="test accuracy R[i][j] (%)")
    fig.suptitle(f"{results['config']['scenario']}: accuracy matrices", fontsize=10)
    _save(fig, path)


def markdown(results: dict) -> str:
    cfg = results["config"]
    lines = [f"# Continual learning: {cfg['scenario']}, {cfg['tasks']} tasks", "",
             f"Command: `{results.get('command') or 'l2o continual run'}`", "",
             f"Settings: {cfg['epochs']} epochs per task, batch {cfg['batch_size']}, M = {cfg['memory']} stored "
             f"examples per task (OGD, A-GEM), evaluation seeds 0..{cfg['seeds'] - 1}, hyperparameters chosen by mean "
             f"final validation accuracy on tuning seed{'s 1000..' + str(999 + cfg['tune_seeds']) if cfg['tune_seeds'] > 1 else ' 1000'}"
             " (never on test).", "",
             "Grids: " + "; ".join(f"{n}: " + ", ".join(f"{k} in {{{', '.join(f'{v:g}' for v in vals)}}}"
                                                           for k, vals in m["grid"].items())
                                   for n, m in results["methods"].items()) + ".", "",
             "Test accuracy in % (mean ± std over seeds); forgetting = mean drop from each task's best accuracy "
             "(Chaudhry et al.); BWT / FWT as in Lopez-Paz & Ranzato.", "",
             "| method | chosen | avg accuracy | forgetting | BWT | FWT | note |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in results["methods"].items():
        hp = ", ".join(f"{k}={v:g}" for k, v in m["hyperparameters"].items())
        note = []
        if m["at_grid_edge"]:
            note.append("at grid edge: " + ", ".join(m["at_grid_edge"]))
        if any(m["diverged"]):
            note.append(f"diverged in {sum(m['diverged'])} seed(s)")
        lines.append(f"| {name} | {hp} | {_fmt(m['avg_accuracy'])} | {_fmt(m['forgetting'])} | {_fmt(m['bwt'])} | "
                     f"{_fmt(m['fwt'])} | {'; '.join(note)} |")
    hat = results["methods"].get("hat")
    if hat:
        usage = np.array([[e["mask_usage"] for e in seed] for seed in hat["extras"]], dtype=float).mean(0)
        lines += ["", "HAT: fraction of each layer's units used by tasks 1..t (cumulative mask, mean over seeds):", "",
                  "| after task | " + " | ".join(f"layer {k + 1}" for k in range(usage.shape[1])) + " |",
                  "| --- |" + " --- |" * usage.shape[1]]
        for t, row in enumerate(usage):
            lines.append(f"| {t + 1} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    sgd = results["methods"].get("sgd")
    if sgd and sgd["forgetting"]["mean"]:
        lines += ["", "Forgetting relative to SGD fine-tuning (1 − forgetting / forgetting of sgd):", ""]
        for name, m in results["methods"].items():
            if name != "sgd" and m["forgetting"]["mean"] is not None:
                lines.append(f"- {name}: {100 * (1 - m['forgetting']['mean'] / sgd['forgetting']['mean']):.0f}%")
    lines += ["", "Figures: `continual_accuracy.png` (each task along the sequence), `continual_heatmaps.png` (R).", ""]
    return "\n".join(lines)


def write_report(results: dict, out: Path) -> dict:
    from l2o.io import atomic_write_text

    out = Path(out)
    paths = {"report": out / "report.md", "accuracy_plot": out / "continual_accuracy.png",
             "heatmaps": out / "continual_heatmaps.png"}
    plot_task_curves(results, paths["accuracy_plot"])
    plot_heatmaps(results, paths["heatmaps"])
    atomic_write_text(paths["report"], markdown(results))
    return paths
