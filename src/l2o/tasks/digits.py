"""MLP classifiers on scikit-learn's 8x8 digits (or on local MNIST files)."""

from __future__ import annotations


import torch
from torch import Tensor

from l2o.tasks.base import Params, SupervisedTask, TaskFamily, init_linear_layers, seed_from

ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "tanh": torch.tanh,
}


class DigitsMLP(SupervisedTask):
    """An MLP classifier, written functionally (fast enough to unroll for meta-training).

    The paper's base network (section 3.2) is one hidden layer of 20 sigmoid units trained
    for 100 steps with minibatches of 128; width, depth, activation and budget are parameters.

    Args:
        hidden: units per hidden layer.
        layers: number of hidden layers.
        activation: "sigmoid", "relu" or "tanh".
        batch_size: minibatch size.
        steps: default training budget.
        data: "digits" (bundled with scikit-learn) or "mnist" (local IDX files, see
            :func:`l2o.data.load_mnist`).
        data_seed: seed of the train/test split (digits only).
        mnist_dir: directory of the MNIST IDX files (else ``$L2O_MNIST_DIR``).
    """

    metric = "test_loss"

    def __init__(self, hidden: int = 20, layers: int = 1, activation: str = "sigmoid", batch_size: int = 128,
                 steps: int = 100, data: str = "digits", data_seed: int = 0, mnist_dir: str | None = None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if hidden < 1 or layers < 0:
            raise ValueError(f"need hidden >= 1 and layers >= 0, got hidden={hidden}, layers={layers}")
        if data == "digits":
            from l2o.data.digits import load_digits_split

            arrays = load_digits_split(seed=data_seed)
        elif data == "mnist":
            from l2o.data.mnist import load_mnist

            arrays = load_mnist(mnist_dir)
        else:
            raise ValueError(f"data must be 'digits' or 'mnist', got {data!r}")
        super().__init__(*arrays, batch_size=batch_size)
        self.hidden, self.layers, self.activation, self.steps, self.data = hidden, layers, activation, steps, data
        self.name = f"{data}_mlp"
        self._act = ACTIVATIONS[activation]
        self.sizes = [self.x_train.shape[1]] + [hidden] * layers + [int(self.y_train.max()) + 1]

    def init_params(self, generator: torch.Generator) -> Params:
        return init_linear_layers(self.sizes, generator)

    def forward(self, params: Params, x: Tensor) -> Tensor:
        n = len(self.sizes) - 1
        for i in range(n):
            x = torch.nn.functional.linear(x, params[f"layer{i}.weight"], params[f"layer{i}.bias"])
            if i < n - 1:
                x = self._act(x)
        return x

    def describe(self):
        return {**super().describe(), "hidden": self.hidden, "layers": self.layers,
                "activation": self.activation, "data": self.data}


class DigitsMLPFamily(TaskFamily):
    """Digits MLP tasks; each sample gets a fresh split of batches (through the generator) and
    fresh initial parameters. Architecture is fixed by the constructor arguments."""

    name = "digits_mlp"

    def __init__(self, **task_kwargs):
        self.task_kwargs = task_kwargs
        self._task = DigitsMLP(**task_kwargs)

    def sample(self, generator: torch.Generator) -> DigitsMLP:
        seed_from(generator)  # keep the generator stream consistent with other families
        return self._task
