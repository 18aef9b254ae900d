"""Reader for MNIST's IDX files in a local directory (nothing is downloaded)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

ENV_VAR = "L2O_MNIST_DIR"
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# IDX type codes (third byte of the magic number) -> numpy dtype (big-endian).
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class MNISTNotFoundError(FileNotFoundError):
    """The MNIST files are not where we were told to look."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into a numpy array; ValueError if malformed."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(f"{path}: IDX body has {len(data) - header} bytes, shape {shape} needs {expected} (truncated?)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    raise MNISTNotFoundError(f"MNIST file {stem}[.gz] not found in {directory}")


def load_mnist(directory: str | os.PathLike | None = None):
    """Load MNIST from ``directory`` (or ``$L2O_MNIST_DIR``) as float images in [0, 1], flattened.

    Returns ``(x_train, y_train, x_test, y_test)`` tensors.
    """
    directory = directory or os.environ.get(ENV_VAR)
    if not directory:
        raise MNISTNotFoundError(
            f"no MNIST directory given: pass one or set ${ENV_VAR} to a folder holding "
            + ", ".join(FILES.values())
        )
    directory = Path(directory)
    if not directory.is_dir():
        raise MNISTNotFoundError(f"MNIST directory does not exist: {directory}")
    arrays = {key: read_idx(_find(directory, stem)) for key, stem in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"MNIST {split} files disagree: images {x.shape}, labels {y.shape}")
    out = []
    for split in ("train", "test"):
        x = torch.from_numpy(arrays[f"x_{split}"].reshape(len(arrays[f"x_{split}"]), -1).astype(np.float32) / 255.0)
        y = torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))
        out += [x, y]
    return tuple(out)
