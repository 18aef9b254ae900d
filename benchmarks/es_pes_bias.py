"""PES is unbiased for the whole-horizon meta-gradient; truncated ES is not (the PES paper's claim).

Toy inner loop (the one in tests/test_estimators.py): x_{t+1} = x_t - theta_0 x_t + 0.1 theta_1,
x_0 = 1, meta-objective L(theta) = sum_{t=1..12} x_t^2, optimized in 4 truncations of 3 steps.
The exact gradient comes from autograd through the whole unroll. Both estimators use antithetic
pairs with sigma = 0.01; each estimate sums the 4 truncations' estimates; we average
``--repeats`` independent estimates and report mean +- standard error per coordinate.

Usage::

    python benchmarks/es_pes_bias.py               # writes benchmarks/results/es_pes_bias.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from l2o.io import atomic_write_text
from l2o.meta.estimators import PES, antithetic_es


def unrolled(thetas, x, steps):
    total = torch.zeros(thetas.shape[0], dtype=thetas.dtype)
    for _ in range(steps):
        x = x - thetas[:, 0] * x + 0.1 * thetas[:, 1]
        total = total + x * x
    return total, x


class _Box:
    """A particle's inner state x."""

    def __init__(self, x):
        self.x = x


class _Toy:
    """The estimators' Unroll over :func:`unrolled` (forward only)."""

    def __init__(self, steps):
        self.steps = steps

    def forward(self, thetas, boxes):
        loss, x = unrolled(thetas, torch.stack([b.x for b in boxes]), self.steps)
        for box, value in zip(boxes, x):
            box.x = value
        return loss, True

    def clone(self, box):
        return _Box(box.x.clone())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "es_pes_bias.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    horizon, trunc, sigma = 12, 3, 0.01
    theta = torch.tensor([0.3, 0.5], dtype=torch.float64)
    t = theta.clone().requires_grad_(True)
    total, _ = unrolled(t.unsqueeze(0), torch.ones(1, dtype=torch.float64), horizon)
    (true,) = torch.autograd.grad(total.sum(), t)
    gen = torch.Generator().manual_seed(args.seed)
    pes_all, tes_all = [], []
    for _ in range(args.repeats):
        pes = PES(sigma, args.pairs)
        toy = _Toy(trunc)
        state = pes.init_state(_Box(torch.tensor(1.0, dtype=torch.float64)), 2, clone=toy.clone, dtype=torch.float64)
        g_pes = torch.zeros(2, dtype=torch.float64)
        g_tes = torch.zeros(2, dtype=torch.float64)
        x_mean = torch.ones(1, dtype=torch.float64)

        for _ in range(horizon // trunc):
            estimate = pes.estimate(toy, theta, state, gen)
            g_pes += estimate.grad
            state = estimate.state
            start = x_mean.clone()
            g_tes += antithetic_es(lambda th: unrolled(th, start.expand(th.shape[0]), trunc)[0], theta, sigma,
                                   args.pairs, gen)[0]
            x_mean = unrolled(theta.unsqueeze(0), x_mean, trunc)[1]
        pes_all.append(g_pes)
        tes_all.append(g_tes)

    def summary(estimates):
        est = torch.stack(estimates)
        return {"mean": est.mean(0).tolist(), "sem": (est.std(0) / len(estimates) ** 0.5).tolist()}

    result = {"true_gradient": true.tolist(), "pes": summary(pes_all), "truncated_es": summary(tes_all),
              "pairs": args.pairs, "repeats": args.repeats, "sigma": sigma, "horizon": horizon, "truncation": trunc}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
