"""Meta-gradient estimators, one class per file with one signature (:mod:`.base`):
:class:`BPTT` (truncated back-propagation through time), :class:`TruncatedES` (antithetic ES
over a truncation) and :class:`PES` (persistent ES)."""

from l2o.meta.estimators._math import antithetic_es, es_gradient, pes_gradient
from l2o.meta.estimators.base import Estimate, GradientEstimator, Unroll, flatten_module, load_flat
from l2o.meta.estimators.bptt import BPTT, BPTTState
from l2o.meta.estimators.es import TruncatedES, TruncatedESState
from l2o.meta.estimators.pes import PES, PESState

#: estimator name (``l2o meta train --estimator``) -> class
ESTIMATORS = {"bptt": BPTT, "es": TruncatedES, "pes": PES}

__all__ = ["ESTIMATORS", "BPTT", "BPTTState", "TruncatedES", "TruncatedESState", "PES", "PESState", "Estimate",
           "GradientEstimator", "Unroll", "antithetic_es", "es_gradient", "pes_gradient", "flatten_module", "load_flat"]
