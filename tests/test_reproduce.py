"""`l2o reproduce l2l` on a tiny configuration: the report's files, tuning, determinism, CLI."""

import json
import math

import torch

from l2o.cli import main
from l2o.experiments import l2l

TINY = l2l.L2LConfig(seeds=2, tune_seeds=1, lr_grid=(0.1, 1.0), digits_outer_steps=2, quadratic_outer_steps=2,
                     val_every=1, val_episodes=1, checkpoint_every=1, settings=("train", "quadratic"))


def test_run_writes_the_report_and_is_deterministic(tmp_path, strict_json):
    torch.set_num_threads(1)
    paths = l2l.run(tmp_path / "a", TINY, progress=False, log=lambda m: None)
    assert paths["report"].is_file() and paths["json"].is_file()
    assert {p.name for p in paths["plots"]} == {"curves_train.png", "curves_quadratic.png", "loss_curves.png"}
    assert all(p.stat().st_size > 10_000 for p in paths["plots"])
    data = strict_json(paths["json"].read_text())
    results = data["results"]
    assert set(results) == {"train", "quadratic"}
    for setting in results.values():
        assert set(setting["optimizers"]) == {"SGD", "NAG", "RMSprop", "Adam", l2l.LSTM_NAME}
        for name, r in setting["optimizers"].items():
            assert len(r["final"]) == 2 and len(r["curves"]) == 2
            if name != l2l.LSTM_NAME:
                # the chosen lr is the grid point with the lowest tuning score
                assert r["lr"] in TINY.lr_grid
                scores = [v for v in r["tuning"].values() if v is not None]  # None: diverged
                if scores:  # (if every learning rate diverged, any of them may be reported)
                    assert r["tuning"][repr(r["lr"])] == min(scores)
    table = paths["report"].read_text()
    assert "| Adam |" in table and l2l.LSTM_NAME in table and "lr " in table
    assert (tmp_path / "a" / "l2l-digits.safetensors").is_file()
    card = json.loads((tmp_path / "a" / "l2l-digits.json").read_text())
    assert card["rule"] == "lstm" and "train" in card["metrics"]
    # Same command, same numbers.
    again = json.loads(l2l.run(tmp_path / "b", TINY, progress=False, log=lambda m: None)["json"].read_text())
    for setting in results:
        for name, r in results[setting]["optimizers"].items():
            assert again["results"][setting]["optimizers"][name]["final"] == r["final"], (setting, name)


def test_evaluating_given_weights_skips_meta_training(tmp_path):
    config = l2l.L2LConfig(seeds=1, tune_seeds=1, lr_grid=(0.01,), settings=("quadratic",))
    weights = tmp_path / "w.safetensors"
    from l2o.learned import LSTMRule, save_rule

    save_rule(weights, LSTMRule(), {})
    messages = []
    paths = l2l.run(tmp_path / "r", config, quadratic_weights=weights, progress=False, log=messages.append)
    assert not any("meta-training" in m for m in messages)
    assert not (tmp_path / "r" / "checkpoints").exists()
    data = json.loads(paths["json"].read_text())
    assert "loaded from" in data["meta"]["meta_training"]["quadratic"]
    assert math.isfinite(data["results"]["quadratic"]["optimizers"]["Adam"]["final_mean"])


def test_cli_with_shipped_weights(tmp_path, capsys):
    code = main(["reproduce", "l2l", "--quick", "--no-train", "--settings", "quadratic", "--seeds", "2",
                 "--no-progress", "--out", str(tmp_path / "rep")])
    assert code == 0
    out = capsys.readouterr().out
    assert f"report:  {tmp_path / 'rep' / 'report.md'}" in out
    assert "l2o reproduce l2l --quick --no-train" in (tmp_path / "rep" / "report.md").read_text()


def test_cli_rejects_unknown_settings(tmp_path, capsys):
    code = main(["reproduce", "l2l", "--settings", "train,nope", "--out", str(tmp_path)])
    assert code == 2
    assert "unknown settings ['nope']" in capsys.readouterr().err
