"""`l2o meta train` / `l2o meta eval`: checkpoints, resume, NaN rollback, estimators, the table."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from l2o.cli import main
from l2o.io import load_tensors
from l2o.bench.optimizers import resolve
from l2o.learned.mlp import MLPRule
from l2o.learned.optimizer import LearnedOptimizer
from l2o.learned.weights import load_rule
from l2o.meta.trainer import MetaConfig, MetaTrainer
from l2o.tasks.mlp_problems import MLPProblemFamily

TINY = ["--task", "regression", "--widths", "4", "--depths", "1", "--batch-sizes", "8", "--horizon", "10:20",
        "--unroll", "5", "--batch", "2", "--groups", "1", "--hidden", "4", "--val-steps", "5", "--no-progress"]


def test_train_writes_checkpoints_and_weights_then_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["meta", "train", *TINY, "--steps", "4", "--checkpoint-every", "2", "--val-every", "2",
                 "--out", str(out)]) == 0
    for name in ("last.safetensors", "best.safetensors", "weights.safetensors", "weights.json", "best_weights.safetensors"):
        assert (out / name).is_file(), name
    _, meta = load_tensors(out / "last.safetensors")
    assert meta["step"] == 4
    card = json.loads((out / "weights.json").read_text())
    assert card["rule"] == "mlp" and card["training"]["outer_steps"] == 4 and card["training"]["device"] == "cpu"
    assert isinstance(load_rule(out / "weights.safetensors"), MLPRule)
    assert f"plot: {out / 'training.png'}" in capsys.readouterr().out  # the validations so far
    assert (out / "training.png").stat().st_size > 10_000
    assert main(["meta", "train", *TINY, "--steps", "12", "--checkpoint-every", "2", "--val-every", "0",
                 "--out", str(out), "--resume"]) == 0
    assert "resumed" in capsys.readouterr().err
    _, meta = load_tensors(out / "last.safetensors")
    assert meta["step"] == 12 and meta["summary"]["outer_steps"] == 12
    # the figure can be redrawn, e.g. while a run goes on
    assert main(["meta", "plot", str(out), "--out", str(tmp_path / "again.png")]) == 0
    assert (tmp_path / "again.png").stat().st_size > 10_000
    assert main(["meta", "plot", str(tmp_path / "nowhere")]) == 2
    assert "l2o: error: no meta-training history at" in capsys.readouterr().err


def test_history_keeps_the_last_row_of_a_step_and_skips_non_finite_values(tmp_path):
    from l2o.meta.plot import plot_history, read_history

    rows = [{"step": 10, "meta_loss": -1.0}, {"step": 20, "meta_loss": -2.0}, {"step": 20, "val": None},
            {"step": 20, "meta_loss": -1.5}, {"step": 30, "meta_loss": None}, {"step": 20, "val": -3.0}]
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # a rollback rewrote step 20
    assert read_history(path) == ([(10, -1.0), (20, -1.5)], [(20, -3.0)])
    assert plot_history(path, tmp_path / "f.png").stat().st_size > 10_000
    path.write_text("")
    with pytest.raises(ValueError, match="no meta-loss or validation rows"):
        plot_history(path, tmp_path / "g.png")
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: not JSON"):
        read_history(path)


def _family():
    return MLPProblemFamily(datasets=("regression",), widths=(4,), depths=(1,), batch_sizes=(8,), horizon=(10, 20))


def _trainer(tmp_path, every=2, steps=6, **options):
    config = MetaConfig(**{"outer_steps": steps, "batch_size": 2, "groups": 1, "unroll": 5, "checkpoint_every": every,
                           "val_every": 0, **options})
    torch.manual_seed(0)
    return MetaTrainer(MLPRule(hidden=4), _family(), config, directory=tmp_path / "ckpt")


@pytest.mark.parametrize("decay", ["constant", "cosine"])
def test_meta_learning_rate_follows_its_schedule(tmp_path, decay):
    config = MetaConfig(outer_steps=4, batch_size=2, groups=1, unroll=5, val_every=0, meta_lr=1e-2,
                        meta_lr_decay=decay)
    trainer = MetaTrainer(MLPRule(hidden=4), _family(), config, log=False)
    used = []
    step = trainer.meta_optimizer.step
    trainer.meta_optimizer.step = lambda: (used.append(trainer.meta_optimizer.param_groups[0]["lr"]), step())[1]
    trainer.train(progress_bar=False)
    expected = [1e-2] * 4 if decay == "constant" else [1e-2 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert used == pytest.approx(expected)
    with pytest.raises(ValueError, match="meta_lr_decay"):
        MetaConfig(meta_lr_decay="linear")


def _weights(trainer):
    return [p.detach().clone() for p in trainer.rule.parameters()]


@pytest.mark.parametrize("estimator", ["bptt", "pes"])
def test_interrupted_run_resumes_exactly_where_it_stopped(tmp_path, estimator):
    # groups=2 and episodes of 10-20 steps in truncations of 5: the checkpoint of step 4 holds two
    # episodes in flight (and, for PES, their particles and accumulated perturbations)
    options = {"estimator": estimator, "groups": 2, "pairs": 2}
    reference = _trainer(tmp_path / "ref", every=2, steps=9, **options)
    reference.train(progress_bar=False)
    trainer = _trainer(tmp_path / "run", every=2, steps=9, **options)
    real_step = trainer._outer_step

    def crash_at_5(step):
        if step == 5:
            raise KeyboardInterrupt
        return real_step(step)

    trainer._outer_step = crash_at_5
    with pytest.raises(KeyboardInterrupt):
        trainer.train(progress_bar=False)
    _, meta = load_tensors(tmp_path / "run" / "ckpt" / "last.safetensors")
    in_flight = [g.get("particles", [g])[0] for g in meta["groups"] if g is not None]
    assert meta["step"] == 4 and any(0 < g["step"] < g["horizon"] for g in in_flight)  # mid-episode
    resumed = _trainer(tmp_path / "run", every=2, steps=9, **options)
    with torch.no_grad():  # the checkpoint, not the fresh rule, must supply the weights
        for p in resumed.rule.parameters():
            p.add_(1.0)
    resumed.train(resume=True, progress_bar=False)
    assert resumed.summary.history == reference.summary.history
    assert resumed.summary.outer_steps == 9 and resumed.summary.next_episode == reference.summary.next_episode
    for a, b in zip(_weights(reference), _weights(resumed)):
        assert torch.equal(a, b)
    state_a, state_b = reference.meta_optimizer.state_dict()["state"], resumed.meta_optimizer.state_dict()["state"]
    assert all(torch.equal(state_a[i]["exp_avg_sq"], state_b[i]["exp_avg_sq"]) for i in state_a)


def test_an_old_checkpoint_is_refused_with_the_reason(tmp_path):
    from l2o.io import save_tensors

    trainer = _trainer(tmp_path, every=2, steps=2)
    save_tensors(tmp_path / "ckpt" / "last.safetensors", {"rule/x": torch.zeros(1)}, {"step": 2, "summary": {}})
    with pytest.raises(ValueError, match="earlier l2o meta-trainer .* cannot be resumed exactly"):
        trainer.train(resume=True, progress_bar=False)
    trainer.train(progress_bar=False)  # a new run in its place
    other = _trainer(tmp_path, every=2, steps=4, estimator="es")
    with pytest.raises(ValueError, match="estimator='bptt'"):
        other.train(resume=True, progress_bar=False)


def test_non_finite_meta_loss_rolls_back_and_says_so(tmp_path, monkeypatch, capsys):
    trainer = _trainer(tmp_path, every=2, steps=6)
    real_step = trainer._outer_step
    calls = {"n": 0}

    def nan_once_at_3(step):
        calls["n"] += 1
        if step == 3 and calls.setdefault("fired", 0) == 0:
            calls["fired"] = 1
            for p in trainer.rule.parameters():  # poison the weights, as a real blow-up would
                p.data.fill_(float("nan"))
            return math.nan, False, 0
        return real_step(step)

    monkeypatch.setattr(trainer, "_outer_step", nan_once_at_3)
    summary = trainer.train(progress_bar=False)
    err = capsys.readouterr().err
    assert "rolled back to the checkpoint of outer step 2" in err
    assert summary.rollbacks == 1 and summary.outer_steps == 6
    assert all(torch.isfinite(p).all() for p in trainer.rule.parameters())


@pytest.mark.parametrize("estimator", ["es", "pes"])
def test_evolution_strategies_estimators_train(tmp_path, estimator):
    # meta-training with the estimate lowers the validation meta-loss (a sign error would raise it)
    config = MetaConfig(estimator=estimator, outer_steps=10, batch_size=4, groups=1, unroll=5, pairs=4, sigma=0.05,
                        meta_lr=0.03, val_every=0, val_episodes=2, val_steps=20, seed=3)
    trainer = MetaTrainer(MLPRule(hidden=4), _family(), config, log=False)
    before = trainer.validate()
    trainer.train(progress_bar=False)
    after = trainer.validate()
    assert after < before - 0.1, (before, after)
    out = tmp_path / estimator  # and from the command line
    assert main(["meta", "train", *TINY, "--estimator", estimator, "--pairs", "2", "--steps", "3",
                 "--curriculum", "2:2", "--val-every", "0", "--out", str(out)]) == 0
    rule = load_rule(out / "weights.safetensors")
    assert all(torch.isfinite(p).all() for p in rule.parameters())


def test_lstm_rule_trains_with_the_batched_trainer(tmp_path, capsys, strict_json):
    out = tmp_path / "lstm"
    assert main(["meta", "train", *TINY, "--optimizer", "lstm", "--steps", "2", "--val-every", "0",
                 "--out", str(out)]) == 0
    assert load_rule(out / "weights.safetensors").kind == "lstm"
    # the summary line is strict JSON even without validation (no Infinity for the best score)
    summary = strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["best_val"] is None and summary["outer_steps"] == 2


def test_rule_feature_options_reach_the_saved_weights(tmp_path, capsys):
    out = tmp_path / "ratios"
    assert main(["meta", "train", *TINY, "--adam-ratios", "--adapt", "0.1", "--steps", "2", "--val-every", "1",
                 "--out", str(out)]) == 0
    rule = load_rule(out / "weights.safetensors")
    assert rule.adam_ratios and not rule.tensor_features
    assert json.loads((out / "weights.json").read_text())["training"]["config"]["adapt"] == 0.1
    # The weights deploy under the adaptation they were trained with, unless told otherwise.
    params = [torch.zeros(3, requires_grad=True)]
    assert LearnedOptimizer.from_file(out / "weights.safetensors", params).adapt == 0.1
    assert LearnedOptimizer.from_file(out / "weights.safetensors", params, adapt=0.0).adapt == 0.0
    assert LearnedOptimizer(params, rule=MLPRule(hidden=4)).adapt == 0.0
    assert LearnedOptimizer.pretrained("mlp-general", params).adapt == 0.1  # its card says so
    assert LearnedOptimizer.pretrained("mlp-general-v1", params).adapt == 0.0
    assert resolve(f"learned:{out / 'weights.safetensors'}").factory({})(params).adapt == 0.1
    assert resolve(f"learned:{out / 'weights.safetensors'}@adapt=0").factory({})(params).adapt == 0.0
    assert main(["meta", "train", *TINY, "--adapt", "-1", "--steps", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "adapt must be a finite number >= 0" in capsys.readouterr().err
    assert main(["meta", "train", *TINY, "--optimizer", "lstm", "--adam-ratios", "--steps", "1", "--out",
                 str(tmp_path / "l")]) == 2
    assert "l2o: error: --adam-ratios applies to --optimizer mlp only" in capsys.readouterr().err


def test_eval_prints_a_table_against_tuned_adam(tmp_path, capsys):
    rule = MLPRule(hidden=4)
    from l2o.learned.weights import save_rule

    path = save_rule(tmp_path / "w.safetensors", rule)
    out_json = tmp_path / "eval.json"
    assert main(["meta", "eval", "--weights", str(path), "--task", "quadratic", "--steps", "5,10", "--seeds", "2",
                 "--tune-seeds", "1", "--adam-grid", "0.01,0.1", "--json", str(out_json),
                 "--plot", str(tmp_path / "curves.png")]) == 0
    text = capsys.readouterr().out
    assert "adam lr=" in text and "mlp-learned" in text and "plot: " in text
    results = json.loads(out_json.read_text())
    assert set(results["budgets"]) == {"5", "10"}
    for budget in results["budgets"].values():  # the chosen rate has the best tuning score (tests/test_compare.py)
        scores = budget["adam_grid_train_loss"]
        assert set(scores) == {"0.01", "0.1"} and scores[str(budget["adam_lr"])] == min(scores.values())
    assert "± is the standard deviation over seeds" in text
    curve = results["budgets"]["10"]["adam"]["curve"]
    assert len(curve["mean"]) == len(curve["p10"]) == 10
    assert all(lo <= mean <= hi for lo, mean, hi in zip(curve["p10"], curve["mean"], curve["p90"]))
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert "test_accuracy" not in results["budgets"]["5"]["learned"] and "test accuracy" not in text
    # a classification task adds its test accuracy
    assert main(["meta", "eval", "--weights", str(path), "--task", "digits_mlp", "--steps", "3", "--seeds", "2",
                 "--tune-seeds", "1", "--adam-grid", "0.1", "--json", str(out_json)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    accuracy = json.loads(out_json.read_text())["budgets"]["3"]["adam"]["test_accuracy"]
    assert 0.0 <= accuracy["mean"] <= 1.0 and accuracy["diverged"] == 0
    # zero tuning seeds: refused in one line before any progress bar starts
    assert main(["meta", "eval", "--weights", str(path), "--task", "digits_mlp", "--steps", "3",
                 "--tune-seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert "l2o: error: tune_seeds must be >= 1, got 0" in err and "eval:" not in err


def test_eval_json_is_strict_when_a_run_diverges(tmp_path, monkeypatch, capsys, strict_json):
    import l2o.meta.evaluate as evaluate

    def diverged(*args, **kwargs):  # what a diverged learned run reports: infinite and NaN losses
        return {"task": "quadratic", "adapt": 0.0, "budgets": {"5": {"adam_lr": 0.1, "learned": {
            "train_loss": [math.inf, math.nan], "test_loss_mean": math.nan}}}}

    monkeypatch.setattr(evaluate, "compare_with_adam", diverged)
    monkeypatch.setattr(evaluate, "format_table", lambda results: "table")
    out_json = tmp_path / "eval.json"
    assert main(["meta", "eval", "--weights", "mlp-general", "--task", "quadratic", "--steps", "5",
                 "--json", str(out_json)]) == 0
    results = strict_json(out_json.read_text())
    assert results["budgets"]["5"]["learned"] == {"train_loss": [None, None], "test_loss_mean": None}


def test_eval_with_step_adaptation(tmp_path, capsys):
    out = {}
    for adapt in ("0", "0.3"):
        out[adapt] = tmp_path / f"eval{adapt}.json"
        assert main(["meta", "eval", "--weights", "mlp-general", "--task", "quadratic", "--steps", "30", "--seeds", "1",
                     "--tune-seeds", "1", "--adam-grid", "0.1", "--adapt", adapt, "--json", str(out[adapt])]) == 0
    assert "mlp-learned adapt=0.3" in capsys.readouterr().out
    plain, adapted = (json.loads(out[a].read_text()) for a in ("0", "0.3"))
    assert adapted["adapt"] == 0.3 and plain["adapt"] == 0.0
    assert adapted["budgets"]["30"]["learned"]["train"]["mean"] != plain["budgets"]["30"]["learned"]["train"]["mean"]
    assert main(["meta", "eval", "--weights", "mlp-general", "--adapt", "-1"]) == 2
    assert "--adapt must be a finite number >= 0" in capsys.readouterr().err


def test_param_scale_augments_the_general_family_and_is_recorded(tmp_path, capsys):
    general = [a if a != "regression" else "general" for a in TINY] + ["--datasets", "regression"]
    out = tmp_path / "g"
    assert main(["meta", "train", *general, "--param-scale", "0.1:10", "--steps", "2", "--out", str(out)]) == 0
    card = json.loads((out / "weights.json").read_text())
    assert card["training"]["family"]["param_scale"] == [0.1, 10.0]
    assert main(["meta", "train", *TINY, "--param-scale", "0.1:10", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "l2o: error: --param-scale applies to --task general only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["meta", "train", *general, "--param-scale", "10:0.1", "--steps", "1", "--out", str(tmp_path / "y")])
    assert "expected 0 < LOW <= HIGH" in capsys.readouterr().err


def test_init_fine_tunes_given_weights_with_their_architecture(tmp_path, capsys):
    from l2o.learned.weights import load_rule

    assert main(["meta", "train", *TINY, "--steps", "2", "--out", str(tmp_path / "a")]) == 0
    start = load_rule(tmp_path / "a" / "weights.safetensors")
    no_width = [a for i, a in enumerate(TINY) if a != "--hidden" and TINY[i - 1] != "--hidden"]
    assert main(["meta", "train", *no_width, "--init", str(tmp_path / "a" / "weights.safetensors"), "--steps", "1",
                 "--meta-lr", "1e-6", "--out", str(tmp_path / "b")]) == 0
    tuned = load_rule(tmp_path / "b" / "weights.safetensors")
    assert tuned.config() == start.config()  # hidden 4, not the default 16
    moved = [float((a - b).abs().max()) for a, b in zip(tuned.state_dict().values(), start.state_dict().values())]
    assert 0 < max(moved) < 1e-4  # one tiny meta-update away from the given weights
    card = json.loads((tmp_path / "b" / "weights.json").read_text())
    assert card["training"]["init"] == str(tmp_path / "a" / "weights.safetensors")
    for extra, message in ((["--hidden", "8"], "--hidden: the rule's architecture comes from --init"),
                           (["--optimizer", "lstm"], "--optimizer lstm, but --init"),
                           (["--adam-ratios"], "--adam-ratios: the rule's architecture")):
        assert main(["meta", "train", *no_width, "--init", str(tmp_path / "a" / "weights.safetensors"), *extra,
                     "--steps", "1", "--out", str(tmp_path / "c")]) == 2
        assert f"l2o: error: {message}" in capsys.readouterr().err
    # shipped weights trained under the adaptation are fine-tuned under it unless told otherwise
    assert main(["meta", "train", *no_width, "--init", "mlp-general", "--steps", "1", "--out", str(tmp_path / "e")]) == 0
    card = json.loads((tmp_path / "e" / "weights.json").read_text())
    assert card["training"]["config"]["adapt"] == 0.1 and card["deploy"] == {"adapt": 0.1}
    assert main(["meta", "train", *no_width, "--init", "no-such-weights", "--steps", "1", "--out",
                 str(tmp_path / "d")]) == 2
    assert "l2o: error: --init 'no-such-weights' is neither a file nor shipped weights" in capsys.readouterr().err


def test_bad_cli_arguments_give_clear_errors(tmp_path, capsys):
    assert main(["meta", "eval", "--weights", "no-such-weights", "--task", "quadratic"]) == 2
    assert "no-such-weights" in capsys.readouterr().err
    assert main(["meta", "train", *TINY, "--curriculum", "50:10", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "curriculum_start" in capsys.readouterr().err


def test_device_that_is_not_there_is_refused(tmp_path, capsys):
    if not torch.cuda.is_available():
        assert main(["meta", "train", *TINY, "--device", "cuda", "--steps", "1", "--out", str(tmp_path / "c")]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert main(["meta", "train", *TINY, "--device", "gpu0", "--steps", "1", "--out", str(tmp_path / "g")]) == 2
    assert "--device 'gpu0'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists() and not (tmp_path / "g").exists()  # refused before anything is written


def test_cuda_device_index_beyond_the_machines_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["meta", "train", *TINY, "--device", "cuda:3", "--steps", "1", "--out", str(tmp_path / "c")]) == 2
    assert "has 1 CUDA device(s)" in capsys.readouterr().err



@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_on_cuda_then_resume_on_the_cpu(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["meta", "train", *TINY, "--device", "cuda", "--steps", "4", "--checkpoint-every", "2",
                 "--val-every", "2", "--out", str(out)]) == 0
    card = json.loads((out / "weights.json").read_text())
    assert card["training"]["device"] == torch.cuda.get_device_name()
    assert main(["meta", "train", *TINY, "--steps", "6", "--checkpoint-every", "2", "--val-every", "0",
                 "--out", str(out), "--resume"]) == 0
    assert "resumed" in capsys.readouterr().err
    assert load_tensors(out / "last.safetensors")[1]["step"] == 6
    assert all(torch.isfinite(p).all() for p in load_rule(out / "weights.safetensors").parameters())


FAMILY_MODULE = '''
import torch
from l2o.tasks import FixedFamily, ModuleTask

x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
y = x.sum(dim=1)


def net():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def task(batch_size=16):
    return ModuleTask(net, x[:48], y[:48], x[48:], y[48:], batch_size=int(batch_size), steps=20)


def family():
    return FixedFamily(lambda seed: task(), name="mine")


not_a_family = 3
'''


def test_family_of_ones_own_trains_from_the_command_line(tmp_path, monkeypatch, capsys):
    from l2o.learned.weights import load_rule

    (tmp_path / "my_family.py").write_text(FAMILY_MODULE)
    monkeypatch.chdir(tmp_path)  # found in the working directory, as a user's module would be
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    common = ["--unroll", "5", "--batch", "2", "--groups", "1", "--hidden", "4", "--val-every", "2", "--val-steps", "5",
              "--no-progress", "--steps", "3"]
    out = tmp_path / "run"
    assert main(["meta", "train", "--family", "my_family:family", *common, "--out", str(out)]) == 0
    card = json.loads((out / "weights.json").read_text())
    assert card["training"]["family"] == {"name": "mine", "path": "my_family:family"}
    assert card["training"]["outer_steps"] == 3 and card["training"]["best_val_log_loss_ratio"] is not None
    load_rule(out / "best_weights.safetensors")
    capsys.readouterr()
    # ... and is compared with tuned Adam on a task of one's own
    assert main(["meta", "eval", "--weights", str(out / "weights.safetensors"), "--task", "my_family:task",
                 "--task-arg", "batch_size=8", "--steps", "5", "--seeds", "2", "--tune-seeds", "1", "--adam-grid", "0.01,0.1",
                 "--json", str(tmp_path / "eval.json")]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    assert results["task"] == "my_family:task" and results["task_args"] == {"batch_size": 8}
    assert results["budgets"]["5"]["adam_lr"] in (0.01, 0.1) and math.isfinite(results["budgets"]["5"]["learned"]["train"]["mean"])
    assert main(["meta", "eval", "--weights", str(out / "weights.safetensors"), "--task", "my_family:not_a_family"]) == 2
    assert "not an l2o.tasks.Task or a function returning one (got int)" in capsys.readouterr().err
    for extra, message in ((["--family", "my_family:family", "--task", "digits"], "--task: --family my_family:family gives"),
                           (["--family", "my_family:family", "--widths", "8", "--horizon", "5:5"],
                            "--widths, --horizon: --family"),
                           (["--family", "my_family:not_a_family"], "not an l2o.tasks.TaskFamily or a function returning one (got int)"),
                           (["--family", "my_family:nope"], "module 'my_family' has no attribute 'nope' (family"),
                           (["--family", "no_such_module:family"], "cannot import module 'no_such_module' for family"),
                           (["--family", "my_family.py:family"], "a module, not a file: for 'my_family.py:family' write "
                                                                  "'my_family:family'")):
        assert main(["meta", "train", *extra, *common, "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("l2o: error: ") and message in err, (extra, err)


def test_the_own_family_example_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    examples = Path(__file__).resolve().parent.parent / "examples"
    monkeypatch.chdir(examples)  # as its docstring says: run from that directory
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(examples))])
    out = tmp_path / "own"
    assert main(["meta", "train", "--family", "own_family:family", "--steps", "2", "--batch", "2", "--groups", "1",
                 "--unroll", "5", "--val-every", "0", "--no-progress", "--out", str(out)]) == 0
    assert main(["meta", "eval", "--weights", str(out / "weights.safetensors"), "--task", "own_family:task",
                 "--task-arg", "steps=5", "--steps", "5", "--seeds", "1", "--tune-seeds", "1", "--adam-grid", "0.1"]) == 0
    assert "own_family:task" in capsys.readouterr().out


def test_train_into_a_directory_holding_a_run_refuses_unless_resumed_or_forced(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["meta", "train", *TINY, "--steps", "2", "--val-every", "0", "--out", str(out)]
    assert main(args) == 0
    first = load_tensors(out / "weights.safetensors")[0]
    (out / "history.jsonl").write_text('{"step": 10, "meta_loss": 5.0}\n')  # what a mixed run would keep
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("l2o: error: --out") and "--resume" in err and "--force" in err
    assert main([*args, "--resume", "--force"]) == 2
    assert main([*args, "--seed", "5", "--force"]) == 0  # a new run in its place, nothing of the old one kept
    assert '"meta_loss": 5.0' not in (out / "history.jsonl").read_text() if (out / "history.jsonl").exists() else True
    assert any(not torch.equal(first[k], v) for k, v in load_tensors(out / "weights.safetensors")[0].items())
    (tmp_path / "file").write_text("x")
    assert main(["meta", "train", *TINY, "--steps", "1", "--out", str(tmp_path / "file")]) == 2
    assert "l2o: error: --out" in capsys.readouterr().err


def test_train_help_shows_defaults_and_every_flag_has_help(capsys):
    import argparse

    from l2o.commands import meta as meta_command

    parser = argparse.ArgumentParser()
    meta_command.register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["meta"]
    commands = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("train", "eval", "plot"):
        for action in commands[name]._actions:
            assert action.help, (name, action.dest)
    with pytest.raises(SystemExit):
        main(["meta", "train", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # as wrapped for the terminal, unwrapped
    assert "(default: 0.003)" in text and "(default: 250)" in text and "(default: 50)" in text


def test_val_every_above_steps_warns_that_only_the_last_step_validates(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["meta", "train", *TINY, "--steps", "2", "--val-every", "5", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "--val-every 5 is above --steps 2" in err and "only at the last step" in err
    assert (out / "best_weights.safetensors").is_file()  # the last step's validation chose them


def test_eval_refuses_directories_for_its_files_and_runs_without_progress(tmp_path, capsys):
    rule = MLPRule(hidden=4)
    from l2o.learned.weights import save_rule

    path = save_rule(tmp_path / "w.safetensors", rule)
    common = ["meta", "eval", "--weights", str(path), "--task", "quadratic", "--steps", "3", "--seeds", "1",
              "--tune-seeds", "1", "--adam-grid", "0.1"]
    for flag in ("--plot", "--json"):
        assert main([*common, flag, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"l2o: error: {flag} {tmp_path} is a directory"), err
    assert main(["meta", "eval", "--weights", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main([*common, "--no-progress"]) == 0
    assert "eval:" not in capsys.readouterr().err  # no progress bar
