"""More classifiers on scikit-learn's 8x8 digits: logistic regression and a small CNN.

Both reuse the digits split of :func:`l2o.data.digits.load_digits_split` (1,348 training and
449 test images) and report test accuracy.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from l2o.tasks.base import Params, SupervisedTask


def _uniform(shape, fan_in: int, generator: torch.Generator) -> Tensor:
    # PyTorch's default for Linear/Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(*shape, generator=generator) * 2 - 1) * bound


class _DigitsTask(SupervisedTask):
    metric = "test_accuracy"

    def __init__(self, batch_size: int, steps: int, data_seed: int):
        from l2o.data.digits import load_digits_split

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        super().__init__(*load_digits_split(seed=data_seed), batch_size=batch_size)
        self.steps, self.data_seed = int(steps), data_seed


class DigitsLogReg(_DigitsTask):
    """Multinomial logistic regression (64 -> 10, softmax cross-entropy) on the digits.

    Args:
        batch_size: minibatch size (128).
        steps: budget (300).
        init: "zeros" (the convex problem's usual start, as DeepOBS's ``mnist_logreg``) or
            "uniform" (PyTorch's Linear default).
        data_seed: seed of the train/test split.
    """

    name = "digits_logreg"

    def __init__(self, batch_size: int = 128, steps: int = 300, init: str = "zeros", data_seed: int = 0):
        if init not in ("zeros", "uniform"):
            raise ValueError(f"init must be 'zeros' or 'uniform', got {init!r}")
        super().__init__(batch_size, steps, data_seed)
        self.init = init

    def init_params(self, generator: torch.Generator) -> Params:
        if self.init == "zeros":
            return {"weight": torch.zeros(10, 64), "bias": torch.zeros(10)}
        return {"weight": _uniform((10, 64), 64, generator), "bias": _uniform((10,), 64, generator)}

    def forward(self, params: Params, x: Tensor) -> Tensor:
        return F.linear(x, params["weight"], params["bias"])


class DigitsCNN(_DigitsTask):
    """A small CNN on the 8x8 digits: conv3x3(1->c) - ReLU - maxpool2 - conv3x3(c->2c) - ReLU -
    maxpool2 - linear(8c -> 10), with c = ``channels`` (8). 'same' padding.

    Args:
        channels: width of the first convolution.
        batch_size: minibatch size (128).
        steps: budget (300).
        data_seed: seed of the train/test split.
    """

    name = "digits_cnn"

    def __init__(self, channels: int = 8, batch_size: int = 128, steps: int = 300, data_seed: int = 0):
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        super().__init__(batch_size, steps, data_seed)
        self.channels = channels

    def init_params(self, generator: torch.Generator) -> Params:
        c = self.channels
        return {
            "conv1.weight": _uniform((c, 1, 3, 3), 9, generator),
            "conv1.bias": _uniform((c,), 9, generator),
            "conv2.weight": _uniform((2 * c, c, 3, 3), 9 * c, generator),
            "conv2.bias": _uniform((2 * c,), 9 * c, generator),
            "fc.weight": _uniform((10, 8 * c), 8 * c, generator),
            "fc.bias": _uniform((10,), 8 * c, generator),
        }

    def forward(self, params: Params, x: Tensor) -> Tensor:
        h = x.reshape(-1, 1, 8, 8)
        h = F.max_pool2d(F.relu(F.conv2d(h, params["conv1.weight"], params["conv1.bias"], padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(h, params["conv2.weight"], params["conv2.bias"], padding=1)), 2)
        return F.linear(h.flatten(1), params["fc.weight"], params["fc.bias"])

    def describe(self):
        return {**super().describe(), "channels": self.channels}
