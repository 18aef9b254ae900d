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


def __getattr__(name):
    # Lazy so that ``import l2o`` stays cheap and the CLI starts fast.
    if name == "LearnedOptimizer":
        from l2o.learned import LearnedOptimizer

        return LearnedOptimizer
    raise AttributeError(f"module 'l2o' has no attribute {name!r}")


__all__ = ["LearnedOptimizer", "__version__"]
