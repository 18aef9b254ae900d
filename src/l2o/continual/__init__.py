"""Continual learning: task streams, OGD, HAT, the EWC / A-GEM / joint baselines, metrics.

See docs/methods/ogd.md and docs/methods/hat.md.
"""

from l2o.continual.hat import HAT, HATConv2d, HATLinear, HATNet, compensation
from l2o.continual.methods import AGEM, EWC, Joint, Method
from l2o.continual.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer, summarize
from l2o.continual.ogd import OGD, OrthonormalBasis, output_gradients
from l2o.continual.runner import METHODS, make_method, run_experiment, train_sequence
from l2o.continual.scenarios import SCENARIOS, ContinualTask, Stream, make_stream

__all__ = ["AGEM", "EWC", "HAT", "HATConv2d", "HATLinear", "HATNet", "Joint", "METHODS", "Method", "OGD",
           "OrthonormalBasis", "SCENARIOS", "ContinualTask", "Stream", "average_accuracy", "backward_transfer",
           "compensation", "forgetting", "forward_transfer", "make_method", "make_stream", "output_gradients",
           "run_experiment", "summarize", "train_sequence"]
