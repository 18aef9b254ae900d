"""Shared fixtures of the optimizer tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Run each optimizer test on one thread.

    The tensors here are tiny; on a loaded 2-core machine intra-op threading made the
    sampler tests 20x slower than one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
