"""Follow-the-Ridge's step time over GDA's on the 1-D mixture GAN, as a function of CG iterations.

GDA's step is one forward and one backward pass. FR's step (``l2o.minimax.FollowTheRidge``,
fixed damping) is one forward pass and a backward pass that keeps its graph (``create_graph``),
one Hessian-vector product for c = H_yx Δx, one for the normal equations' right-hand side H_yy c,
and two per CG iteration (H_yy² v): 3 + 2k backward-sized passes for k iterations, against the
floor of 2 + 2k that the method needs at least (gradient, H_yx Δx, and two products per
iteration). The JSON records, per k, the median step times (interleaved rounds, so that load
from other processes affects all alike), the ratio FR/GDA, the floor 2 + 2k, FR's own count
3 + 2k, and the ratio of FR's time to the floor in GDA steps. With ``adaptive_damping`` (the
paper's GAN setting) a step adds one product and one more forward and backward pass.

All timings single-threaded (``torch.set_num_threads(1)``), float32, on the CPU, whose vector
extensions are recorded beside the numbers.

Usage::

    python benchmarks/ftr_step_time.py                    # writes benchmarks/results/ftr_step_time.json
    python benchmarks/ftr_step_time.py --rounds 3 --steps 3 --out /tmp/quick.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from l2o.io import atomic_write_text, jsonable
from _machine import cpu_info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cg-iters", default="1,2,5,10,20", help="comma-separated CG iteration counts")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per optimizer per round")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units of both MLPs (paper: 64)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--out", default="benchmarks/results/ftr_step_time.json")
    args = parser.parse_args(argv)
    iters = [int(k) for k in args.cg_iters.split(",") if k.strip()]
    if not iters or min(iters) < 1:
        parser.error("--cg-iters must list whole numbers >= 1")

    from l2o.minimax import GDA, FollowTheRidge, gan_1d

    torch.set_num_threads(1)
    game = gan_1d(batch_size=args.batch_size, g_hidden=args.hidden, d_hidden=args.hidden)
    gen = torch.Generator().manual_seed(0)
    x0, y0 = game.init_params(gen)
    batch = next(game.batches(gen))

    def make(kind: str, k: int = 0, adaptive: bool = False):
        x = [v.clone().requires_grad_(True) for v in x0.values()]
        y = [v.clone().requires_grad_(True) for v in y0.values()]
        xd, yd = dict(zip(x0, x)), dict(zip(y0, y))
        if kind == "gda":
            opt = GDA(x, y, lr_x=2e-4, lr_y=2e-4, precondition="rmsprop")
        else:
            opt = FollowTheRidge(x, y, lr_x=2e-4, lr_y=2e-4, precondition="rmsprop", cg_iters=k, damping=1.0,
                                 adaptive_damping=adaptive)
        return opt, (lambda: game.loss(xd, yd, batch))

    configs = {"gda": make("gda")}
    for k in iters:
        configs[f"ftr k={k}"] = make("ftr", k)
    configs[f"ftr k=5 adaptive"] = make("ftr", 5, adaptive=True)
    for opt, closure in configs.values():  # warm up
        opt.step(closure)
    times: dict[str, list[float]] = {name: [] for name in configs}
    passes: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, (opt, closure) in configs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                opt.step(closure)
            times[name].append((time.perf_counter() - start) / args.steps)
            passes[name] = opt.last_step["backward_passes"]
    gda = statistics.median(times["gda"])
    rows = []
    for k in iters:
        name = f"ftr k={k}"
        t = statistics.median(times[name])
        rows.append({"cg_iters": k, "ftr_step_s": t, "gda_step_s": gda, "ratio": t / gda, "floor": 2 + 2 * k,
                     "backward_passes": passes[name], "ratio_over_floor": (t / gda) / (2 + 2 * k)})
    t_ad = statistics.median(times["ftr k=5 adaptive"])
    result = {
        "what": "FollowTheRidge step time / GDA step time (both RMSprop-preconditioned), 1-D MoG GAN",
        "command": "python benchmarks/ftr_step_time.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "game": game.describe(), "rounds": args.rounds, "steps_per_round": args.steps,
        "threads": 1, "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_info(),
        "gda_step_s": gda, "rows": rows,
        "adaptive_k5": {"ftr_step_s": t_ad, "ratio": t_ad / gda, "backward_passes": passes["ftr k=5 adaptive"]},
    }
    atomic_write_text(args.out, json.dumps(jsonable(result), indent=2) + "\n")
    for r in rows:
        print(f"k={r['cg_iters']:3d}  FR/GDA = {r['ratio']:6.2f}  floor 2+2k = {r['floor']:3d}  "
              f"backward passes {r['backward_passes']:3d}  ratio/floor = {r['ratio_over_floor']:.2f}")
    print(f"k=5 adaptive damping: FR/GDA = {t_ad / gda:.2f} ({passes['ftr k=5 adaptive']} backward passes)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
