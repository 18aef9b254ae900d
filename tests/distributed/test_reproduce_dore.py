"""`l2o reproduce dore` end to end on a tiny configuration: files, strict JSON, resume."""

import json

from l2o.experiments import dore


def _tiny(quick, seeds):
    return {"seeds": seeds or 1, "ls_steps": 12, "problems": {
        "digits_logistic": {"kwargs": {"workers": 2, "batch_size": 16}, "steps": 4, "grid": [0.3, 1.0]},
        "digits_mlp": {"kwargs": {"workers": 2, "batch_size": 16, "hidden": 8}, "steps": 3, "grid": [0.3]}}}


def test_reproduce_writes_report_json_plots_and_resumes(tmp_path, monkeypatch, strict_json):
    monkeypatch.setattr(dore, "_config", _tiny)
    paths = dore.reproduce(tmp_path, quick=True, seeds=None, resume=False, progress=False,
                           command="l2o reproduce dore --quick")
    results = strict_json(paths["json"].read_text())
    for pname in ("digits_logistic", "digits_mlp"):
        algos = results["problems"][pname]["algorithms"]
        assert set(algos) == set(dore.ALGOS)
        for a in algos.values():
            assert a["final_loss"] > 0 and a["bits"] > 0 and a["lr"] in results["problems"][pname]["grid"]
        assert algos["full"]["bits"] > 10 * algos["dore"]["bits"]
        assert algos["full"]["bit_savings_to_target"] in (1.0, None)
    ls = results["least_squares"]["algorithms"]["dore"]
    assert ls["worker_residual_last"] < ls["worker_residual_first"]
    assert "l2o reproduce dore --quick" in paths["report"].read_text()
    assert all(p.exists() and p.stat().st_size > 10_000 for p in paths["plots"])
    runs = sorted((tmp_path / "runs").glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    again = dore.reproduce(tmp_path, quick=True, seeds=None, resume=True, progress=False, command="again")
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps  # nothing re-run
    assert json.loads(again["json"].read_text())["problems"] == results["problems"]
