"""The scripts in benchmarks/ import and parse their arguments (they are not run here: speed
is measured by running them, never asserted in tests)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))  # _machine.py: a helper


def _load(path: Path):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other (e.g. mlp_lopt)
    try:
        spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_script_imports_and_has_help(path, capsys):
    module = _load(path)
    assert module.__doc__ and "Usage" in module.__doc__, "each script says how to run it"
    if path.stem == "gpu_profile_learned":  # no arguments; without CUDA it says so and stops
        import torch

        if not torch.cuda.is_available():
            assert module.main() == 0
            assert "no CUDA device" in capsys.readouterr().err
        return
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_benchmark_part_selection_rejects_unknown_names(capsys):
    for stem, flag in (("mlp_lopt", "--only"), ("gpu_check", "--only")):
        module = _load(BENCHMARKS / f"{stem}.py")
        with pytest.raises(SystemExit) as stop:
            module.main([flag, "no_such_part", "--out", "/dev/null", "--device", "cpu"] if stem == "gpu_check"
                        else [flag, "no_such_part", "--out", "/dev/null"])
        assert stop.value.code == 2
        assert "no_such_part" in capsys.readouterr().err


def test_adaptation_selection_rejects_unknown_problem_types(capsys):
    module = _load(BENCHMARKS / "mlp_adapt_select.py")
    with pytest.raises(SystemExit) as stop:
        module.main(["--types", "digits,no_such_type", "--out", "/dev/null"])
    assert stop.value.code == 2
    assert "no_such_type" in capsys.readouterr().err
