"""Hand-designed optimizers from the literature, as ``torch.optim.Optimizer`` subclasses.

``l2o.optim.create("hadam", params, lr=1e-3)`` builds one by name; ``available()`` lists names.
"""

from l2o._registry import Registry

OPTIMIZERS = Registry(
    "optimizer",
    {
        "yellowfin": "l2o.optim.yellowfin:YellowFin",
        "hadam": "l2o.optim.hadam:HAdam",
        "sgld": "l2o.optim.sgld:SGLD",
        "sgdhd": "l2o.optim.hypergradient:SGDHD",
        "adamhd": "l2o.optim.hypergradient:AdamHD",
    },
)

_CLASS_NAMES = {"YellowFin": "yellowfin", "HAdam": "hadam", "SGLD": "sgld", "SGDHD": "sgdhd", "AdamHD": "adamhd"}


def create(name: str, params, **hyperparameters):
    """Build the optimizer registered as ``name`` over ``params``."""
    return OPTIMIZERS.get(name)(params, **hyperparameters)


def available() -> list[str]:
    return OPTIMIZERS.names()


_POLICY = ("NonFiniteGradientWarning", "grads_finite", "warn_nonfinite_skip", "SparseGradientError")


def __getattr__(name):
    if name in _CLASS_NAMES:
        return OPTIMIZERS.get(_CLASS_NAMES[name])
    if name in _POLICY:  # the shared policies of l2o/optim/_base.py (non-finite and sparse gradients)
        from l2o.optim import _base

        return getattr(_base, name)
    raise AttributeError(f"module 'l2o.optim' has no attribute {name!r}")


__all__ = ["OPTIMIZERS", "create", "available", *_CLASS_NAMES, *_POLICY]
