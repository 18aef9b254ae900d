"""Games (l2o.minimax) as benchmark tasks: two-player optimizer names, the protocol, the report."""

import json
import sys

import pytest
import torch

from l2o.bench import optimizers
from l2o.bench.deepobs import export_deepobs
from l2o.bench.report import make_report
from l2o.bench.runner import Plan, run_benchmark
from l2o.bench.store import ResultsStore
from l2o.bench.suites import game_metric, get_preset
from l2o.minimax import FollowTheRidge, GDA


def _players():
    return [torch.zeros(2, requires_grad=True)], [torch.zeros(2, requires_grad=True)]


def test_two_player_names_resolve_with_their_preconditioner():
    spec = optimizers.resolve("FTR+Adam")
    assert spec.kind == "minimax" and spec.two_player and spec.tunable and spec.precondition == "adam"
    opt = spec.game_factory({"lr": 0.1, "cg_iters": 3})(*_players())
    assert isinstance(opt, FollowTheRidge) and opt.lr_x == opt.lr_y == 0.1 and opt.precondition == "adam"
    # a grid can set the players' step sizes apart; lr then fills only the one not given
    opt = optimizers.resolve("gda").game_factory({"lr": 0.1, "lr_y": 0.5})(*_players())
    assert isinstance(opt, GDA) and (opt.lr_x, opt.lr_y) == (0.1, 0.5) and opt.precondition is None
    with pytest.raises(ValueError, match="gda\\+rmsprop or gda\\+adam"):
        optimizers.resolve("gda+sgd")
    with pytest.raises(ValueError, match="plays games"):
        optimizers.resolve("ogda").factory({"lr": 0.1})
    with pytest.raises(ValueError, match="one-player optimizer; a game needs a two-player one"):
        optimizers.resolve("adam").game_factory({"lr": 0.1})


def test_games_and_tasks_are_not_mixed_and_each_gets_its_kind_of_optimizer(tmp_path):
    db = str(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match="run them as two sweeps"):
        run_benchmark(Plan(["game_f1_tiny", "quadratic_10d_tiny"], ["gda"]), db, progress=False)
    with pytest.raises(ValueError, match="adam: one-player optimizer.*use two-player ones: gda"):
        run_benchmark(Plan(["game_f1_tiny"], ["gda", "adam"]), db, progress=False)
    with pytest.raises(ValueError, match="ftr: two-player optimizer.*not the tasks quadratic_10d_tiny"):
        run_benchmark(Plan(["quadratic_10d_tiny"], ["sgd", "ftr"]), db, progress=False)
    with pytest.raises(ValueError, match="rejects hyperparameters.*cg_iters"):
        run_benchmark(Plan(["game_f1_tiny"], ["ftr"], grids={"ftr": {"lr": [0.1], "cg_iters": [0]}}), db,
                      progress=False)


def test_game_presets_and_metrics():
    assert get_preset("game_f1").game and get_preset("f2").game  # a game's name is a task id too
    f1, f2 = get_preset("game_f1").build(0), get_preset("game_f2").build(0)
    assert f1.steps == 500 and game_metric(f1) == "distance"
    assert game_metric(f2) == "grad_norm"  # f2's origin is no local minimax point: no equilibrium to measure to
    gan = get_preset("game_mog1d").build(0)
    assert gan.batch_size == 64 and gan.g_sizes == [16, 16, 16, 1] and game_metric(gan) == "grad_norm"


def test_sweep_on_f1_finds_follow_the_ridge_converging_where_gda_does_not(tmp_path):
    """The paper's f1 property through the whole harness, each method at its tuned step size."""
    db = str(tmp_path / "g.sqlite")
    plan = Plan(["game_f1_tiny"], ["gda", "ftr"], protocol="smoke", tune_seeds=1, seeds=2)
    totals = run_benchmark(plan, db, progress=False)
    assert totals["tune"].done == 8 and totals["final"].done == 2 and totals["final"].failed == 0
    with ResultsStore(db) as store:
        final = {}
        for sel in store.selections():
            runs = [r for r in store.runs(task="game_f1_tiny", optimizer=sel["optimizer"])
                    if r["hparams"] == sel["hparams"] and r["status"] == "complete"]
            assert len(runs) == 2 and all(r["selection_split"] == "distance" for r in runs)
            final[sel["optimizer"]] = max(r["selection_loss"] for r in runs)
            curves = store.curves(runs[0]["id"])
            assert curves["distance"][0] == list(range(0, 61, 10)) and curves["distance"][1][-1] == runs[0]["selection_loss"]
            assert {"f", "grad_x_norm", "grad_y_norm"} <= set(curves)
    # from 8.6 away: FR closes in on the origin, GDA at its best step size does not (60 steps only)
    assert final["ftr"] < 1e-3 and final["gda"] > 1.0

    summary = make_report(db, str(tmp_path / "report"))
    text = summary.read_text()
    assert "## game_f1_tiny" in text and "distance to the equilibrium (mean ± std)" in text
    assert "| ftr | lr=" in text and "| gda | lr=" in text and "time/step ÷ gda" in text
    assert "speedup vs Adam" not in text  # the task columns do not apply to games
    data = json.loads((tmp_path / "report" / "summary.json").read_text())["game_f1_tiny"]
    assert data["game"] and data["metric"] == "distance"
    assert data["optimizers"]["ftr"]["distance_mean"] < 1e-3 < 1.0 < data["optimizers"]["gda"]["distance_mean"]
    for name in ("curves_games.png", "lr_sensitivity.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert not (tmp_path / "report" / "curves_train.png").exists()
    assert export_deepobs(db, str(tmp_path / "deepobs")) == []  # DeepOBS has no games


def test_gan_rows_report_mode_coverage(tmp_path):
    db = str(tmp_path / "g.sqlite")
    run_benchmark(Plan(["game_mog1d_tiny"], ["gda+rmsprop"], grids={"gda+rmsprop": {"lr": [0.01]}}, seeds=2), db,
                  progress=False)
    text = make_report(db, str(tmp_path / "report")).read_text()
    assert "modes covered of 3" in text and "‖∇ₓf‖ + ‖∇ᵧf‖ (mean ± std)" in text and "(untuned)" in text


def test_a_game_of_ones_own_by_module_path(tmp_path, monkeypatch):
    (tmp_path / "my_games.py").write_text(
        "import torch\n"
        "from l2o.minimax import Game\n"
        "class Saddle(Game):\n"
        "    name, steps = 'saddle', 40\n"
        "    equilibrium = ({'x': torch.zeros(2)}, {'y': torch.zeros(2)})\n"
        "    def init_params(self, generator):\n"
        "        return {'x': torch.randn(2, generator=generator)}, {'y': torch.randn(2, generator=generator)}\n"
        "    def loss(self, x, y, batch=None):\n"
        "        return (x['x'] ** 2).sum() - (y['y'] ** 2).sum() + (x['x'] * y['y']).sum()\n"
        "def game():\n"
        "    return Saddle()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    db = str(tmp_path / "g.sqlite")
    run_benchmark(Plan(["my_games:game"], ["gda"], grids={"gda": {"lr": [0.1]}}, seeds=2), db, progress=False)
    with ResultsStore(db) as store:
        runs = store.runs(task="my_games:game")
    # a strongly convex-concave saddle: GDA at step size 0.1 contracts by about 0.9 per step
    assert len(runs) == 2 and all(r["status"] == "complete" and r["selection_split"] == "distance" for r in runs)
    assert all(r["task_config"]["game"] and 0 < r["selection_loss"] < 0.05 for r in runs)
