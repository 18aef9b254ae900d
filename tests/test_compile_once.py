"""l2o._compile.CompiledOnce: the eager fallback is per kind of call, and warns once."""

import warnings

import pytest
import torch

from l2o._compile import CompiledOnce


def _double_(out, x):
    out.copy_(2 * x)


def test_a_kind_of_call_that_fails_to_compile_leaves_the_others_compiled():
    fused = CompiledOnce(_double_, "the test's step")
    compiled_calls = []

    def compiled(out, x):  # stands in for torch.compile's result: this compiler cannot do 3-D tensors
        if x.dim() == 3:
            raise RuntimeError("cannot compile rank 3")
        compiled_calls.append(x.dim())
        _double_(out, x)

    fused._compiled = compiled
    flat, cube = torch.ones(4), torch.ones(2, 2, 2)
    assert fused(torch.empty(4), flat)
    with pytest.warns(RuntimeWarning, match="the test's step could not compile.*rank 3"):
        assert not fused(torch.empty(2, 2, 2), cube)
    assert fused.failed
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, and no second try for that kind
        assert not fused(torch.empty(2, 2, 2), cube)
        assert fused(torch.empty(4), flat)  # 1-D calls still take the compiled path
        # another kind that fails (float64): tried once, eager, and silent
        assert not fused(torch.empty(2, 2, 2, dtype=torch.float64), cube.double())
    assert compiled_calls == [1, 1]
