"""scikit-learn's 8x8 digits (1,797 images, shipped inside scikit-learn: no download)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch


@lru_cache(maxsize=8)
def _split(seed: int, test_fraction: float):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = data.data.astype(np.float32) / 16.0  # pixel values 0..16 -> [0, 1]
    y = data.target.astype(np.int64)
    order = np.random.RandomState(seed).permutation(len(x))
    n_test = int(round(len(x) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def load_digits_split(seed: int = 0, test_fraction: float = 0.25):
    """Train/test split of the digits, fixed by ``seed``: ``(x_train, y_train, x_test, y_test)``.

    Images are flattened to 64 features scaled to [0, 1]; labels are int64 class indices.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    return tuple(torch.from_numpy(a.copy()) for a in _split(int(seed), float(test_fraction)))
