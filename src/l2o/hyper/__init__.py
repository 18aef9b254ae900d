"""Gradients through training itself.

* :mod:`l2o.hyper.reversible`: exact reversible-learning hypergradients of SGD with momentum
  (Maclaurin, Duvenaud & Adams 2015), on exact fixed-point arithmetic (:mod:`l2o.hyper.fixed_point`).
* :mod:`l2o.hyper.imaml`: implicit MAML (Rajeswaran et al. 2019) with MAML and first-order MAML,
  on the few-shot families of :mod:`l2o.hyper.fewshot`.
"""

from l2o.hyper.fixed_point import ExactTensor, FixedPointOverflowError, InfoBuffer
from l2o.hyper.reversible import (ChaoticHypergradientWarning, HypergradientError, HypergradResult, Hyperparameters,
                                  layer_groups, reversible_hypergradient, unrolled_hypergradient)

__all__ = ["ExactTensor", "FixedPointOverflowError", "InfoBuffer", "ChaoticHypergradientWarning",
           "HypergradientError", "HypergradResult", "Hyperparameters", "layer_groups", "reversible_hypergradient",
           "unrolled_hypergradient"]
