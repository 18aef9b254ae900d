"""Diagnostics of SGD's noise: McCandlish et al.'s gradient noise scale ``B_simple`` (exact from
per-example gradients, or from two batch sizes), Smith & Le's and Park et al.'s noise scales, a
tracker for any training loop, and batch-size / learning-rate advice. See docs/methods/noise_scale.md.
"""

from l2o.diagnostics.noise_scale import (
    NoiseScale, exact_noise_scale, final_b_simple, gradient_noise_scale, module_loss, noise_scale_functional,
    task_noise_scale, two_batch_estimate, two_batch_noise_scale)
from l2o.diagnostics.scales import Advice, advise, normalized_noise_scale, ntk_learning_rate, smith_le_noise_scale
from l2o.diagnostics.tracker import NoiseScaleTracker

__all__ = ["NoiseScale", "gradient_noise_scale", "task_noise_scale", "exact_noise_scale", "two_batch_noise_scale",
           "two_batch_estimate", "noise_scale_functional", "module_loss", "final_b_simple", "smith_le_noise_scale",
           "normalized_noise_scale", "ntk_learning_rate", "advise", "Advice", "NoiseScaleTracker"]
