"""Compressed distributed SGD: DORE and the compressors and algorithms it is measured against.

* :mod:`.compressors` - QSGD-style quantization, scaled sign, top-k, random-k, identity: packed
  ``uint8`` payloads with their variance bound ω and bits per element;
* :mod:`.algorithms` - full precision, QSGD, MEM-SGD, DIANA, DoubleSqueeze and DORE as a worker
  side and a server side;
* :mod:`.simulator` - K virtual workers and a server in one process;
* :mod:`.hook` - the same algorithms as a DDP communication hook (rank 0 serves);
* :mod:`.launch` - gloo processes on localhost with timeouts; :mod:`.problems` - the test problems.
"""

from .algorithms import (ALGORITHMS, DIANA, DORE, Algorithm, CompressedSGD, DoubleSqueeze, FullPrecision, MemSGD,
                         generator_for, make_algorithm)
from .compressors import QSGD, Compressor, Identity, RandomK, ScaledSign, TopK, create
from .hook import CollectiveError, CompressionState, compression_hook
from .simulator import simulate

__all__ = ["ALGORITHMS", "DIANA", "DORE", "Algorithm", "CompressedSGD", "DoubleSqueeze", "FullPrecision", "MemSGD",
           "generator_for", "make_algorithm", "QSGD", "Compressor", "Identity", "RandomK", "ScaledSign", "TopK",
           "create", "CollectiveError", "CompressionState", "compression_hook", "simulate"]
