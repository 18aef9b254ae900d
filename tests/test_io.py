"""l2o.io helpers that the other tests do not reach directly."""

import json
import math

from l2o.io import jsonable


def test_jsonable_makes_non_finite_numbers_null_at_any_depth():
    value = {"a": math.inf, "b": [1.5, -math.inf, (math.nan, 2)], "c": {"d": math.nan, "e": "x", "f": None}, "g": 3}
    clean = jsonable(value)
    assert clean == {"a": None, "b": [1.5, None, [None, 2]], "c": {"d": None, "e": "x", "f": None}, "g": 3}
    json.dumps(clean, allow_nan=False)  # strict JSON now
    assert value["a"] == math.inf  # the input is left as it was


def test_atomic_writes_follow_the_umask_like_any_new_file(tmp_path):
    import os
    import stat

    import torch

    from l2o.io import atomic_write_text, save_tensors

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.md", "# report\n")
        save_tensors(tmp_path / "w.safetensors", {"x": torch.zeros(2)})
        (tmp_path / "plain.txt").write_text("x")
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.json", "{}")
    finally:
        os.umask(old)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert mode["report.md"] == mode["w.safetensors"] == mode["plain.txt"] == 0o644
    assert mode["private.json"] == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
