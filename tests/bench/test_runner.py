import pytest
import torch

from l2o.bench import optimizers
from l2o.bench.runner import Plan, RunSpec, _freeze, run_benchmark, select
from l2o.bench.store import ResultsStore
from l2o.bench.suites import get_preset


def test_protocol_tunes_selects_reruns_and_resumes(tmp_path):
    db = str(tmp_path / "r.sqlite")
    plan = Plan(tasks=["quadratic_10d_tiny"], optimizers=["sgd", "torch.optim:Adagrad"],
                grids={"sgd": {"lr": [1e-3, 1e-2, 10.0]}, "torch.optim:Adagrad": {"lr": [0.1]}},
                tune_seeds=2, seeds=3)
    totals = run_benchmark(plan, db, workers=1, progress=False)
    assert totals["tune"].done == 6 and totals["tune"].diverged == 2  # lr=10 diverges on both seeds
    assert totals["final"].done == 1 + 3 and totals["final"].skipped == 2  # seeds 0, 1 reuse the tuning runs
    with ResultsStore(db) as store:
        runs = store.runs(task="quadratic_10d_tiny")
        assert len(runs) == 10
        diverged = [r for r in runs if r["status"] == "diverged"]
        assert len(diverged) == 2 and all(r["hparams"] == {"lr": 10.0} for r in diverged)
        assert all(r["versions"]["torch"] for r in runs)
        sel = {s["optimizer"]: s for s in store.selections()}
        assert sel["sgd"]["tuned"] and sel["sgd"]["hparams"] == {"lr": 1e-2} and sel["sgd"]["n_configs"] == 3
        assert not sel["torch.optim:Adagrad"]["tuned"]  # a one-point grid is not tuning
        assert sel["sgd"]["final_seeds"] == [0, 1, 2]
        # each seed is a fresh problem of the quadratic family
        finals = [r for r in runs if r["optimizer"] == "sgd" and r["hparams"] == {"lr": 1e-2}]
        assert len({round(r["final_test_loss"], 6) for r in finals}) == 3
    again = run_benchmark(plan, db, workers=1, progress=False)
    assert again["tune"].done == 0 and again["final"].done == 0 and again["final"].skipped == 6
    with ResultsStore(db) as store:
        assert len(store.runs()) == 10


def test_selection_never_reads_test_numbers(tmp_path):
    preset = get_preset("quadratic_10d_tiny")
    spec = optimizers.resolve("sgd")
    specs = [RunSpec("q", preset, spec, _freeze({"lr": lr}), seed, 30, None) for lr in (0.1, 0.2) for seed in (0, 1)]
    with ResultsStore(tmp_path / "s.sqlite") as store:
        for s in specs:
            good = s.hparams_dict["lr"] == 0.1
            store.record_run({"run_key": s.key, "task": "q", "task_config": preset.config(), "optimizer": "sgd",
                              "hparams": s.hparams_dict, "seed": s.seed, "steps": 30, "status": "complete",
                              # lr=0.1 wins on selection loss, loses on test loss
                              "selection_loss": 1.0 if good else 2.0, "final_test_loss": 9.0 if good else 0.0,
                              "versions": {}})
        best, loss = select(store, specs)
    assert best == {"lr": 0.1} and loss == 1.0


def test_optimizer_names_and_errors(monkeypatch, tmp_path):
    assert optimizers.resolve("momentum").kind == "builtin"
    assert optimizers.resolve("ADAM").name == "adam"
    import torch

    param = torch.zeros(3, requires_grad=True)
    nag = optimizers.resolve("nag").factory({"lr": 0.1})([param])
    assert nag.param_groups[0]["nesterov"] and nag.param_groups[0]["momentum"] == 0.9
    assert isinstance(optimizers.resolve("torch.optim.Adagrad").factory({})([param]), torch.optim.Adagrad)
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'.*Did you mean adam.*Known: adam, momentum"):
        optimizers.resolve("adamm")
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        optimizers.resolve("torch.optim:Nope")
    with pytest.raises(ValueError, match="cannot import module"):
        optimizers.resolve("no_such_module_xyz:Opt")
    (tmp_path / "half_written_opt.py").write_text("class Opt(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="'half_written_opt' of optimizer 'half_written_opt:Opt' fails to import: "
                                         "SyntaxError"):
        optimizers.resolve("half_written_opt:Opt")
    with pytest.raises(ValueError, match="unknown learned optimizer"):
        optimizers.resolve("learned:no-such-weights")
    from l2o import optim

    monkeypatch.setitem(optim.OPTIMIZERS._entries, "brokenopt", "l2o.no_such_module:Broken")
    with pytest.raises(ValueError, match="'brokenopt' is registered in l2o.optim but cannot be imported"):
        optimizers.resolve("brokenopt")
    assert optimizers.resolve("sgd").kind == "builtin"  # the others keep working


def test_tuned_prefix_tunes_the_step_multiplier_of_untuned_optimizers(tmp_path):
    from l2o.bench.grids import PROTOCOL_MULTIPLIER_GRIDS

    spec = optimizers.resolve("tuned:mlp-general")
    assert spec.tunable and spec.multiplier_tuned and spec.base == "mlp-general" and spec.kind == "learned"
    assert not optimizers.resolve("mlp-general").tunable and not optimizers.resolve("yellowfin").tunable
    assert optimizers.resolve("tuned:yellowfin").base == "yellowfin"
    plan = Plan(tasks=["quadratic_10d_tiny"], optimizers=["mlp-general", "tuned:mlp-general"], protocol="smoke",
                tune_seeds=1, seeds=2)
    assert plan.grid_for(optimizers.resolve("mlp-general")) == ([{}], False)
    configs, tuned = plan.grid_for(spec)
    assert tuned and configs == [{"lr": m} for m in PROTOCOL_MULTIPLIER_GRIDS["smoke"]]
    assert 1.0 in PROTOCOL_MULTIPLIER_GRIDS["smoke"] and len(PROTOCOL_MULTIPLIER_GRIDS["quick"]) == 11
    db = str(tmp_path / "t.sqlite")
    run_benchmark(plan, db, workers=1, progress=False)
    with ResultsStore(db) as store:
        sel = {s["optimizer"]: s for s in store.selections()}
        assert not sel["mlp-general"]["tuned"] and sel["mlp-general"]["hparams"] == {}
        assert sel["tuned:mlp-general"]["tuned"] and sel["tuned:mlp-general"]["n_configs"] == 3
        assert sel["tuned:mlp-general"]["hparams"]["lr"] in PROTOCOL_MULTIPLIER_GRIDS["smoke"]
        # the multiplier really scales the learned step: the three tuning runs end at different losses
        tuning = [r for r in store.runs(task="quadratic_10d_tiny", optimizer="tuned:mlp-general")
                  if r["seed"] == 0]
        assert len({round(r["final_test_loss"], 6) for r in tuning}) == 3
    with pytest.raises(ValueError, match="'tuned:adam': 'adam' has its learning rate tuned already"):
        optimizers.resolve("tuned:adam")
    with pytest.raises(ValueError, match="unknown optimizer 'nope'"):
        optimizers.resolve("tuned:nope")


def test_adapt_suffix_runs_a_learned_optimizer_with_step_adaptation(tmp_path):
    spec = optimizers.resolve("mlp-general@adapt=0.1")
    assert spec.kind == "learned" and not spec.tunable and spec.adapt == 0.1
    opt = spec.factory({})([torch.zeros(3, requires_grad=True)])
    assert opt.adapt == 0.1 and type(opt.rule).__name__ == "MLPRule"
    tuned = optimizers.resolve("tuned:mlp-general@adapt=0.1")
    assert tuned.multiplier_tuned and tuned.factory({"lr": 2.0})([torch.zeros(3, requires_grad=True)]).adapt == 0.1
    for bad, message in (("adam@adapt=0.1", "applies to learned optimizers"),
                         ("mlp-general@adapt=-1", "finite number >= 0"),
                         ("mlp-general@adapt=fast", "finite number >= 0")):
        with pytest.raises(ValueError, match=message):
            optimizers.resolve(bad)
    plan = Plan(tasks=["quadratic_10d_tiny"], optimizers=["mlp-general", "mlp-general@adapt=0.3"], protocol="smoke",
                tune_seeds=1, seeds=1)
    db = str(tmp_path / "a.sqlite")
    run_benchmark(plan, db, workers=1, progress=False)
    with ResultsStore(db) as store:
        finals = {r["optimizer"]: r["final_train_loss"] for r in store.runs(task="quadratic_10d_tiny")}
    assert set(finals) == {"mlp-general", "mlp-general@adapt=0.3"}
    assert finals["mlp-general"] != finals["mlp-general@adapt=0.3"]  # the adaptation is applied


def test_plan_errors(tmp_path):
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        Plan(tasks=["quadratic_10d_tiny"], optimizers=["sgd"], seeds=0)
    with pytest.raises(ValueError, match="protocol must be one of"):
        Plan(tasks=["quadratic_10d_tiny"], optimizers=["sgd"], protocol="huge")
    with pytest.raises(ValueError, match="unknown task 'quadratic_deeep'.*Did you mean quadratic_deep"):
        run_benchmark(Plan(tasks=["quadratic_deeep"], optimizers=["sgd"]), str(tmp_path / "x.sqlite"))
    plan = Plan(tasks=["quadratic_10d_tiny"], optimizers=["adam"], grids={"adam": {"momentum": [0.9]}})
    with pytest.raises(ValueError, match="'adam' rejects hyperparameters {'momentum': 0.9}"):
        run_benchmark(plan, str(tmp_path / "x.sqlite"))


def test_report_pairs_a_tuned_row_with_its_untuned_optimizer():
    from l2o.bench.report import _colors, _dash

    colors = _colors({"adam", "mlp-general", "tuned:mlp-general", "yellowfin"})
    assert colors["tuned:mlp-general"] == colors["mlp-general"]
    assert len({colors[n] for n in ("adam", "mlp-general", "yellowfin")}) == 3
    assert _dash("tuned:mlp-general") == "--" and _dash("mlp-general") == "-"


def test_grid_edges_flags_choices_at_either_end_of_the_grid():
    from l2o.bench.report import grid_edges

    tuning = [({"lr": lr, "momentum": mom}, seed, 1.0) for lr in (0.01, 0.1, 1.0) for mom in (0.9,) for seed in (0, 1)]
    assert grid_edges({"lr": 1.0, "momentum": 0.9}, tuning) == {"lr": "high"}  # a one-value axis is not tuned
    assert grid_edges({"lr": 0.01, "momentum": 0.9}, tuning) == {"lr": "low"}
    assert grid_edges({"lr": 0.1, "momentum": 0.9}, tuning) == {}
    # a larger value that diverged (loss None) still bounds the grid: 1.0 was tried
    tuning[-1] = ({"lr": 10.0, "momentum": 0.9}, 1, None)
    assert grid_edges({"lr": 1.0, "momentum": 0.9}, tuning) == {}


def test_report_marks_a_learning_rate_chosen_at_the_top_of_its_grid(tmp_path):
    import json

    from l2o.bench.report import make_report

    db = str(tmp_path / "edge.sqlite")
    # SGD on a quadratic for 30 steps: of 1e-4 and 1e-3 the larger one wins (too small a grid)
    plan = Plan(tasks=["quadratic_10d_tiny"], optimizers=["sgd", "adam"],
                grids={"sgd": {"lr": [1e-4, 1e-3]}, "adam": {"lr": [1e-3, 1e-2, 1e-1, 1.0, 10.0]}},
                tune_seeds=1, seeds=2)
    run_benchmark(plan, db, workers=1, progress=False)
    summary = make_report(db, str(tmp_path / "report"))
    table = json.loads((tmp_path / "report" / "summary.json").read_text())["quadratic_10d_tiny"]["optimizers"]
    assert table["sgd"]["hparams"] == {"lr": 1e-3} and table["sgd"]["grid_edges"] == {"lr": "high"}
    assert table["adam"]["grid_edges"] == {}, table["adam"]["hparams"]
    row = next(line for line in summary.read_text().splitlines() if line.startswith("| sgd |"))
    assert "lr=0.001 (grid top)" in row


def test_learned_path_benchmarks_a_weights_file_from_meta_training(tmp_path):
    from l2o.learned.mlp import MLPRule
    from l2o.learned.weights import WeightsFileError, save_rule

    weights = tmp_path / "weights.safetensors"
    save_rule(weights, MLPRule(hidden=4))
    name = f"learned:{weights}"
    spec = optimizers.resolve(name)
    assert spec.kind == "learned" and not spec.tunable
    assert optimizers.resolve(f"tuned:{name}").tunable
    db = str(tmp_path / "w.sqlite")
    plan = Plan(tasks=["quadratic_10d_tiny"], optimizers=[name], grids={}, tune_seeds=1, seeds=1)
    totals = run_benchmark(plan, db, workers=1, progress=False)
    assert totals["final"].done == 1
    with ResultsStore(db) as store:
        (run,) = store.runs(optimizer=name)
        assert run["status"] == "complete" and run["final_test_loss"] is not None
    bad = tmp_path / "notes.txt"
    bad.write_text("not weights")
    with pytest.raises(WeightsFileError):
        optimizers.resolve(f"learned:{bad}")
    with pytest.raises(ValueError, match="neither a shipped name .* nor an existing weights file"):
        optimizers.resolve(f"learned:{tmp_path / 'missing.safetensors'}")
