"""What l2o bench says: refusals of bad flags, one-line path errors, the reuse message of a fresh
sweep, and the report of an interrupted sweep (incomplete rows, how to finish), its ± convention
and its time column."""

import json
import sqlite3

import pytest

from l2o.cli import main

TASK = ["--tasks", "quadratic_10d_tiny", "--no-progress"]


@pytest.mark.parametrize("flag", ["--seeds", "--tune-seeds"])
def test_zero_seeds_are_refused(tmp_path, capsys, flag):
    assert main(["bench", "run", *TASK, flag, "0", "--db", str(tmp_path / "x.sqlite")]) == 2
    assert f"l2o: error: {flag} must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "x.sqlite").exists()


def test_a_grid_for_an_optimizer_not_run_is_refused_not_added(tmp_path, capsys):
    assert main(["bench", "run", *TASK, "--optimizers", "sgd", "--grid", "adam:lr=[0.1]",
                 "--db", str(tmp_path / "x.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "--grid gives a grid for 'adam', which is not among the optimizers run (sgd)" in err
    assert not (tmp_path / "x.sqlite").exists()


def test_db_in_a_missing_directory_is_refused(tmp_path, capsys):
    assert main(["bench", "run", *TASK, "--db", str(tmp_path / "nope" / "x.sqlite")]) == 2
    assert f"directory {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_output_paths_of_the_wrong_kind_give_one_line(tmp_path, capsys):
    from l2o.bench.runner import Plan, run_benchmark

    db = str(tmp_path / "r.sqlite")
    run_benchmark(Plan(tasks=["quadratic_10d_tiny"], optimizers=["sgd"], grids={"sgd": {"lr": [0.1]}}, seeds=1),
                  db, progress=False)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for argv in (["bench", "report", "--db", db, "--out", str(a_file)],
                 ["bench", "export", "--db", db, "--out", str(a_file)],
                 ["reproduce", "l2l", "--quick", "--no-train", "--no-progress", "--out", str(a_file)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("l2o: error: ") and len(err.splitlines()) == 1 and str(a_file) in err, (argv, err)
    (tmp_path / "rep" / "summary.md").mkdir(parents=True)  # a directory where the report writes a file
    assert main(["bench", "report", "--db", db, "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"l2o: error: {tmp_path / 'rep' / 'summary.md'} is a directory; a file was expected there"


def test_fresh_sweep_says_what_it_reused_then_report_of_an_interrupted_sweep(tmp_path, capsys):
    db = str(tmp_path / "r.sqlite")
    assert main(["bench", "run", *TASK, "--optimizers", "momentum,adam", "--protocol", "smoke", "--tune-seeds", "2",
                 "--seeds", "4", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "final: 4 runs done (0 diverged, 0 failed); 4 reused from this sweep's tuning runs" in out
    assert "already" not in out  # nothing was in the results file before
    # An interrupted final phase: adam's seeds 2 and 3 never finished
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("DELETE FROM runs WHERE optimizer = 'adam' AND seed >= 2")
    report = tmp_path / "report"
    assert main(["bench", "report", "--db", db, "--out", str(report)]) == 0
    text = (report / "summary.md").read_text()
    head = text.split("## quadratic_10d_tiny")[0]
    assert "**Incomplete sweep.**" in head and "quadratic_10d_tiny / adam: 2 of 4 seeds" in head
    assert f"run the same `l2o bench run` command again with `--db {db}`" in head
    table = text.split("## quadratic_10d_tiny")[1]
    assert "| adam **(incomplete: 2/4 seeds)** |" in table and "| momentum |" in table
    # ± stated in the table itself; no SGD ran, so times are relative to momentum
    assert "| test loss (mean ± std) |" in table and "time/step ÷ momentum |" in table
    summary = json.loads((report / "summary.json").read_text())["quadratic_10d_tiny"]["optimizers"]
    assert summary["adam"]["incomplete"] and summary["adam"]["seeds_finished"] == 2
    assert not summary["momentum"]["incomplete"] and summary["momentum"]["time_per_step_vs_reference"] == 1.0
    assert summary["adam"]["time_reference"] == "momentum"


def test_lr_sensitivity_uses_log_axes_where_losses_span_decades():
    from l2o.bench.report import y_scale

    assert y_scale([0.3, 1.0, 2e5]) == ("log", None)
    scale, linthresh = y_scale([-0.5, 0.1, 0.3, 1.0, 2e5])  # a noisy 2-D problem: below 0, and 2e5 at large lr
    assert scale == "symlog" and 0.1 <= linthresh <= 1.0
    assert y_scale([0.5, 0.6, 0.9]) == ("linear", None)
    assert y_scale([-0.2, 0.1, 0.3]) == ("linear", None)


def test_ctrl_c_in_a_resumable_command_says_how_to_resume(monkeypatch, capsys):
    from l2o.commands import reproduce

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "_run", interrupted)
    assert main(["reproduce", "l2l", "--quick"]) == 130
    assert capsys.readouterr().err.strip() == "l2o: interrupted; to resume, run the same command again with --resume"
