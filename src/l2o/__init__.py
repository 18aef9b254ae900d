"""l2o: meta-train, deploy and benchmark gradient-descent optimizers in PyTorch.

The parts (see docs/ARCHITECTURE.md):

- ``l2o.tasks``   optimizee problems (Task, TaskFamily) and their registry
- ``l2o.data``    bundled data (scikit-learn's digits) and local-file loaders (MNIST IDX)
- ``l2o.optim``   hand-designed optimizers from the literature (torch.optim subclasses)
- ``l2o.learned`` learned optimizers: meta-nets and the deployable ``LearnedOptimizer``
- ``l2o.meta``    outer loops that meta-train learned optimizers, and checkpoints
- ``l2o.bench``   the benchmark harness: runner, tuning, results store, metrics, report
- ``l2o.nn``      modules and training methods (h-detach LSTM, gradient regularization)
"""

__version__ = "0.1.0"

import importlib as _importlib
import pkgutil as _pkgutil


def _submodules() -> list[str]:
    """The names of l2o's public subpackages and modules, found on disk (new ones included)."""
    return sorted(info.name for info in _pkgutil.iter_modules(__path__) if not info.name.startswith("_"))


def __getattr__(name):
    # Lazy so that ``import l2o`` stays cheap and the CLI starts fast: ``l2o.optim`` (or any other
    # subpackage or module) is imported on first attribute access, as ``torch`` does for ``torch.optim``.
    if name == "LearnedOptimizer":
        from l2o.learned import LearnedOptimizer

        return LearnedOptimizer
    if not name.startswith("_") and name in _submodules():
        return _importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'l2o' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), "LearnedOptimizer", *_submodules()})


__all__ = ["LearnedOptimizer", "__version__"]
