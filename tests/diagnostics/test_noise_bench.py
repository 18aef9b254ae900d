"""The benchmark's optional B_simple column (l2o bench run --noise-scale)."""

import json
import math

import torch

import l2o.tasks
from l2o.cli import main
from l2o.diagnostics import final_b_simple


def test_bench_noise_scale_column(tmp_path, capsys):
    db = str(tmp_path / "b.sqlite")
    assert main(["bench", "run", "--tasks", "digits_logreg_tiny", "--optimizers", "sgd", "--protocol", "smoke",
                 "--tune-seeds", "1", "--seeds", "1", "--noise-scale", "--db", db, "--no-progress"]) == 0
    assert main(["bench", "report", "--db", db, "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "summary.md").read_text()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    value = summary["digits_logreg_tiny"]["optimizers"]["sgd"]["b_simple_median"]
    assert value is not None and math.isfinite(value) and value > 0
    assert "B_simple at the end (median)" in text and f"{value:.4g}" in text


def test_final_b_simple_is_none_without_a_training_set():
    task = l2o.tasks.get("quadratic")
    params = task.init_params(torch.Generator().manual_seed(0))
    assert final_b_simple(task, params) is None
    digits = l2o.tasks.get("digits_logreg")
    value = final_b_simple(digits, digits.init_params(torch.Generator().manual_seed(0)))
    assert value is not None and value > 0
