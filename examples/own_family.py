"""A task family of one's own, for ``l2o meta train --family`` and ``l2o meta eval --task``.

A small tanh network regressing a fixed noisy linear target in 8 dimensions; each sampled task is
a fresh initialisation of the network, trained for 40 steps on minibatches of 32. Copy this file
and put your own model and data in ``net`` and the tensors below. From this directory:

    l2o meta train --family own_family:family --steps 300 --val-every 50 --out runs/own
    l2o meta eval --weights runs/own/best_weights.safetensors --task own_family:task --steps 40,200 --plot eval.png

(docs/methods/mlp_lopt.md, "Meta-training on tasks of your own", has the numbers these gave.)
"""

from __future__ import annotations

import torch

from l2o.tasks import FixedFamily, ModuleTask

_gen = torch.Generator().manual_seed(0)
X = torch.randn(256, 8, generator=_gen)
Y = X @ torch.randn(8, generator=_gen) + 0.1 * torch.randn(256, generator=_gen)


def net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def task(steps: int = 40) -> ModuleTask:
    """One task: ``net`` on the first 192 rows (minibatches of 32), tested on the other 64."""
    return ModuleTask(net, X[:192], Y[:192], X[192:], Y[192:], batch_size=32, steps=int(steps), name="own_regression")


def family() -> FixedFamily:
    """Fresh initialisations of ``task()`` (the seed ``FixedFamily`` passes is not needed: the
    network's initialisation is drawn from the generator each instance is started with)."""
    return FixedFamily(lambda seed: task(), name="own_regression")
