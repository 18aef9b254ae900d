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
