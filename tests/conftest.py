"""Shared test helpers."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test on one torch thread (restored after). The tensors of most tests are tiny; on
    a loaded 2-core machine intra-op threading made some of them 20x slower than one thread.
    Folders of such tests use it for every test (their conftest.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def uncompilable(monkeypatch):
    """``uncompilable(module, attribute)``: replace the module's :class:`l2o._compile.CompiledOnce`
    with a fresh one whose compilation fails, as on a machine without a C++ compiler; returns it."""
    from l2o._compile import CompiledOnce

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    def install(module, attribute: str) -> CompiledOnce:
        original = getattr(module, attribute)
        replacement = CompiledOnce(original.fn, original.what)
        replacement._compiled = broken
        monkeypatch.setattr(module, attribute, replacement)
        return replacement

    return install


@pytest.fixture
def strict_json():
    """``strict_json(text)``: ``json.loads`` that refuses NaN and Infinity (not JSON, though Python
    writes and reads them by default)."""
    import json

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return lambda text: json.loads(text, parse_constant=refuse)
