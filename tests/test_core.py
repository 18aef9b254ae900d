"""The package's shared pieces: registries, safetensors I/O, the shared training loop, the CLI shell."""

import math

import pytest
import torch

import l2o.tasks
from l2o._registry import Registry
from l2o.io import WeightsFileError, load_tensors, save_tensors
from l2o.train import train


def test_registry_unknown_name_lists_what_exists():
    reg = Registry("widget", {"alpha": "math:sqrt", "beta": "math:cos"})
    assert reg.get("ALPHA") is math.sqrt
    with pytest.raises(KeyError, match="Did you mean alpha.*Available: alpha, beta"):
        reg.get("alpah")


def test_save_load_roundtrip_and_errors(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.arange(6.0).reshape(2, 3)}, {"kind": "test", "n": 3})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["a"], torch.arange(6.0).reshape(2, 3))
    assert meta == {"kind": "test", "n": 3}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp file left behind

    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(WeightsFileError, match="truncated or foreign"):
        load_tensors(truncated)
    foreign = tmp_path / "f.safetensors"
    foreign.write_bytes(b"\x80\x04K\x01.")  # a pickle, which must never be loaded
    with pytest.raises(WeightsFileError):
        load_tensors(foreign)
    with pytest.raises(WeightsFileError, match="not found"):
        load_tensors(tmp_path / "missing.safetensors")


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.ones(2)}, {"v": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError):
        save_tensors(path, {"a": torch.zeros(2)}, {"v": 2})
    tensors, meta = load_tensors(path)  # the old file is intact
    assert meta == {"v": 1} and torch.equal(tensors["a"], torch.ones(2))
    assert len(list(tmp_path.iterdir())) == 1


def test_train_is_seeded_and_records_every_step():
    task = l2o.tasks.get("digits_mlp", hidden=8)
    make = lambda p: torch.optim.SGD(p, lr=0.5)  # noqa: E731
    a, b = train(task, make, steps=15, seed=3), train(task, make, steps=15, seed=3)
    c = train(task, make, steps=15, seed=4)
    assert a.losses == b.losses and a.final_test == b.final_test
    assert a.losses != c.losses
    assert a.steps_done == 15 and not a.diverged
    assert a.losses[-1] < a.losses[0]
    assert 0.0 <= a.final_test["accuracy"] <= 1.0


def test_train_marks_divergence_and_stops():
    task = l2o.tasks.get("quadratic", seed=0)
    result = train(task, lambda p: torch.optim.SGD(p, lr=10.0), steps=200, seed=0)
    assert result.diverged and result.steps_done < 200
    assert not math.isfinite(result.losses[-1]) or result.losses[-1] > 1e30


def test_train_eval_curve():
    task = l2o.tasks.get("quadratic", seed=0)
    result = train(task, lambda p: torch.optim.Adam(p, lr=0.05), steps=20, seed=0, eval_every=5)
    assert result.eval_steps == [0, 5, 10, 15, 20]
    assert result.eval_curve[-1]["loss"] < result.eval_curve[0]["loss"]


def test_cli_help_lists_commands(capsys):
    from l2o.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("reproduce", "meta", "bench"):
        assert command in out


_L2O_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "src" / "l2o"
# every public subpackage and module on disk, new ones included (minimax, continual, hyper,
# distributed, diagnostics, ... as they appear)
_SUBMODULES = sorted(p.name for p in _L2O_DIR.iterdir()
                     if not p.name.startswith("_") and (p / "__init__.py").is_file()) + sorted(
    p.stem for p in _L2O_DIR.glob("*.py") if not p.name.startswith("_"))

_LAZY_PROBE = r"""
import json, sys
import l2o
names = json.loads(sys.argv[1])
report = {"eager": sorted(n for n in names if f"l2o.{n}" in sys.modules)}
for name in names:
    try:
        module = getattr(l2o, name)
        report[name] = module.__name__
    except Exception as error:  # reported per name by the test
        report[name] = f"{type(error).__name__}: {error}"
try:
    l2o.no_such_part
except AttributeError as error:
    report["missing"] = str(error)
report["dir"] = dir(l2o)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def lazy_probe():
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LAZY_PROBE, json.dumps(_SUBMODULES)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_l2o_imports_no_subpackage_eagerly(lazy_probe):
    assert lazy_probe["eager"] == []
    assert "no attribute 'no_such_part'" in lazy_probe["missing"]


@pytest.mark.parametrize("name", _SUBMODULES)
def test_subpackages_import_lazily_on_attribute_access(lazy_probe, name):
    assert lazy_probe[name] == f"l2o.{name}"
    assert name in lazy_probe["dir"]


def test_lazy_access_covers_the_documented_parts():
    assert {"optim", "tasks", "bench", "learned", "meta", "nn", "data"} <= set(_SUBMODULES)
