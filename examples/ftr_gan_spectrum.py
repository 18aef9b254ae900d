"""The discriminator's Hessian H_yy on the 1-D mixture GAN, and what Follow-the-Ridge's correction
H_yy⁻¹ H_yx Δx does with it.

Trains the paper's networks (64-unit, 2-layer tanh MLPs, step size 2e-4, RMSprop for both players,
alternating GDA) on one fixed batch for ``--steps`` steps, where GDA settles, then at that point:

1. materializes H_yy (one Hessian-vector product per discriminator parameter) and prints its
   spectrum: how many eigenvalues are positive, how many are within ±``--small`` of zero;
2. forms c = H_yx Δx with Δx the generator's next RMSprop step, and the exact damped corrections
   u_λ = (H_yy² + λI)⁻¹ H_yy c for several λ (the adaptive rule's floor 1e-8 included), their
   lengths against the discriminator's own step scale lr·sqrt(n_y), and the share of ‖u‖² that
   comes from the eigen-directions with |eigenvalue| < ``--small``;
3. compares FR's 5-iteration CG solution at that λ with the exact one (relative error);
4. with ``--continue-steps N``, plays N more steps from that point with GDA and, separately,
   with FR (the paper's settings: 5 CG steps, adaptive damping from 1), both starting from GDA's
   RMSprop statistics, and records both players' gradient norms every N/10 steps
   (``--skip-spectrum`` leaves out 1-3).

One JSON object is printed at the end (and written to ``--out``).

Usage::

    python examples/ftr_gan_spectrum.py                # about 5 minutes on one idle core
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from l2o.minimax import FollowTheRidge, create, get


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", type=float, default=1e-3)
    p.add_argument("--continue-steps", type=int, default=0)
    p.add_argument("--skip-spectrum", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    game = get("mog1d", g_hidden=args.hidden, d_hidden=args.hidden, batch_size=args.batch, fixed_batch=True)
    gen = torch.Generator().manual_seed(args.seed)
    x0, y0 = game.init_params(gen)
    x = {k: v.clone().requires_grad_(True) for k, v in x0.items()}
    y = {k: v.clone().requires_grad_(True) for k, v in y0.items()}
    xs, ys = list(x.values()), list(y.values())
    gda = create("gda", xs, ys, lr_x=args.lr, lr_y=args.lr, precondition="rmsprop", alternating=True)
    batch = next(game.batches(gen))
    for _ in range(args.steps):
        gda.step(lambda: game.loss(x, y, batch))
    metrics = game.evaluate(x, y)
    out = {"settings": vars(args), "metrics_at_point": metrics}
    if not args.skip_spectrum:
        out.update(spectrum(args, game, x, y, xs, ys, gda, batch))
    if args.continue_steps:
        out["continued"] = continued(args, game, x, y, gda, batch)
    out["seconds"] = time.perf_counter() - t0
    print(json.dumps(out, indent=1))
    if args.out:
        from l2o.io import atomic_write_text, jsonable
        atomic_write_text(args.out, json.dumps(jsonable(out), indent=1) + "\n")
    return 0


def continued(args, game, x, y, gda, batch) -> dict:
    """N more steps of GDA and of FR from the same point and the same RMSprop statistics."""
    start = {k: v.detach().clone() for k, v in {**x, **y}.items()}
    every = max(1, args.continue_steps // 10)
    result = {}
    for name in ("GDA", "FR"):
        xx = {k: start[k].clone().requires_grad_(True) for k in x}
        yy = {k: start[k].clone().requires_grad_(True) for k in y}
        kw = {"alternating": True, "precondition": "rmsprop"}
        if name == "FR":
            kw.update(cg_iters=5, damping=1.0, adaptive_damping=True)
        opt = create("gda" if name == "GDA" else "ftr", list(xx.values()), list(yy.values()), lr_x=args.lr,
                     lr_y=args.lr, **kw)
        opt.moments = {pl: {k: [t.clone() for t in ts] for k, ts in m.items()} for pl, m in gda.moments.items()}
        opt.moment_steps = gda.moment_steps
        rows = []
        for t in range(args.continue_steps + 1):
            if t % every == 0:
                m = game.evaluate(xx, yy)
                rows.append({"step": t, "grad_x_norm": m["grad_x_norm"], "grad_y_norm": m["grad_y_norm"],
                             "distance_moved": math.sqrt(sum(float(((v.detach() - start[k]) ** 2).sum())
                                                             for k, v in {**xx, **yy}.items()))})
            if t < args.continue_steps:
                opt.step(lambda: game.loss(xx, yy, batch))
        result[name] = rows
    return result


def spectrum(args, game, x, y, xs, ys, gda, batch) -> dict:
    # H_yy materialized in float64 from Hessian-vector products (FR's own product, one per column)
    fr = FollowTheRidge(xs, ys, lr_x=args.lr, lr_y=args.lr, precondition="rmsprop", cg_iters=5, damping=1e-8)
    fr.moments, fr.moment_steps = gda.moments, gda.moment_steps
    loss = game.loss(x, y, batch)
    grads = torch.autograd.grad(loss, xs + ys, create_graph=True)
    gx, gy = list(grads[:len(xs)]), list(grads[len(xs):])
    n_y = sum(v.numel() for v in ys)
    cols = []
    for i in range(n_y):
        e = torch.zeros(n_y)
        e[i] = 1.0
        cols.append(torch.cat([h.reshape(-1) for h in fr._hyy(gy, fr._unflatten(e))]).double())
    H = torch.stack(cols)
    H = 0.5 * (H + H.T)
    evals, evecs = torch.linalg.eigh(H)
    # c = H_yx Δx with Δx the generator's next preconditioned step (statistics not updated)
    dx = fr._direction("x", gx, update=False)
    delta_x = [args.lr * d for d in dx]
    c_parts = fr._hyx(gx, delta_x)
    c = torch.cat([t.reshape(-1) for t in c_parts]).double()
    coeff = evecs.T @ c
    small = evals.abs() < args.small
    own = args.lr * math.sqrt(n_y)
    rows = {}
    for lam in (0.0, 1e-8, 1e-6, 1e-4, 1e-2, 1.0):
        w = evals / (evals ** 2 + lam) if lam > 0 else 1.0 / evals
        ucoef = w * coeff
        total = float((ucoef ** 2).sum())
        rows[f"{lam:g}"] = {"u_norm": math.sqrt(total), "u_over_own_step": math.sqrt(total) / own,
                            "share_from_small": float((ucoef[small] ** 2).sum()) / total if total > 0 else 0.0}
    u_cg, info = fr.solve(gy, c_parts)
    u_cg = torch.cat([t.reshape(-1) for t in u_cg]).double()
    u_exact = evecs @ ((evals / (evals ** 2 + 1e-8)) * coeff)
    return {
        "n_y": n_y,
        "eigenvalues": {"min": float(evals[0]), "max": float(evals[-1]), "positive": int((evals > 0).sum()),
                        f"abs_below_{args.small:g}": int(small.sum()),
                        "quantiles": {q: float(torch.quantile(evals, q)) for q in (0.01, 0.1, 0.5, 0.9, 0.99)}},
        "c_norm": float(c.norm()), "c_share_on_small": float((coeff[small] ** 2).sum() / (coeff ** 2).sum()),
        "own_step_scale": own, "corrections": rows,
        "cg5_vs_exact_at_1e-8": {"relative_error": float((u_cg - u_exact).norm() / u_exact.norm()),
                                 "cg_norm": float(u_cg.norm()), "exact_norm": float(u_exact.norm())},
    }


if __name__ == "__main__":
    raise SystemExit(main())
