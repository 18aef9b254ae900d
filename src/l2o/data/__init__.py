"""Data sets: scikit-learn's bundled 8x8 digits (default, offline) and local MNIST IDX files."""

from l2o.data.digits import load_digits_split
from l2o.data.mnist import MNISTNotFoundError, load_mnist, read_idx

__all__ = ["load_digits_split", "load_mnist", "read_idx", "MNISTNotFoundError"]
