"""`l2o meta train` / `l2o meta eval`: meta-train a learned optimizer, and compare one with tuned Adam.

Examples::

    l2o meta train --optimizer mlp --estimator bptt --task general --steps 3000 --out runs/mlp
    l2o meta train --optimizer mlp --estimator pes --task digits --activations relu --steps 200 --out runs/pes
    l2o meta train ... --resume            # continue from runs/mlp/last.safetensors
    l2o meta eval --weights mlp-general --task digits_mlp --task-arg activation=relu --steps 100,1000 --seeds 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TASK_CHOICES = ("general", "digits", "classification", "regression", "quadratic")


def _pair(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(":")
    try:
        return int(lo), int(hi or lo)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH integers, got {text!r}") from exc


def _scale_range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(":")
    try:
        pair = float(lo), float(hi or lo)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH numbers, got {text!r}") from exc
    if not 0 < pair[0] <= pair[1] < float("inf"):
        raise argparse.ArgumentTypeError(f"expected 0 < LOW <= HIGH, got {text!r}")
    return pair


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc


def _words(text: str) -> tuple[str, ...]:
    return tuple(x for x in text.split(",") if x)


class _DefaultsHelp(argparse.HelpFormatter):
    """Help that shows each option's default, unless its text already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def register(subparsers) -> None:
    meta = subparsers.add_parser("meta", help="meta-train learned optimizers and evaluate them against tuned Adam")
    sub = meta.add_subparsers(dest="meta_command", required=True, metavar="SUBCOMMAND")

    train = sub.add_parser("train", help="meta-train a learned optimizer (batched; BPTT, ES or PES)",
                           formatter_class=_DefaultsHelp)
    train.add_argument("--optimizer", choices=("mlp", "lstm"), default=None,
                       help="rule kind (default: mlp, or the kind of --init)")
    train.add_argument("--init", default=None, metavar="WEIGHTS",
                       help="start from these weights (a weights file or shipped weights, e.g. mlp-general) instead "
                            "of a fresh rule: fine-tuning; the rule's architecture is theirs")
    train.add_argument("--estimator", choices=("bptt", "es", "pes"), default="bptt", help="meta-gradient estimator")
    train.add_argument("--task", choices=TASK_CHOICES, default=None,
                       help="task family: all data sets ('general') or one of them (default: general)")
    train.add_argument("--family", default=None, metavar="MODULE:NAME",
                       help="a task family of your own instead of --task and its options: an l2o.tasks.TaskFamily, or "
                            "a function returning one, importable as package.module:name (docs/methods/mlp_lopt.md)")
    train.add_argument("--datasets", type=_words, default=None,
                       help="with --task general: the problem types, e.g. digits,quadratic,lowdim "
                            "(default: digits, classification, regression, quadratic; opt-in: lowdim, a few "
                            "scalars at varied scales, illcond, ill-conditioned least squares, and consistent, least "
                            "squares with a minimum near 0)")
    train.add_argument("--activations", type=_words, default=None, help="e.g. relu,tanh (default: sigmoid,tanh,relu)")
    train.add_argument("--widths", type=_ints, default=None, help="hidden widths, e.g. 16,32,64 (the default)")
    train.add_argument("--depths", type=_ints, default=None, help="hidden layers, e.g. 1,2 (the default)")
    train.add_argument("--batch-sizes", type=_ints, default=None, help="optimizee minibatch sizes (default 32,64,128)")
    train.add_argument("--horizon", type=_pair, default=None,
                       help="episode length LOW:HIGH (log-uniform; default 100:1000)")
    train.add_argument("--param-scale", type=_scale_range, default=None, metavar="LOW:HIGH",
                       help="with --task general: train each parameter tensor phi of a problem whose network uses "
                            "s * phi, s log-uniform in LOW:HIGH (task augmentation: the step size a tensor needs "
                            "varies by HIGH/LOW; default: none)")
    train.add_argument("--unroll", type=int, default=20, help="truncation length (inner steps per meta-update)")
    train.add_argument("--curriculum", type=_pair, default=None, metavar="START:STEPS",
                       help="grow the truncation linearly from START to --unroll over STEPS meta-updates")
    train.add_argument("--steps", type=int, default=1000, help="meta-updates (outer steps)")
    train.add_argument("--batch", type=int, default=8, help="task instances advanced together")
    train.add_argument("--groups", type=int, default=4, help="episode groups in flight")
    train.add_argument("--meta-lr", type=float, default=3e-3, help="Adam learning rate of the meta-optimizer")
    train.add_argument("--meta-lr-decay", choices=("constant", "cosine"), default="constant",
                       help="cosine: decay the meta learning rate to 0 over --steps outer steps (a resumed run with "
                            "another --steps follows the new total; default constant)")
    train.add_argument("--clip", type=float, default=1.0, help="meta-gradient global-norm clip (0: none)")
    train.add_argument("--sigma", type=float, default=0.01, help="ES/PES perturbation scale")
    train.add_argument("--pairs", type=int, default=4, help="ES/PES antithetic pairs")
    train.add_argument("--hidden", type=int, default=None, help="rule width (mlp default 16, lstm default 20)")
    train.add_argument("--tensor-features", action="store_true",
                       help="mlp: also feed each tensor's log-RMS of g, sqrt(v) and p (the scale the normalization removes)")
    train.add_argument("--adam-ratios", action="store_true",
                       help="mlp: feed g/sqrt(v) and m/sqrt(v) bias-corrected like Adam's, not normalized per tensor")
    train.add_argument("--adapt", type=float, default=None,
                       help="meta-train under the per-tensor step-size adaptation of rate KAPPA (default: off, or the "
                            "rate --init's weights deploy with); the weights then deploy with it by default "
                            "(LearnedOptimizer(adapt=None))")
    train.add_argument("--checkpoint-every", type=int, default=50,
                       help="outer steps between checkpoints (OUT/last.safetensors; a kill loses at most these)")
    train.add_argument("--val-every", type=int, default=250,
                       help="outer steps between validations on fixed episodes, also run at the last step; the best "
                            "weights go to OUT/best_weights.safetensors (0: no validation)")
    train.add_argument("--val-steps", type=int, default=200, help="inner steps of each validation episode")
    train.add_argument("--seed", type=int, default=0, help="seeds the episodes and the ES/PES perturbations")
    train.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    train.add_argument("--device", default="cpu", help="where the rule and the optimizees run, e.g. cuda (default cpu); a GPU pays "
                       "off with a large --batch, e.g. 64 (docs/gpu.md)")
    train.add_argument("--out", required=True, help="output directory (checkpoints, weights.safetensors + card)")
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    train.add_argument("--force", action="store_true",
                       help="start a new run in an OUT that holds one, replacing its checkpoints and weights")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(func=_train)

    plot = sub.add_parser("plot", help="plot a meta-training run's meta-loss and validation (also while it runs)")
    plot.add_argument("run", metavar="OUT", help="the run's output directory (the --out of l2o meta train)")
    plot.add_argument("--out", default=None, help="the PNG to write (default: OUT/training.png)")
    plot.set_defaults(func=_plot)

    ev = sub.add_parser("eval", help="compare a learned optimizer with tuned Adam over seeds",
                        formatter_class=_DefaultsHelp)
    ev.add_argument("--weights", required=True, help="a weights file or the name of shipped weights (mlp-general)")
    ev.add_argument("--task", default="digits_mlp",
                    help="a task name from l2o.tasks (default digits_mlp), or one of your own as package.module:name "
                         "(an l2o.tasks.Task, or a function returning one, called with the --task-arg values)")
    ev.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="task constructor argument, e.g. activation=relu (repeatable)")
    ev.add_argument("--steps", type=_ints, default=(100,), help="budgets, e.g. 100,1000")
    ev.add_argument("--seeds", type=int, default=10, help="evaluation seeds 0..N-1")
    ev.add_argument("--adam-grid", default="1e-4,3e-4,1e-3,3e-3,1e-2,3e-2,1e-1",
                    help="Adam learning rates; one chosen per budget on training loss over tuning seeds")
    ev.add_argument("--tune-seeds", type=int, default=3, help="tuning seeds (1000.., disjoint from evaluation seeds)")
    ev.add_argument("--adapt", type=float, default=None,
                    help="the learned optimizer's step-size adaptation rate, LearnedOptimizer(adapt=...) (default: the rate "
                         "the weights were meta-trained under: 0.1 for mlp-general, 0 for the other shipped ones)")
    ev.add_argument("--json", default=None, help="also write the results to this JSON file")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("--plot", default=None, metavar="PNG",
                    help="also draw the training curves of both optimizers, one panel per budget, to this PNG")
    ev.set_defaults(func=_eval)


def _parse_task_args(items: list[str]) -> dict:
    kwargs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--task-arg must be KEY=VALUE, got {item!r}")
        for cast in (int, float):
            try:
                kwargs[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            kwargs[key] = {"none": None, "true": True, "false": False}.get(value.lower(), value)
    return kwargs


def _device(name: str):
    """``torch.device(name)``, refused with the reason when this machine does not have it."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: this PyTorch sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name!r}: meta-training runs on cpu or cuda")
    return device


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _train(args) -> int:
    import json
    import time

    import torch

    from l2o.meta.trainer import MetaConfig, MetaTrainer

    torch.set_num_threads(args.threads)
    device = _device(args.device)
    from l2o.meta import distributed

    rank, world = distributed.init_from_env(device) if distributed.launched() else (0, 1)
    if distributed.launched() and device.type == "cuda" and device.index is None:  # one GPU per process
        device = torch.device("cuda", torch.cuda.current_device())
    if distributed.launched():  # torchrun: rank 0 alone checks (and with --force clears) --out
        distributed.on_root(lambda: _check_out(args))
    else:
        _check_out(args)
    family = _family(args)
    rule = _initial_rule(args) if args.init is not None else _new_rule(args)
    rule.to(device)
    if args.adapt is None:  # fine-tuning keeps the adaptation the given weights were trained under
        from l2o.learned.adaptation import default_adapt

        args.adapt = default_adapt(rule) if args.init is not None else 0.0
    start, steps = args.curriculum if args.curriculum else (None, 0)
    config = MetaConfig(estimator=args.estimator, outer_steps=args.steps, batch_size=args.batch, groups=args.groups,
                        unroll=args.unroll, curriculum_start=start, curriculum_steps=steps, meta_lr=args.meta_lr,
                        meta_lr_decay=args.meta_lr_decay, clip=args.clip or None, sigma=args.sigma, pairs=args.pairs,
                        checkpoint_every=args.checkpoint_every, val_every=args.val_every, val_episodes=args.groups,
                        val_steps=args.val_steps, seed=args.seed, adapt=args.adapt)
    if args.val_every > args.steps:
        print(f"warning: --val-every {args.val_every} is above --steps {args.steps}: validation runs only at the last "
              f"step, so the best weights are the last ones", file=sys.stderr)
    if distributed.launched():
        trainer = distributed.DistributedMetaTrainer(rule, family, config, directory=args.out)
    else:
        trainer = MetaTrainer(rule, family, config, directory=args.out)
    wall = time.time()
    summary = trainer.train(resume=args.resume, progress_bar=not args.no_progress and rank == 0)
    wall = time.time() - wall
    if rank != 0:  # rank 0 alone writes the weights, the figure and the summary
        return 0
    described = family.describe() if hasattr(family, "describe") else {"name": getattr(family, "name", None)}
    if args.family is not None:
        described = {**described, "path": args.family}
    training = {"family": described, "device": _device_name(device),
                "command": ("l2o " + " ".join(sys.argv[1:])) if "meta" in sys.argv[1:2] else None}
    if args.init is not None:
        training["init"] = args.init
    paths = trainer.export({"training": training}, title=_run_title(args.out))
    print(f"final weights: {paths['weights']}")
    if "best_weights" in paths:
        print(f"best-on-validation weights: {paths['best_weights']}")
    if "plot" in paths:
        print(f"plot: {paths['plot']}")
    best = summary.best_val if summary.val_history and summary.best_val < float("inf") else None
    print(json.dumps({"outer_steps": summary.outer_steps, "inner_steps": summary.inner_steps,
                      "seconds": round(summary.seconds, 1), "cpu_seconds": round(summary.cpu_seconds, 1),
                      "wall_seconds": round(wall, 1),
                      "inner_steps_per_second": round(summary.inner_steps_per_second, 1),
                      "rollbacks": summary.rollbacks, "best_val": best,  # null: no validation ran
                      "world_size": world}))
    return 0


#: ``--optimizer`` kind -> {flag: constructor argument} of the rule options it takes
RULE_OPTIONS = {"mlp": {"hidden": "hidden", "tensor_features": "tensor_features", "adam_ratios": "adam_ratios"},
                "lstm": {"hidden": "hidden_size"}}


def _new_rule(args):
    """A fresh rule of ``--optimizer``'s kind from the ``l2o.learned.RULES`` registry, with the options
    given (an option another kind takes is refused rather than ignored)."""
    from l2o.learned import RULES

    kind = args.optimizer or "mlp"
    options = RULE_OPTIONS[kind]
    for flag in ("tensor_features", "adam_ratios"):
        if getattr(args, flag) and flag not in options:
            raise ValueError(f"--{flag.replace('_', '-')} applies to --optimizer mlp only")
    kwargs = {options[flag]: getattr(args, flag) for flag in options if getattr(args, flag) not in (None, False)}
    return RULES.get(kind)(**kwargs)


FAMILY_FLAGS = ("task", "datasets", "activations", "widths", "depths", "batch_sizes", "horizon", "param_scale")


def _family(args):
    """The task family: ``--family``'s, or the built-in family shaped by ``--task`` and its options."""
    from l2o.tasks.base import TaskFamily
    from l2o.tasks.mlp_problems import DATASETS, MLPProblemFamily

    given = {flag: getattr(args, flag) for flag in FAMILY_FLAGS if getattr(args, flag) is not None}
    if args.family is not None:
        if given:
            flags = ", ".join("--" + flag.replace("_", "-") for flag in given)
            raise ValueError(f"{flags}: --family {args.family} gives the tasks")
        from l2o._registry import import_instance

        return import_instance(args.family, "family", TaskFamily, "l2o.tasks.TaskFamily")
    task = given.pop("task", "general")
    for flag in ("datasets", "param_scale"):
        if flag in given and task != "general":
            raise ValueError(f"--{flag.replace('_', '-')} applies to --task general only")
    datasets = given.pop("datasets", DATASETS) if task == "general" else (task,)
    return MLPProblemFamily(datasets=datasets, **given)


def _initial_rule(args):
    """The rule of ``--init``: its weights and architecture (flags that would change the
    architecture are refused rather than ignored)."""
    from l2o.learned.weights import load_weights

    given = [flag for flag, value in (("--hidden", args.hidden), ("--tensor-features", args.tensor_features),
                                      ("--adam-ratios", args.adam_ratios)) if value]
    if given:
        raise ValueError(f"{', '.join(given)}: the rule's architecture comes from --init {args.init}")
    rule = load_weights(args.init, "--init")
    if args.optimizer is not None and args.optimizer != rule.kind:
        raise ValueError(f"--optimizer {args.optimizer}, but --init {args.init} holds a {rule.kind} rule")
    return rule


#: what a run leaves in its --out (``--force`` removes them before a new run)
RUN_FILES = ("last.safetensors", "best.safetensors", "weights.safetensors", "weights.json", "best_weights.safetensors",
             "best_weights.json", "history.jsonl", "training.png")


def _check_out(args) -> None:
    """``--out`` must be a directory that holds no run, or one to ``--resume`` (or ``--force`` over)."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a directory")
    if args.resume and args.force:
        raise ValueError("--resume continues the run in --out and --force replaces it: give one of them")
    if (out / "last.safetensors").is_file() and not args.resume:
        if not args.force:
            raise ValueError(f"--out {args.out} holds a run already: continue it with --resume, replace it with "
                             f"--force, or give another --out")
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)


def _run_title(out: str) -> str:
    return f"l2o meta train --out {out}"


def _plot(args) -> int:
    from l2o.meta.plot import plot_history

    run = Path(args.run)
    print(f"plot: {plot_history(run / 'history.jsonl', args.out or run / 'training.png', _run_title(args.run))}")
    return 0


def _eval(args) -> int:
    import json

    from l2o.learned.adaptation import check_adapt
    from l2o.learned.weights import load_weights
    from l2o.meta.evaluate import compare_with_adam, format_table

    rule = load_weights(args.weights)
    kwargs = _parse_task_args(args.task_arg)
    grid = [float(x) for x in args.adam_grid.split(",") if x]
    if not grid:
        raise ValueError(f"--adam-grid must list at least one learning rate, got {args.adam_grid!r}")
    if args.adapt is not None:
        check_adapt(args.adapt, "--adapt")
    for flag, path, what in (("--json", args.json, "JSON file"), ("--plot", args.plot, "PNG file")):
        if path is not None and Path(path).is_dir():
            raise ValueError(f"{flag} {path} is a directory; give the {what} to write")
    results = compare_with_adam(rule, args.task, kwargs, budgets=list(args.steps), seeds=args.seeds, adam_grid=grid,
                                tune_seeds=args.tune_seeds, adapt=args.adapt, progress=not args.no_progress)
    print(format_table(results))
    if args.json:
        from l2o.io import atomic_write_text, jsonable

        atomic_write_text(args.json, json.dumps(jsonable(results), indent=2) + "\n")
    if args.plot:
        from l2o.meta.plot import plot_comparison

        print(f"plot: {plot_comparison(results, args.plot)}")
    return 0
