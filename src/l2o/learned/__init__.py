"""Learned optimizers: update rules with meta-learned weights, and the deployable optimizer.

- ``RULES``: registry of rule kinds (``"lstm"``: the coordinatewise LSTM of
  Andrychowicz et al. 2016).
- ``LearnedOptimizer``: a ``torch.optim.Optimizer`` running any trained rule.
- ``PRETRAINED``: weights shipped with the package, by name
  (``LearnedOptimizer.pretrained("l2l-digits", model.parameters())``).
- ``save_rule`` / ``load_rule``: safetensors weights + JSON model card, checked on load.
"""

from l2o._registry import Registry
from l2o.learned.base import LearnedRule

RULES = Registry(
    "learned rule",
    {
        "lstm": "l2o.learned.lstm:LSTMRule",
        "mlp": "l2o.learned.mlp:MLPRule",
    },
)


def __getattr__(name):
    # Lazy: importing l2o.learned stays cheap (the registry is all the CLI needs).
    if name == "LearnedOptimizer":
        from l2o.learned.optimizer import LearnedOptimizer

        return LearnedOptimizer
    if name in ("PRETRAINED", "save_rule", "load_rule", "PretrainedIndex"):
        from l2o.learned import weights

        return getattr(weights, name)
    if name in ("LSTMRule", "preprocess_gradients"):
        from l2o.learned import lstm

        return getattr(lstm, name)
    if name == "MLPRule":
        from l2o.learned.mlp import MLPRule

        return MLPRule
    raise AttributeError(f"module 'l2o.learned' has no attribute {name!r}")


__all__ = ["LearnedRule", "LearnedOptimizer", "RULES", "PRETRAINED", "save_rule", "load_rule",
           "PretrainedIndex", "LSTMRule", "MLPRule", "preprocess_gradients"]
