"""`l2o continual run`: strict-JSON results, report and figures, resume, tuning on validation, bad input."""

import pytest

import l2o.continual.runner as runner
from l2o.cli import main
from l2o.continual import make_method, train_sequence

from .conftest import make_tiny_stream

BASE = ["continual", "run", "--scenario", "split-digits", "--tasks", "2", "--seeds", "2", "--epochs", "1",
        "--no-progress"]


def test_run_writes_results_report_figures_and_resumes(tmp_path, capsys, strict_json, monkeypatch):
    out = tmp_path / "run"
    calls, crashed = [], []
    real = runner.train_sequence

    def counting(*args, **kwargs):
        calls.append(args[0].name)
        if len(calls) == 4 and not crashed:
            crashed.append(True)
            raise KeyboardInterrupt  # a crash in the middle
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train_sequence", counting)
    argv = BASE + ["--methods", "sgd,hat,ogd-all", "--lr-grid", "0.05,0.2", "--out", str(out)]
    assert main(argv) == 130
    done = len(list((out / "runs").glob("*.json")))
    assert done == 3
    calls.clear()
    assert main(argv) == 0
    assert len(calls) == 3 * 4 - done  # per method: 2 tuning + 2 evaluation runs; finished ones reused
    res = strict_json((out / "results.json").read_text())
    assert set(res["methods"]) == {"sgd", "hat", "ogd-all"}
    for name, m in res["methods"].items():
        assert len(m["R"]) == 2 and all(len(R) == 2 and len(R[0]) == 2 for R in m["R"])
        assert m["avg_accuracy"]["mean"] == pytest.approx(sum(sum(R[-1]) / 2 for R in m["R"]) / 2)
        assert m["forgetting"]["std"] is not None
        # the chosen learning rate is the one with the best mean final *validation* accuracy
        best = max(m["tuning"].values(), key=lambda r: r["val_avg_accuracy"])
        assert m["hyperparameters"]["lr"] == best["hyperparameters"]["lr"]
    assert len(res["methods"]["hat"]["extras"][0][-1]["mask_usage"]) == 2
    report = (out / "report.md").read_text()
    assert "| hat |" in report and "continual run" in report
    for png in ("continual_accuracy.png", "continual_heatmaps.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the same directory with other settings is refused
    assert main(BASE[:-1] + ["--methods", "sgd", "--epochs", "2", "--out", str(out), "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [
    (["--methods", "sgd,adamw"], "unknown method 'adamw'"),
    (["--methods", "sgd", "--tasks", "0"], "--tasks must be >= 1"),
    (["--methods", "sgd", "--scenario", "mnist"], "unknown scenario"),
    (["--methods", ","], "no method given"),
    (["--methods", "sgd", "--lr", "-1"], "--lr must be positive"),
])
def test_bad_input_gives_one_clear_line(tmp_path, capsys, extra, message):
    argv = ["continual", "run", "--out", str(tmp_path / "x"), "--no-progress", "--seeds", "1"] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("l2o: error:") and message in err


def test_every_method_learns_the_first_task():
    stream = make_tiny_stream(tasks=2)
    for name in runner.METHODS:
        res = train_sequence(make_method(name, lr=0.1, hidden=(16,)), stream, seed=0, epochs=8, batch_size=8)
        assert res["R"][0][0] > 0.6, name
        assert not res["diverged"]
    with pytest.raises(ValueError, match="unknown method"):
        make_method("lwf")


@pytest.mark.parametrize("name", list(runner.METHODS))
def test_a_task_id_never_seen_is_refused(name):
    stream = make_tiny_stream(tasks=2, multi_head=name == "sgd")
    method = make_method(name, lr=0.1, hidden=(4,))
    method.setup(stream, seed=0)
    with pytest.raises(ValueError, match="never seen"):
        method.logits(stream[0].x_test, 2)
