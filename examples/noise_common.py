"""Shared pieces of the noise-scale experiments (examples/noise_*.py): digits MLPs in the standard
or NTK parameterization trained with plain SGD on reshuffled epochs, and small helpers.

Not a script: imported by noise_smith_le.py, noise_mccandlish.py and noise_park.py.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import torch

from l2o.data.digits import load_digits_split
from l2o.io import atomic_write_text, jsonable

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "methods" / "figures"


def digits(n_train: int | None = None, data_seed: int = 0):
    """Digits split ``data_seed`` (1348 training, 449 test examples); the first ``n_train`` training
    examples of a fixed permutation when ``n_train`` is given (a smaller training set)."""
    x, y, xt, yt = load_digits_split(seed=data_seed)
    if n_train is not None:
        if not 2 <= n_train <= x.shape[0]:
            raise ValueError(f"n_train must be in [2, {x.shape[0]}], got {n_train}")
        keep = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1000 + data_seed))[:n_train]
        x, y = x[keep], y[keep]
    return x, y, xt, yt


class MLP:
    """A functional MLP 64 -> width (x depth) -> 10, ReLU.

    ``parameterization="standard"``: weights drawn like ``nn.Linear`` (U(±1/√fan_in)), used as they
    are. ``"ntk"``: unit-variance Gaussian weights multiplied by ``sigma_w/√fan_in`` in the forward
    pass, biases multiplied by ``sigma_b`` (Park et al.'s NTK parameterization)."""

    def __init__(self, width: int, depth: int = 1, parameterization: str = "standard", sigma_w: float = 2.0**0.5,
                 sigma_b: float = 0.1):
        self.sizes = [64] + [width] * depth + [10]
        self.parameterization, self.sigma_w, self.sigma_b = parameterization, sigma_w, sigma_b

    def init(self, generator: torch.Generator) -> list[torch.Tensor]:
        params = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            if self.parameterization == "ntk":
                w = torch.randn(fan_out, fan_in, generator=generator)
                b = torch.randn(fan_out, generator=generator)
            else:
                bound = 1.0 / math.sqrt(fan_in)
                w = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
                b = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
            params += [w.requires_grad_(True), b.requires_grad_(True)]
        return params

    def forward(self, params, x: torch.Tensor) -> torch.Tensor:
        layers = len(self.sizes) - 1
        for i in range(layers):
            w, b = params[2 * i], params[2 * i + 1]
            if self.parameterization == "ntk":
                x = x @ w.t() * (self.sigma_w / math.sqrt(w.shape[1])) + b * self.sigma_b
            else:
                x = x @ w.t() + b
            if i < layers - 1:
                x = torch.relu(x)
        return x

    def loss(self, params, x, y):
        return torch.nn.functional.cross_entropy(self.forward(params, x), y)

    def accuracy(self, params, x, y) -> float:
        with torch.no_grad():
            return float((self.forward(params, x).argmax(-1) == y).float().mean())


def train_sgd(model: MLP, data, lr: float, batch_size: int, *, epochs: float | None = None, steps: int | None = None,
              seed: int = 0, momentum: float = 0.0, late_fraction: float = 0.2, evals: int = 20,
              target_loss: float | None = None, max_steps: int | None = None, hook=None) -> dict:
    """Plain SGD (``torch.optim.SGD``) on reshuffled epochs (batches without replacement, the last
    partial batch dropped), for ``epochs`` or ``steps``, or until the full training loss reaches
    ``target_loss`` (checked after every step up to 50, then every 2% of the steps taken, so the
    step count is resolved to 2%; at most ``max_steps``). ``hook(step, params)``, if given, is
    called before the first step and after every check (or every 2% with a fixed budget).

    Returns the final and late-time test accuracy (the mean over the evaluations in the last
    ``late_fraction`` of training), the final training loss, steps taken and whether it diverged.
    """
    x, y, xt, yt = data
    n = x.shape[0]
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
    per_epoch = n // batch_size
    if target_loss is None:
        total = int(steps) if steps is not None else max(1, int(round(epochs * per_epoch)))
    else:
        total = int(max_steps)
    g = torch.Generator().manual_seed(seed)
    params = model.init(g)
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    eval_at = set(int(round(total * (k + 1) / evals)) for k in range(evals)) if target_loss is None else set()
    late_from = total * (1 - late_fraction)
    late, order, pos = [], None, per_epoch
    step, reached, next_check = 0, None, 1
    if hook is not None:
        hook(0, params)
    while step < total:
        if pos >= per_epoch:
            order, pos = torch.randperm(n, generator=g), 0
        idx = order[pos * batch_size:(pos + 1) * batch_size]
        pos += 1
        opt.zero_grad(set_to_none=True)
        loss = model.loss(params, x[idx], y[idx])
        loss.backward()
        opt.step()
        step += 1
        if not math.isfinite(float(loss.detach())):
            return {"diverged": True, "steps": step, "test_accuracy": None, "late_test_accuracy": None,
                    "train_loss": None, "reached_at": None}
        if step in eval_at and step >= late_from:
            late.append(model.accuracy(params, xt, yt))
        if step >= next_check:
            next_check = step + max(1, step // 50)
            if hook is not None:
                hook(step, params)
            if target_loss is not None:
                with torch.no_grad():
                    full = float(model.loss(params, x, y))
                if full <= target_loss:
                    reached = step
                    break
    with torch.no_grad():
        train_loss = float(model.loss(params, x, y))
    if not math.isfinite(train_loss):
        return {"diverged": True, "steps": step, "test_accuracy": None, "late_test_accuracy": None,
                "train_loss": None, "reached_at": None}
    acc = model.accuracy(params, xt, yt)
    return {"diverged": False, "steps": step, "test_accuracy": acc,
            "late_test_accuracy": statistics.mean(late) if late else acc, "train_loss": train_loss,
            "reached_at": reached, "params": params}


def cpu_flags() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags")[1].split("\n")[0]
    except (OSError, IndexError):
        return "unknown"
    return ",".join(f for f in ("avx512f", "avx2") if f" {f}" in flags) or "neither avx512f nor avx2"


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(jsonable(data), indent=1) + "\n")


def save_figure(fig, path: Path) -> None:
    """The project's figure saver (nothing cut), at the examples' resolution."""
    from l2o.plotting import save_figure as save

    save(fig, path, dpi=110)


def example_args(doc: str, name: str, seeds: int | None, quick_help: str, argv=None, plot=None):
    """Parse the experiments' shared flags (--seeds unless ``seeds`` is None, --quick, --out,
    --replot, --no-progress).

    Returns the arguments, or None once ``--replot`` has redrawn OUT.png from OUT.json with ``plot``.
    """
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if seeds is not None:
        parser.add_argument("--seeds", type=int, default=seeds, help=f"seeds per setting (default {seeds})")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, default=FIGURES / name, help="output prefix (.json, .png)")
    parser.add_argument("--replot", action="store_true", help="redraw the figure from OUT.json only")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.replot:
        plot(json.loads(args.out.with_suffix(".json").read_text()), args.out.with_suffix(".png"))
        return None
    if seeds is not None and args.seeds < 1:
        parser.error("--seeds must be >= 1")
    torch.set_num_threads(1)
    return args


def write_results(results: dict, lines: list[str], out: Path, plot) -> None:
    """Print the table, then write OUT.json (with the table) and OUT.png."""
    results["table"] = lines
    print("\n".join(lines))
    write_json(out.with_suffix(".json"), results)
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')} ({results['seconds']:.0f} s)")


def argmax_key(table: dict, key=lambda v: v) -> object:
    """The key of the largest value (ties: the first)."""
    return max(table, key=lambda k: key(table[k]))
