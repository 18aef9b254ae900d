"""YellowFin's defaults against the paper's listing on the common suite's noise-free problems.

The 20-dimensional quadratic (curvatures 0.1..10, random rotation, seed 0) and Rosenbrock from
(-1.5, 2) of tests/optim/test_common.py, 6000 steps from the same starts; prints the loss after
3000 and 6000 steps and the final tuned values.

    python examples/yellowfin_noise_free.py
"""

from __future__ import annotations

import torch

from l2o.optim.yellowfin import YellowFin


def quadratic_problem():
    gen = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(20, 20, generator=gen, dtype=torch.float64))
    curvature = rotation @ torch.diag(torch.logspace(-1, 1, 20, dtype=torch.float64)) @ rotation.T
    minimum = torch.randn(20, generator=gen, dtype=torch.float64)
    return lambda x: 0.5 * (x - minimum) @ curvature @ (x - minimum), torch.zeros(20, dtype=torch.float64)


def rosenbrock_problem():
    return (lambda xy: (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2), torch.tensor([-1.5, 2.0],
                                                                                          dtype=torch.float64)


def main() -> None:
    torch.set_num_threads(1)
    for label, kwargs in (("defaults", {}), ("ALGORITHM_LISTING", YellowFin.ALGORITHM_LISTING)):
        for name, problem in (("quadratic-20d", quadratic_problem), ("rosenbrock", rosenbrock_problem)):
            loss_fn, start = problem()
            x = start.clone().requires_grad_()
            optimizer = YellowFin([x], **kwargs)
            losses = {}
            for step in range(1, 6001):
                optimizer.zero_grad()
                loss_fn(x).backward()
                optimizer.step()
                if step in (3000, 6000):
                    losses[step] = float(loss_fn(x.detach()))
            state = optimizer.tuner_state()
            print(f"{label:18s} {name:14s} loss after 3000: {losses[3000]:.3g}  after 6000: {losses[6000]:.3g}  "
                  f"alpha {state['lr']:.3g}  mu {state['momentum']:.4g}")


if __name__ == "__main__":
    main()
