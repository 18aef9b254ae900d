import math

import pytest

from l2o.bench import grids


def test_logspace_matches_deepobs_grid():
    values = grids.parse_values("logspace(1e-5, 1e2, 36)")
    assert len(values) == 36
    assert values == pytest.approx(grids.DEEPOBS_LR_GRID)
    assert values[0] == pytest.approx(1e-5) and values[-1] == pytest.approx(1e2)
    ratios = [b / a for a, b in zip(values, values[1:])]
    assert max(ratios) == pytest.approx(min(ratios))  # evenly spaced in log


def test_value_forms():
    assert grids.parse_values("linspace(0, 1, 3)") == pytest.approx([0.0, 0.5, 1.0])
    assert grids.parse_values("[0.1, 0.01]") == [0.1, 0.01]
    assert grids.parse_values("(0.9, 0.999)") == [(0.9, 0.999)]
    assert grids.parse_values("0.5") == [0.5]
    assert grids.parse_values("True") == [True]
    assert grids.parse_values("relu") == ["relu"]
    assert grids.parse_values([[0.9, 0.99], [0.5, 0.9]]) == [(0.9, 0.99), (0.5, 0.9)]


def test_spec_with_several_keys_and_class_path():
    name, grid = grids.parse_grid_spec("adam:lr=logspace(1e-3,1e-1,3);betas=[(0.9,0.999),(0.5,0.9)]")
    assert name == "adam"
    assert grid["lr"] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert grid["betas"] == [(0.9, 0.999), (0.5, 0.9)]
    configs = grids.expand(grid)
    assert len(configs) == 6
    assert {"betas": (0.5, 0.9), "lr": pytest.approx(1e-1)} in configs
    name, grid = grids.parse_grid_spec("torch.optim:Adagrad:lr=[0.1,0.01]")
    assert name == "torch.optim:Adagrad" and grid == {"lr": [0.1, 0.01]}
    assert grids.expand({}) == [{}]


@pytest.mark.parametrize("spec, fragment", [
    ("adam", "must look like"),
    ("lr=0.1", "must start with the optimizer name"),
    ("adam:lr=logspace(1e-3,1e-1)", "adam:lr"),
    ("adam:lr=logspace(0,1,3)", "bounds must be > 0"),
    ("adam:lr=logspace(1e-3,1e-1,2.5)", "integer num"),
    ("adam:lr=[]", "empty"),
    ("adam:lr=0.1;lr=0.2", "given twice"),
    ("adam:lr=0.1;momentum", "must be key=values"),
    ("adam:1lr=0.1", "not a valid hyperparameter name"),
    ("adam:lr=[0.1,", "cannot read values"),
])
def test_bad_specs_name_the_entry(spec, fragment):
    with pytest.raises(grids.GridError) as info:
        grids.parse_grid_spec(spec)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_toml_file(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('[adam]\nlr = "logspace(1e-4, 1e-2, 3)"\nbetas = [[0.9, 0.999]]\n\n'
                    '["torch.optim:Adagrad"]\nlr = 0.1\n')
    loaded = grids.load_grid_file(path)
    assert loaded["adam"]["lr"] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert loaded["adam"]["betas"] == [(0.9, 0.999)]
    assert loaded["torch.optim:Adagrad"] == {"lr": [0.1]}


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        grids.load_grid_file(tmp_path / "missing.toml")
    bad = tmp_path / "grid.toml"
    bad.write_text('[adam]\nlr = "logspace(1, 2)"\n')
    with pytest.raises(grids.GridError, match="adam.lr"):
        grids.load_grid_file(bad)
    bad.write_text("adam = 3\n")
    with pytest.raises(grids.GridError, match="'adam' must be a non-empty table"):
        grids.load_grid_file(bad)
    other = tmp_path / "grid.json"
    other.write_text("{}")
    with pytest.raises(grids.GridError, match=r"\.toml, \.yaml"):
        grids.load_grid_file(other)


def test_yaml_file(tmp_path):
    # No importorskip: PyYAML is in the test extra, so the YAML path is tested where users install it.
    path = tmp_path / "grid.yaml"
    path.write_text("sgd:\n  lr: linspace(0.1, 0.3, 3)\n  momentum: [0.0, 0.9]\n")
    loaded = grids.load_grid_file(path)
    assert loaded["sgd"]["lr"] == pytest.approx([0.1, 0.2, 0.3])
    assert len(grids.expand(loaded["sgd"])) == 6


def test_quick_grid_is_half_decades():
    assert grids.QUICK_LR_GRID[0] == pytest.approx(1e-4) and grids.QUICK_LR_GRID[-1] == pytest.approx(10.0)
    assert all(math.isclose(b / a, 10 ** 0.5) for a, b in zip(grids.QUICK_LR_GRID, grids.QUICK_LR_GRID[1:]))
