"""Step time of every l2o.optim optimizer, as ratios to torch.optim.Adam measured in the same run.

All optimizers step the same 50 float32 tensors (about 2.7 million parameters) with fixed
gradients. Each timing runs single-threaded (``torch.set_num_threads(1)``); the optimizers are
timed in interleaved rounds (every optimizer once per round) so that load from other processes
affects them alike, and the median over rounds is kept. Ratios are to ``torch.optim.Adam()``
with default settings (on the CPU that is its per-tensor loop) and to ``torch.optim.Adam(fused=True)``
(a single pass over memory: the practical limit).

Rows marked "compiled" time ``torch.compile(optimizer.step)`` with default settings (their
``warmup_s`` in the JSON includes compiling). Two rows are not optimizers but the floor of
SGLD's step: filling one buffer per tensor with standard normal numbers from a ``torch.Generator`` (``normal_``, what SGLD draws every step), and
filling int32 buffers of the same sizes with raw random bits (``random_``, the Mersenne-twister
output that ``normal_`` transforms).

The JSON records the CPU (model name and the vector extensions its flags list: avx512f, avx2,
...) beside the numbers: compiled kernels (``SGLD(noise="philox")``, the "compiled" rows) are
vectorised to the widest extension the CPU has, so their ratios differ between CPUs.

Usage::

    python benchmarks/step_time.py                 # writes benchmarks/results/step_time.json
    python benchmarks/step_time.py --rounds 5 --steps 5 --out /tmp/quick.json
    python benchmarks/step_time.py --only "adam (default)" --only "sgld (default)" --out /tmp/sgld.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from _machine import cpu_info

import l2o.optim
from l2o.io import atomic_write_text

# name -> (factory kind, keyword arguments). "torch:" entries are torch.optim baselines.
CONFIGS: list[tuple[str, str, dict]] = [
    ("adam (default)", "torch:Adam", {}),
    ("adam foreach", "torch:Adam", dict(foreach=True)),
    ("adam fused", "torch:Adam", dict(fused=True)),
    ("hadam order=4 (default)", "hadam", {}),
    ("hadam order=4 loop", "hadam", dict(foreach=False)),
    ("hadam order=4 foreach", "hadam", dict(foreach=True)),
    ("hadam order=8 loop (root form)", "hadam", dict(order=8, foreach=False)),
    ("hadam order=8 foreach", "hadam", dict(order=8, foreach=True)),
    ("hadam order=2 loop", "hadam", dict(order=2, foreach=False)),
    ("hadam order=2 foreach", "hadam", dict(order=2, foreach=True)),
    ("sgld (default)", "sgld", {}),
    ("sgld loop", "sgld", dict(foreach=False)),
    ("sgld foreach", "sgld", dict(foreach=True)),
    ("sgld noise=philox (compiled inside)", "sgld", dict(noise="philox")),
    ("sgdhd (default)", "sgdhd", {}),
    ("sgdhd loop", "sgdhd", dict(foreach=False)),
    ("sgdhd foreach", "sgdhd", dict(foreach=True)),
    ("adamhd (default)", "adamhd", {}),
    ("adamhd loop", "adamhd", dict(foreach=False)),
    ("adamhd foreach", "adamhd", dict(foreach=True)),
    ("yellowfin (default)", "yellowfin", {}),
    ("yellowfin loop", "yellowfin", dict(foreach=False)),
    ("yellowfin foreach", "yellowfin", dict(foreach=True)),
    # torch.compile(optimizer.step), default settings: where does a compiled step pay? (SGDHD is
    # left out: its learning rate is a new Python float every step, so a compiled step recompiles
    # every step, seconds each; YellowFin's step runs eagerly under torch.compile, see
    # benchmarks/yellowfin_compile.py.)
    ("adam (default) compiled", "compiled:torch:Adam", {}),
    ("hadam order=4 compiled", "compiled:hadam", {}),
    ("adamhd compiled", "compiled:adamhd", {}),
    ("sgld compiled", "compiled:sgld", {}),
    ("floor: normal_ noise alone", "floor:normal", {}),
    ("floor: random_ int32 bits alone", "floor:bits", {}),
]


class NoiseFloor:
    """Draws what an SGLD step draws (``normal_``) or only the raw random bits, on each ``step()``."""

    def __init__(self, params, what: str):
        dtype = torch.int32 if what == "bits" else None
        self.buffers = [torch.empty_like(p, dtype=dtype) for p in params]
        self.generator = torch.Generator().manual_seed(0)
        self.what = what

    def step(self):
        for buffer in self.buffers:
            if self.what == "bits":
                buffer.random_(generator=self.generator)
            else:
                buffer.normal_(generator=self.generator)


def make_tensors(seed: int = 0) -> list[torch.Tensor]:
    """50 tensors, 2.7M parameters: 20 matrices 512x256, 20 vectors of 256, 10 matrices 64x64."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(512, 256)] * 20 + [(256,)] * 20 + [(64, 64)] * 10
    params = []
    for shape in shapes:
        p = torch.randn(shape, generator=gen).requires_grad_()
        p.grad = torch.randn(shape, generator=gen) * 1e-2
        params.append(p)
    return params


class CompiledStep:
    """``torch.compile(optimizer.step)``, the way torch.optim documents compiling a step."""

    def __init__(self, optimizer):
        # Every optimizer's step goes through torch.optim's one wrapper function, whose compiled
        # variants share one cache: room for all of them, or later ones would run eagerly.
        torch._dynamo.config.recompile_limit = 64
        self.optimizer = optimizer
        self.step = torch.compile(optimizer.step)


def build(kind: str, params, kwargs: dict):
    if kind.startswith("compiled:"):
        return CompiledStep(build(kind.split(":", 1)[1], params, kwargs))
    if kind.startswith("floor:"):
        return NoiseFloor(params, kind.split(":", 1)[1])
    if kind.startswith("torch:"):
        return getattr(torch.optim, kind.split(":", 1)[1])(params, **kwargs)
    return l2o.optim.create(kind, params, **kwargs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (median kept)")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per timing")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "step_time.json")
    parser.add_argument("--only", action="append", default=None, metavar="NAME",
                        help="time only this row (repeatable); 'adam (default)' and 'adam fused' always run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = {name for name, _, _ in CONFIGS}
    if args.only:
        unknown = sorted(set(args.only) - names)
        if unknown:
            raise SystemExit(f"unknown --only row(s): {unknown}; rows: {sorted(names)}")
    chosen = None if not args.only else {*args.only, "adam (default)", "adam fused"}

    optimizers, skipped = {}, {}
    for name, kind, kwargs in CONFIGS:
        if chosen is not None and name not in chosen:
            continue
        try:
            params = make_tensors()
            optimizers[name] = build(kind, params, kwargs)
        except (ImportError, KeyError, AttributeError) as error:  # e.g. a method not in this checkout
            skipped[name] = f"{type(error).__name__}: {error}"
            print(f"skipping {name}: {skipped[name]}", file=sys.stderr)
    warmup_s = {}
    for name, optimizer in list(optimizers.items()):  # warm-up: state allocation, first-step branches, compiling
        start = time.perf_counter()
        try:
            for _ in range(3):
                optimizer.step()
        except Exception as error:  # e.g. torch.compile without a working C++ compiler
            if not isinstance(optimizer, CompiledStep):
                raise
            skipped[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
            print(f"skipping {name}: {skipped[name]}", file=sys.stderr)
            del optimizers[name]
            continue
        warmup_s[name] = time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in optimizers}
    from tqdm import tqdm

    for _ in tqdm(range(args.rounds), desc="rounds", file=sys.stderr):
        for name, optimizer in optimizers.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                optimizer.step()
            times[name].append((time.perf_counter() - start) / args.steps)

    median = {name: statistics.median(t) for name, t in times.items()}
    adam, fused = median["adam (default)"], median["adam fused"]
    numel = sum(p.numel() for p in make_tensors())
    results = [dict(name=name, median_ms=1e3 * m, ratio_to_adam=m / adam, ratio_to_fused_adam=m / fused,
                    spread_ms=[1e3 * min(times[name]), 1e3 * max(times[name])], warmup_s=round(warmup_s[name], 2))
               for name, m in median.items()]
    report = dict(
        description=__doc__.strip().splitlines()[0],
        command="python " + shlex.join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:])),
        torch=torch.__version__, python=platform.python_version(), machine=platform.machine(), cpu=cpu_info(),
        threads=torch.get_num_threads(), tensors=50, parameters=numel, dtype="float32",
        rounds=args.rounds, steps_per_round=args.steps, results=results, skipped=skipped,
    )
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")

    cpu = report["cpu"]
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, vector extensions: {', '.join(cpu['vector_extensions']) or 'none'}")
    print(f"{numel:,} parameters in 50 tensors, 1 thread, median of {args.rounds} rounds x {args.steps} steps")
    print(f"{'optimizer':31s} {'ms/step':>9s} {'x Adam':>8s} {'x fused Adam':>13s}")
    for row in results:
        print(f"{row['name']:31s} {row['median_ms']:9.2f} {row['ratio_to_adam']:8.2f} {row['ratio_to_fused_adam']:13.2f}")
    for name, why in skipped.items():
        print(f"{name:31s} skipped ({why})")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
