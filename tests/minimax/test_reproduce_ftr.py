"""l2o reproduce ftr on a tiny configuration: files, strict JSON, resume, registration."""

import json

import pytest

from l2o.commands.reproduce import EXPERIMENTS
from l2o.experiments.ftr import FTRConfig, reproduce

TINY = FTRConfig(toy_steps=40, bilinear_steps=10, games=("mog1d",), seeds=1, gan_steps=4, gan_record=2, hidden=4,
                 batch_size=16, cg_iters=2)


def test_registered():
    assert EXPERIMENTS["ftr"][0] == "l2o.experiments.ftr"


def test_reproduce_writes_report_json_plots_and_resumes(tmp_path, strict_json):
    paths = reproduce(tmp_path, quick=True, seeds=None, resume=False, progress=False, command="l2o reproduce ftr",
                      config=TINY)
    report = paths["report"].read_text()
    assert "l2o reproduce ftr" in report and "| FR |" in report
    results = strict_json(paths["json"].read_text())
    assert results["summary"]["toys"]["f1"]["FR"]["final_norm"] < results["summary"]["toys"]["f1"]["GDA"]["final_norm"]
    assert set(results["gans"]["mog1d"]) == {"GDA", "FR"}
    assert [p.name for p in paths["plots"]] == ["ftr_toy_trajectories.png", "ftr_toy_distance.png", "ftr_gan_mog1d.png"]
    assert all(p.stat().st_size > 10_000 for p in paths["plots"])
    # resume: a finished run is read back, not recomputed
    marker = tmp_path / "runs" / "gan_mog1d_FR_seed0.json"
    saved = json.loads(marker.read_text())
    saved["seconds"] = 12345.0
    marker.write_text(json.dumps(saved))
    reproduce(tmp_path, quick=True, seeds=None, resume=True, progress=False, command="x", config=TINY)
    assert strict_json((tmp_path / "results.json").read_text())["gans"]["mog1d"]["FR"][0]["seconds"] == 12345.0
    with pytest.raises(ValueError, match="other settings"):
        reproduce(tmp_path, quick=True, seeds=2, resume=True, progress=False, command="x", config=TINY)
