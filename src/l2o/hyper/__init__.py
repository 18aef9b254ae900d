"""Gradients through training itself.

* :mod:`l2o.hyper.reversible`: exact reversible-learning hypergradients of SGD with momentum
  (Maclaurin, Duvenaud & Adams 2015), on exact fixed-point arithmetic (:mod:`l2o.hyper.fixed_point`).
* :mod:`l2o.hyper.imaml`: implicit MAML (Rajeswaran et al. 2019) with MAML and first-order MAML,
  on the few-shot families of :mod:`l2o.hyper.fewshot`.
"""

from l2o.hyper.fewshot import BatchedMLP, ClassFewShotFamily, SinusoidFamily, TaskBatch, digits_families
from l2o.hyper.fixed_point import ExactTensor, FixedPointOverflowError, InfoBuffer
from l2o.hyper.imaml import (InnerConfig, MetaTrainingDiverged, batched_conjugate_gradient, graph_memory,
                             implicit_meta_gradient, meta_gradient, meta_train)
from l2o.hyper.reversible import (ChaoticHypergradientWarning, HypergradientError, HypergradResult, Hyperparameters,
                                  layer_groups, reversible_hypergradient, unrolled_hypergradient)

__all__ = ["ExactTensor", "FixedPointOverflowError", "InfoBuffer", "ChaoticHypergradientWarning",
           "HypergradientError", "HypergradResult", "Hyperparameters", "layer_groups", "reversible_hypergradient",
           "unrolled_hypergradient", "BatchedMLP", "ClassFewShotFamily", "SinusoidFamily", "TaskBatch",
           "digits_families", "InnerConfig", "MetaTrainingDiverged", "batched_conjugate_gradient", "graph_memory",
           "implicit_meta_gradient", "meta_gradient", "meta_train"]
