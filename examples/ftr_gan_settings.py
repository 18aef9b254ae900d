"""One GAN run of GDA or Follow-the-Ridge under chosen settings, traced: the controlled
experiments behind the GAN section of docs/methods/follow_the_ridge.md.

Every ``--record`` steps it prints one JSON line: the step, both players' gradient norms on the
game's held evaluation batch (2000 data points and 2000 fixed latents; with ``--fixed-batch`` the
game's one batch), f, and for FR the damping and the length of the correction H_yy⁻¹ H_yx Δx. The
last line holds the final metrics (mode coverage included) and the wall time.

Usage (the paper's networks and step size, fresh minibatches)::

    python examples/ftr_gan_settings.py --method FR --hidden 64 --lr 2e-4 --batch 512 --steps 10000
    python examples/ftr_gan_settings.py --method GDA --hidden 64 --lr 2e-4 --batch 512 --steps 10000
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from l2o.minimax import create, get


def run(args) -> dict:
    torch.set_num_threads(1)
    game = get(args.game, g_hidden=args.hidden, d_hidden=args.hidden, batch_size=args.batch,
               fixed_batch=args.fixed_batch, weight_decay=args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    x0, y0 = game.init_params(gen)
    x = {k: v.clone().requires_grad_(True) for k, v in x0.items()}
    y = {k: v.clone().requires_grad_(True) for k, v in y0.items()}
    kwargs = {"precondition": "rmsprop", "alternating": not args.simultaneous}
    if args.method == "FR":
        kwargs.update(cg_iters=args.cg_iters, damping=args.damping, adaptive_damping=not args.fixed_damping)
    opt = create("gda" if args.method == "GDA" else "ftr", list(x.values()), list(y.values()),
                 lr_x=args.lr, lr_y=args.lr, **kwargs)
    batches = game.batches(gen)
    start = time.perf_counter()
    trace = []
    for t in range(args.steps + 1):
        if t % args.record == 0 or t == args.steps:
            m = game.evaluate(x, y)
            row = {"step": t, "grad_x_norm": m["grad_x_norm"], "grad_y_norm": m["grad_y_norm"], "f": m["f"],
                   "modes_covered": m["modes_covered"], "high_quality": m["high_quality"],
                   "y_norm": math.sqrt(sum(float((v.detach() ** 2).sum()) for v in y.values())),
                   "damping": getattr(opt, "damping", None), "correction_norm": opt.last_step.get("correction_norm"),
                   "seconds": time.perf_counter() - start}
            trace.append(row)
            print(json.dumps(row), flush=True)
        if t == args.steps:
            break
        batch = next(batches)
        opt.step(lambda: game.loss(x, y, batch))
    final = {"final": trace[-1], "args": vars(args)}
    print(json.dumps(final), flush=True)
    return {"trace": trace, **final}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--game", default="mog1d", choices=("mog1d", "ring8"))
    p.add_argument("--method", default="FR", choices=("GDA", "FR"))
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--record", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fixed-batch", action="store_true")
    p.add_argument("--simultaneous", action="store_true")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--cg-iters", type=int, default=5)
    p.add_argument("--damping", type=float, default=1.0)
    p.add_argument("--fixed-damping", action="store_true")
    p.add_argument("--out", default=None, help="write the whole trace here as JSON")
    args = p.parse_args(argv)
    result = run(args)
    if args.out:
        from l2o.io import atomic_write_text, jsonable
        atomic_write_text(args.out, json.dumps(jsonable(result)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
