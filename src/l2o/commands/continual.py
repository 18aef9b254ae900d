"""`l2o continual run`: methods trained on a stream of tasks in order, tuned on validation splits.

    l2o continual run --scenario permuted-digits --methods sgd,ogd-gtl,ogd-ave,ogd-all,hat,ewc,agem,joint \
        --tasks 5 --seeds 3 --out DIR [--no-progress]

Writes DIR/results.json (strict JSON), DIR/report.md, DIR/continual_accuracy.png and
DIR/continual_heatmaps.png; every finished run is kept in DIR/runs/, so running the same command
again resumes an interrupted experiment.
"""

from __future__ import annotations

import shlex


def register(subparsers) -> None:
    p = subparsers.add_parser("continual", help="continual learning: OGD, HAT, EWC, A-GEM, joint on task streams",
                              description="Continual learning on seeded task streams (see docs/methods/ogd.md, hat.md).")
    sub = p.add_subparsers(dest="continual_command", required=True, metavar="SUBCOMMAND")
    r = sub.add_parser("run", help="train methods on a task stream, tune them on validation splits, report",
                       description="Tune every method's hyperparameters on tuning seeds' validation splits, then "
                                   "train it on the evaluation seeds and report test accuracy matrices.")
    r.add_argument("--scenario", default="permuted-digits",
                   help="permuted-digits (default), rotated-digits, split-digits or permuted-mnist (needs --mnist-dir "
                        "or $L2O_MNIST_DIR)")
    r.add_argument("--methods", default="sgd,ogd-gtl,ogd-ave,ogd-all,hat,ewc,agem,joint",
                   help="comma-separated: sgd, ogd-gtl, ogd-ave, ogd-all, hat, ewc, agem, joint (default: all)")
    r.add_argument("--tasks", type=int, default=5, help="number of tasks (default 5)")
    r.add_argument("--seeds", type=int, default=3, help="evaluation seeds 0..N-1 (default 3)")
    r.add_argument("--tune-seeds", type=int, default=1, help="tuning seeds 1000.. (default 1)")
    r.add_argument("--epochs", type=int, default=10, help="epochs per task (default 10)")
    r.add_argument("--batch-size", type=int, default=32, help="minibatch size (default 32)")
    r.add_argument("--memory", type=int, default=20, help="stored examples per task for OGD and A-GEM (default 20)")
    r.add_argument("--lr", type=float, default=None,
                   help="use this learning rate for every method instead of tuning it (EWC's lambda is still tuned)")
    r.add_argument("--lr-grid", default=None, help="learning-rate grid, comma-separated (default 0.01,0.03,0.1,0.3)")
    r.add_argument("--ewc-lambda-grid", default=None, help="EWC's lambda grid, comma-separated (default 10,100,1000)")
    r.add_argument("--rotation-step", type=float, default=30.0, help="degrees between rotated-digits tasks (default 30)")
    r.add_argument("--mnist-dir", default=None, help="directory holding MNIST's IDX files (permuted-mnist)")
    r.add_argument("--out", default="l2o-continual", help="output directory (default l2o-continual)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_run)


def _floats(text: str | None, what: str):
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _command(args) -> str:
    """The command line with every setting spelled out (what report.md records)."""
    parts = ["l2o", "continual", "run", "--scenario", args.scenario, "--methods", args.methods,
             "--tasks", str(args.tasks), "--seeds", str(args.seeds), "--tune-seeds", str(args.tune_seeds),
             "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--memory", str(args.memory)]
    for flag, value in (("--lr", args.lr), ("--lr-grid", args.lr_grid),
                        ("--ewc-lambda-grid", args.ewc_lambda_grid), ("--mnist-dir", args.mnist_dir)):
        if value is not None:
            parts += [flag, str(value)]
    if args.scenario == "rotated-digits":
        parts += ["--rotation-step", f"{args.rotation_step:g}"]
    parts += ["--out", args.out]
    return " ".join(shlex.quote(p) for p in parts)


def _run(args) -> int:
    import torch

    from l2o.continual.runner import parse_methods, run_experiment
    from l2o.continual.scenarios import SCENARIOS

    torch.set_num_threads(1)
    if args.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {args.scenario!r}: expected one of {', '.join(SCENARIOS)}")
    res = run_experiment(args.out, scenario=args.scenario, methods=parse_methods(args.methods), tasks=args.tasks,
                         seeds=args.seeds, tune_seeds=args.tune_seeds, epochs=args.epochs,
                         batch_size=args.batch_size, memory=args.memory, lr=args.lr,
                         lr_grid=_floats(args.lr_grid, "--lr-grid"),
                         ewc_lambda_grid=_floats(args.ewc_lambda_grid, "--ewc-lambda-grid"), rotation_step=args.rotation_step,
                         mnist_dir=args.mnist_dir, progress=not args.no_progress,
                         command=_command(args))
    print(open(res["paths"]["report"], encoding="utf-8").read())
    for k, v in res["paths"].items():
        print(f"{k}: {v}")
    print(f"results: {args.out}/results.json")
    return 0
