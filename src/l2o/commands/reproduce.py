"""`l2o reproduce <paper>`: re-run a paper's main experiment and write a report directory.

``l2o reproduce l2l`` meta-trains the LSTM optimizer of "Learning to learn by gradient descent
by gradient descent" and compares it with tuned SGD, NAG, RMSprop and Adam (see
:mod:`l2o.experiments.l2l`).

Every other experiment is a module of :mod:`l2o.experiments` listed in :data:`EXPERIMENTS` that
exposes ``reproduce(out_dir, *, quick, seeds, resume, progress, command) -> dict`` returning the
paths it wrote: ``"report"`` (report.md), ``"json"`` (results.json) and ``"plots"`` (PNGs).
"""

from __future__ import annotations

import argparse
import importlib

#: name -> (module, what it reproduces). Imported only when that experiment runs.
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "l2l": ("l2o.experiments.l2l", "Andrychowicz et al. 2016, the LSTM optimizer"),
    "reversible": ("l2o.experiments.reversible", "Maclaurin et al. 2015, reversible-learning hypergradients (§4.1)"),
    "imaml": ("l2o.experiments.imaml", "Rajeswaran et al. 2019, implicit MAML vs MAML and first-order MAML"),
    "ftr": ("l2o.experiments.ftr", "Wang, Zhang & Ba 2020, Follow-the-Ridge for minimax"),
    "dore": ("l2o.experiments.dore", "Liu, Li, Tang & Yan 2019, DORE double residual compression vs QSGD, MEM-SGD, DIANA, DoubleSqueeze"),
}
#: flags that only ``l2l`` takes (its shipped weights and settings)
L2L_ONLY = ("no_train", "weights", "quadratic_weights", "settings", "meta_steps")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce",
        help="re-run a paper's main experiment and write a report",
        description="Re-run a paper's main experiment (meta-training, tuned baselines, report).",
    )
    p.add_argument("experiment", choices=tuple(EXPERIMENTS),
                   help="; ".join(f"{name}: {about}" for name, (_, about) in EXPERIMENTS.items()))
    p.add_argument("--out", default=None, help="report directory (default: l2o-report/<experiment>)")
    p.add_argument("--quick", action="store_true", help="a smoke test of about a minute (fewer seeds, shorter runs)")
    p.add_argument("--seeds", type=int, default=None,
                   help="evaluation seeds per setting (each experiment's default; l2l: 10, --quick: 3)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT (its checkpoints)")
    p.add_argument("--no-train", action="store_true",
                   help="l2l: evaluate the shipped weights (l2l-digits, l2l-quadratic) instead of meta-training")
    p.add_argument("--weights", default=None, help="l2l: evaluate this digits weights file instead of meta-training")
    p.add_argument("--quadratic-weights", default=None, help="l2l: evaluate this quadratic weights file instead of meta-training")
    p.add_argument("--settings", default=None,
                   help="l2l: comma-separated subset of: train,steps200,hidden40,layers2,relu,quadratic")
    p.add_argument("--meta-steps", type=int, default=None, help="l2l: outer steps of digits meta-training (default 2000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import torch

    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    # Same numbers every time: one thread (float sums in a fixed order) and fixed seeds.
    torch.set_num_threads(1)
    out = args.out or f"l2o-report/{args.experiment}"
    if args.experiment == "l2l":
        paths = _run_l2l(args, out)
    else:
        given = [flag for flag in L2L_ONLY if getattr(args, flag) not in (None, False)]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} applies to 'l2o reproduce l2l' only")
        module = importlib.import_module(EXPERIMENTS[args.experiment][0])
        paths = module.reproduce(out, quick=args.quick, seeds=args.seeds, resume=args.resume,
                                 progress=not args.no_progress, command=_command_line(args))
    print(paths["report"].read_text())
    print(f"report:  {paths['report']}")
    print(f"results: {paths['json']}")
    for plot in paths["plots"]:
        print(f"plot:    {plot}")
    return 0


def _run_l2l(args: argparse.Namespace, out: str) -> dict:
    from dataclasses import replace

    from l2o.experiments import l2l
    from l2o.learned.weights import PRETRAINED

    config = l2l.L2LConfig.quick() if args.quick else l2l.L2LConfig()
    if args.seeds is not None:
        config = replace(config, seeds=args.seeds)
    if args.settings:
        config = replace(config, settings=tuple(s.strip() for s in args.settings.split(",") if s.strip()))
    if args.meta_steps is not None:
        if args.meta_steps < 1:
            raise ValueError(f"--meta-steps must be >= 1, got {args.meta_steps}")
        config = replace(config, digits_outer_steps=args.meta_steps)
    digits_weights, quadratic_weights = args.weights, args.quadratic_weights
    if args.no_train:
        kinds = {l2l.SETTINGS[s][1] for s in config.settings}
        if "digits" in kinds:
            digits_weights = digits_weights or PRETRAINED.path("l2l-digits")
        if "quadratic" in kinds:
            quadratic_weights = quadratic_weights or PRETRAINED.path("l2l-quadratic")
    return l2l.run(out, config, resume=args.resume, digits_weights=digits_weights,
                   quadratic_weights=quadratic_weights, progress=not args.no_progress, command=_command_line(args))


def _command_line(args: argparse.Namespace) -> str:
    """The command as a user would type it (recorded in the report)."""
    import shlex

    parts = ["l2o", "reproduce", args.experiment]
    for flag in ("quick", "resume", "no_train", "no_progress"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    for flag in ("out", "seeds", "weights", "quadratic_weights", "settings", "meta_steps"):
        value = getattr(args, flag)
        if value is not None:
            parts += ["--" + flag.replace("_", "-"), str(value)]
    return " ".join(shlex.quote(p) for p in parts)
