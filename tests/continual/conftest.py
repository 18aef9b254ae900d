"""Small synthetic streams for fast tests (the scenarios themselves are tested in test_scenarios.py)."""

import pytest
import torch

from l2o.continual.scenarios import ContinualTask, Stream


def make_tiny_stream(tasks=3, n=48, d=6, classes=3, multi_head=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, d, generator=g) * 2
    out = []
    for t in range(tasks):
        perm = torch.randperm(d, generator=g) if t else torch.arange(d)
        parts = []
        for size in (n, n // 2, n // 2):
            y = torch.randint(0, classes, (size,), generator=g)
            x = (centers[y] + 0.5 * torch.randn(size, d, generator=g))[:, perm]
            parts += [x, y]
        out.append(ContinualTask(t, f"t{t}", *parts, classes=classes))
    return Stream("tiny", out, multi_head, d, (1, d))


@pytest.fixture
def tiny_stream():
    return make_tiny_stream
