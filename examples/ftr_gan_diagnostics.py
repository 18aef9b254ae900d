"""Follow-the-Ridge on the first, small GAN setting that ``l2o reproduce ftr`` used (16-unit
MLPs, one fixed batch of 64, step size 5e-4, 2000 steps; :data:`SMALL` below): two runs.

1. FR with the paper's adaptive damping on ``mog1d`` (seed 0, those settings),
   stepped by hand for 400 steps, printing every 20 steps the damping, the length of the
   correction H_yy⁻¹ H_yx Δx, the scale of the discriminator's own RMSprop step
   (lr·sqrt(n_y)) and both gradient norms.
2. FR with a fixed damping (default 0.01, no adaptation) for the reproduction's 2000 steps on
   the same game and seed: the final metrics as JSON.

The paper's own setting and the controlled experiments around it are in
``examples/ftr_gan_settings.py`` and ``examples/ftr_gan_spectrum.py``.

Usage::

    python examples/ftr_gan_diagnostics.py            # both (about 8 minutes of CPU time)
    python examples/ftr_gan_diagnostics.py --only trace
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import torch

from l2o.experiments import ftr
from l2o.minimax import FollowTheRidge, gan_1d


#: the small setting these diagnostics were made for (the reproduction now uses the paper's networks)
SMALL = replace(ftr.FTRConfig(), gan_steps=2000, gan_lr=5e-4, hidden=16, batch_size=64, fixed_batch=True)


def trace(steps: int = 400) -> None:
    cfg = SMALL
    game = gan_1d(batch_size=cfg.batch_size, g_hidden=cfg.hidden, d_hidden=cfg.hidden, fixed_batch=True)
    gen = torch.Generator().manual_seed(0)
    x0, y0 = game.init_params(gen)
    x = {k: v.clone().requires_grad_(True) for k, v in x0.items()}
    y = {k: v.clone().requires_grad_(True) for k, v in y0.items()}
    opt = FollowTheRidge(list(x.values()), list(y.values()), lr_x=cfg.gan_lr, lr_y=cfg.gan_lr, precondition="rmsprop",
                         cg_iters=cfg.cg_iters, damping=cfg.damping, adaptive_damping=True, alternating=True)
    batch = next(game.batches(gen))
    n_y = sum(v.numel() for v in y.values())
    for t in range(steps):
        opt.step(lambda: game.loss(x, y, batch))
        if t % 20 == 0:
            m = game.evaluate(x, y)
            print(f"step {t}: damping {opt.damping:.2g}  correction {opt.last_step['correction_norm']:.3g}  "
                  f"own step scale {cfg.gan_lr * math.sqrt(n_y):.3g}  |grad_x| {m['grad_x_norm']:.3g}  "
                  f"|grad_y| {m['grad_y_norm']:.3g}", flush=True)


def fixed(damping: float) -> None:
    cfg = replace(SMALL, adaptive_damping=False, damping=damping)
    r = ftr._run_gan("mog1d", "FR", 0, cfg, False)
    print(json.dumps({"damping": damping, "final": r["final"]}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FR on the small 1-D GAN: damping trace and a fixed-damping run")
    parser.add_argument("--only", choices=("trace", "fixed"), default=None)
    parser.add_argument("--damping", type=float, default=0.01, help="the fixed damping of the second run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.only in (None, "trace"):
        trace()
    if args.only in (None, "fixed"):
        fixed(args.damping)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
