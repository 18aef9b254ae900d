"""`l2o noise`: train a task and measure the gradient noise scale B_simple along the way.

    l2o noise --task digits_mlp --steps 500 --every 25 --lr 0.1 --out noise_run/
    l2o noise --task mypackage.tasks:my_task --task-arg width=64 --method two_batch

Every ``--every`` steps (and at the start) B_simple = tr(Σ)/|G|² is measured on the training
examples (per-example gradients; see docs/methods/noise_scale.md), printed with its standard
error, and at the end written to OUT/noise.json and drawn in OUT/noise.png, with the batch-size
and learning-rate advice that McCandlish et al.'s and Smith & Le's models give for the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

OPTIMIZERS = ("sgd", "momentum", "adam")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "noise", help="measure the gradient noise scale B_simple along training, plot it, get batch-size advice",
        description="Train a task with a torch.optim optimizer and measure McCandlish et al.'s gradient noise "
                    "scale B_simple = tr(Sigma)/|G|^2 along training.")
    p.add_argument("--task", default="digits_mlp",
                   help="a task name (see 'l2o bench list') or a task of your own as package.module:name (an "
                        "l2o.tasks.Task whose batches are (inputs, targets), or a function returning one)")
    p.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument of the task (repeatable), e.g. --task-arg hidden=64")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the task's budget)")
    p.add_argument("--every", type=int, default=None, help="measure every this many steps (default: steps/20)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="torch.optim.SGD, SGD with momentum 0.9, or Adam (default sgd)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch size (default: the task's)")
    p.add_argument("--method", choices=("exact", "two_batch"), default="exact",
                   help="exact: per-example gradients; two_batch: McCandlish's estimator from two batch sizes")
    p.add_argument("--examples", type=int, default=2048,
                   help="training examples to measure on (default 2048, or all when fewer)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and batches")
    p.add_argument("--out", default="l2o-noise", help="output directory (noise.json, noise.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def measurement_data(task, examples: int, seed: int):
    """The examples B_simple is measured on: the task's training set when it has one
    (``x_train``/``y_train``), else examples drawn from its batches; at most ``examples``."""
    import torch

    if examples < 2:
        raise ValueError(f"--examples must be >= 2, got {examples}")
    if hasattr(task, "x_train") and hasattr(task, "y_train"):
        return task.x_train[:examples], task.y_train[:examples], int(task.x_train.shape[0])
    xs, ys, count = [], [], 0
    stream = task.batches(torch.Generator().manual_seed(seed + 1))
    for _ in range(10_000):
        batch = next(stream)
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(isinstance(t, torch.Tensor) and t.dim() > 0 for t in batch)):
            raise ValueError(f"task {task.name!r} does not yield (inputs, targets) batches of tensors; the noise scale "
                             "needs examples along the first dimension")
        xs.append(batch[0])
        ys.append(batch[1])
        count += int(batch[0].shape[0])
        if count >= examples:
            break
    return torch.cat(xs)[:examples], torch.cat(ys)[:examples], None


def _optimizer(name: str, lr: float):
    import torch

    if not lr > 0:
        raise ValueError(f"--lr must be positive, got {lr}")
    if name == "sgd":
        return lambda ps: torch.optim.SGD(ps, lr=lr)
    if name == "momentum":
        return lambda ps: torch.optim.SGD(ps, lr=lr, momentum=0.9)
    return lambda ps: torch.optim.Adam(ps, lr=lr)


def plot(rows: list[dict], batch_size: int | None, path: Path, title: str) -> None:
    """B_simple (with a ±1 standard-error band) and the training loss against the step."""
    import io
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from l2o.io import atomic_write_bytes

    steps = [r["step"] for r in rows]
    b = [r["b_simple"] if math.isfinite(r["b_simple"]) and r["b_simple"] > 0 else math.nan for r in rows]
    se = [r["b_simple_se"] if r["b_simple_se"] is not None and math.isfinite(r["b_simple_se"]) else 0.0 for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(steps, b, "o-", color="C0", label="B_simple")
    ax1.fill_between(steps, [max(v - s, v * 0.05) for v, s in zip(b, se)], [v + s for v, s in zip(b, se)],
                     color="C0", alpha=0.25, label="± 1 s.e.")
    if batch_size:
        ax1.axhline(batch_size, color="gray", ls="--", label=f"training batch size {batch_size}")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("B_simple = tr(Σ) / |G|²")
    ax1.set_title("gradient noise scale")
    ax1.legend(fontsize=8)
    ax2.plot(steps, [r["train_loss"] for r in rows], "o-", color="C1")
    ax2.set_yscale("log")
    ax2.set_xlabel("step")
    ax2.set_ylabel("training loss (measured examples)")
    ax2.set_title("loss")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _run(args) -> int:
    import json

    import torch

    import l2o.tasks
    from l2o.commands.meta import _parse_task_args
    from l2o.diagnostics import advise, task_noise_scale
    from l2o.io import atomic_write_text, jsonable
    from l2o.train import train

    torch.set_num_threads(1)
    task = l2o.tasks.get(args.task, **_parse_task_args(args.task_arg))
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        task.batch_size = args.batch_size
    steps = task.steps if args.steps is None else args.steps
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    every = args.every or max(1, steps // 20)
    if every < 1:
        raise ValueError(f"--every must be >= 1, got {every}")
    x, y, n_train = measurement_data(task, args.examples, args.seed)
    options = {} if args.method == "exact" else {"generator": torch.Generator().manual_seed(args.seed)}

    def measure(step: int, params) -> dict:
        p = {k: v.detach() for k, v in params.items()}
        result = task_noise_scale(task, p, x, y, method=args.method, **options)
        with torch.no_grad():
            loss = float(task.loss(p, (x, y)))
        row = {"step": step, "train_loss": loss, **result.as_dict()}
        line = (f"step {step:6d}  loss {loss:.4g}  B_simple {result.b_simple:.4g}"
                + (f" ± {result.b_simple_se:.2g}" if result.b_simple_se is not None else "")
                + f"  tr(Σ) {result.trace_cov:.4g}  |G|² {result.grad_sq_norm:.4g}")
        (bar.write if bar is not None else print)(line)
        return row

    from tqdm import tqdm

    bar = None if args.no_progress else tqdm(total=steps, desc=f"l2o noise {task.name}", unit="step", file=sys.stderr)
    print(f"l2o noise: {task.name}, {steps} steps of {args.optimizer} (lr {args.lr:g}, batch {task.batch_size}), "
          f"B_simple ({args.method}) on {x.shape[0]} training examples every {every} steps", file=sys.stderr)
    rows = [measure(0, task.init_params(torch.Generator().manual_seed(args.seed)))]

    def hook(step: int, params) -> None:
        if bar is not None:
            bar.update(1)
        if (step + 1) % every == 0 or step + 1 == steps:
            rows.append(measure(step + 1, params))

    try:
        run = train(task, _optimizer(args.optimizer, args.lr), steps=steps, seed=args.seed, params_hook=hook)
    finally:
        if bar is not None:
            bar.close()
    if run.diverged:
        print(f"the run diverged at step {run.steps_done}; the measurements before it are kept", file=sys.stderr)

    out = Path(args.out)
    report = {"command": "l2o noise " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["noise"] else None,
              "task": task.describe(), "optimizer": args.optimizer, "lr": args.lr, "batch_size": task.batch_size,
              "steps": steps, "seed": args.seed, "method": args.method, "examples": int(x.shape[0]),
              "diverged": run.diverged, "final_test": run.final_test, "measurements": rows}
    finite = [r["b_simple"] for r in rows[len(rows) // 2:] if r["b_simple"] > 0 and r["b_simple"] != float("inf")]
    if args.optimizer != "adam" and finite and task.batch_size and n_train and task.batch_size <= n_train:
        b_late = sorted(finite)[len(finite) // 2]
        advice = advise(b_late, args.lr, task.batch_size, n_train, momentum=0.9 if args.optimizer == "momentum" else 0.0)
        report["advice"] = {**advice.as_dict(), "from": "median B_simple over the second half of training"}
        print("advice (median B_simple over the second half of training):\n" + advice.text())
    atomic_write_text(out / "noise.json", json.dumps(jsonable(report), indent=1) + "\n")
    plot(rows, task.batch_size, out / "noise.png",
         f"{task.name}: {args.optimizer} lr {args.lr:g}, batch {task.batch_size}, B_simple ({args.method}) "
         f"on {x.shape[0]} examples")
    print(f"wrote {out / 'noise.json'} and {out / 'noise.png'}")
    return 0
