"""Every figure l2o saves has all its artists inside the saved canvas (titles, figure legends,
tick labels), checked while the figure is drawn into its file; the report of an interrupted
sweep says which rows are incomplete; lr_sensitivity.png uses log axes where losses span decades."""

import json
import math

import matplotlib
import pytest

matplotlib.use("Agg")

from l2o.plotting import artists_outside  # noqa: E402


@pytest.fixture
def saved_figures(monkeypatch):
    """Records, for each figure saved while the test runs, its file name and the artists that lay
    outside the canvas at the last draw (the one written to the file)."""
    from matplotlib.figure import Figure

    original = Figure.savefig
    seen = []

    def savefig(self, fname, *args, **kwargs):
        found = {}
        cid = self.canvas.mpl_connect("draw_event", lambda event: found.update(
            outside=artists_outside(self, event.renderer)))
        try:
            result = original(self, fname, *args, **kwargs)
        finally:
            self.canvas.mpl_disconnect(cid)
        seen.append((str(fname), found.get("outside", ["figure never drawn"])))
        return result

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def _sweep(tmp_path, tasks, optimizers, seeds=2, grids=None):
    from l2o.bench.runner import Plan, run_benchmark

    db = str(tmp_path / "r.sqlite")
    run_benchmark(Plan(tasks=tasks, optimizers=optimizers, grids=grids or {}, protocol="smoke", tune_seeds=1,
                       seeds=seeds), db, workers=1, progress=False)
    return db


def test_report_of_a_single_task_cuts_nothing(tmp_path, saved_figures):
    from l2o.bench.report import make_report

    db = _sweep(tmp_path, ["quadratic_10d_tiny"], ["sgd", "momentum", "adam", "tuned:yellowfin"],
                grids={o: {"lr": [0.01, 0.1]} for o in ("sgd", "momentum", "adam")} |
                {"tuned:yellowfin": {"lr": [0.3, 1.0]}})
    make_report(db, str(tmp_path / "report"))
    names = sorted(name.rsplit("/", 1)[-1] for name, _ in saved_figures)
    assert names == ["curves_test.png", "curves_train.png", "lr_sensitivity.png", "performance_profile.png"]
    assert all(not outside for _, outside in saved_figures), saved_figures


def test_report_of_games_cuts_nothing(tmp_path, saved_figures):
    from l2o.bench.report import make_report

    db = _sweep(tmp_path, ["game_f1_tiny", "game_mog1d_tiny"], ["gda", "ftr+rmsprop"],
                grids={"gda": {"lr": [0.01, 0.1]}, "ftr+rmsprop": {"lr": [0.01, 0.1]}})
    make_report(db, str(tmp_path / "report"))
    names = sorted(name.rsplit("/", 1)[-1] for name, _ in saved_figures)
    assert names == ["curves_games.png", "lr_sensitivity.png"]
    assert all(not outside for _, outside in saved_figures), saved_figures


def test_meta_eval_figure_cuts_nothing(tmp_path, saved_figures):
    from l2o.meta.plot import plot_comparison

    curve = {"mean": [1.0, 0.5, 0.2], "p10": [0.9, 0.4, 0.1], "p90": [1.1, 0.6, 0.3]}
    row = {"adam_lr": 0.01, "learned": {"curve": curve, "train": {}}, "adam": {"curve": curve, "train": {"diverged": 1}}}
    results = {"budgets": {3: row}, "rule": "mlp", "task": "digits_mlp", "task_args": {"hidden": 32}, "seeds": 10}
    plot_comparison(results, tmp_path / "eval.png")
    assert len(saved_figures) == 1 and not saved_figures[0][1], saved_figures
