"""YellowFin under ``torch.compile``: 100 steps eager against ``torch.compile(optimizer.step)``.

YellowFin's step runs eagerly under ``torch.compile`` (one warning; the compiled frame only calls
the eager step, so nothing recompiles). This script measures what that costs and what compiling
could at best have gained:

* ``eager``: 100 ``optimizer.step()`` calls;
* ``torch.compile(step)``: 100 calls of the compiled step (its first call, which traces, timed
  apart as ``first_call_s``);
* ``update eager`` / ``update compiled``: the heavy-ball update alone (three multi-tensor
  operations), eager against compiled with its momentum and step size as 0-dim tensors (so that
  new values do not recompile): the most a compiled YellowFin step could save.

Ratios are to the eager step measured in the same run; the CPU's vector extensions are recorded.

Usage::

    python benchmarks/yellowfin_compile.py          # writes benchmarks/results/yellowfin_compile.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

from l2o.io import atomic_write_text
from l2o.optim.yellowfin import YellowFin

sys.path.insert(0, str(Path(__file__).parent))
from _machine import cpu_info  # noqa: E402


def tensors(seed: int, count: int, size: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(size, generator=gen).requires_grad_() for _ in range(count)]


def heavy_ball(params, grads, buffers, momentum, step_size):
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_add_(buffers, torch._foreach_mul(grads, step_size))
    torch._foreach_add_(params, buffers)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tensors", type=int, default=20)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "yellowfin_compile.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    grads = [torch.randn(args.size, generator=torch.Generator().manual_seed(100 + i)) for i in range(args.tensors)]

    def run(step_fn, params, steps):
        start = time.perf_counter()
        for _ in range(steps):
            for p, g in zip(params, grads):
                p.grad = g
            step_fn()
        return time.perf_counter() - start

    params = tensors(0, args.tensors, args.size)
    eager = YellowFin(params)
    run(eager.step, params, 3)
    eager_s = run(eager.step, params, args.steps)

    torch._dynamo.reset()
    cparams = tensors(0, args.tensors, args.size)
    compiled = YellowFin(cparams)
    step = torch.compile(compiled.step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first_s = run(step, cparams, 1)
        run(step, cparams, 2)
        compiled_s = run(step, cparams, args.steps)
    messages = sorted({str(w.message).splitlines()[0][:160] for w in caught})

    with torch.no_grad():
        uparams = [p.detach().clone() for p in params]
        buffers = [torch.zeros_like(p) for p in uparams]
        momentum, size = torch.tensor(0.5), torch.tensor(-1e-3)

        def update_eager():
            heavy_ball(uparams, grads, buffers, 0.5, -1e-3)

        compiled_update = torch.compile(heavy_ball)

        def update_compiled():
            momentum.fill_(0.5 + 1e-4 * torch.rand(()).item())  # a new value every step: no recompiling
            compiled_update(uparams, grads, buffers, momentum, size)

        def time_update(fn):
            for _ in range(3):
                fn()
            start = time.perf_counter()
            for _ in range(args.steps):
                fn()
            return time.perf_counter() - start

        update_eager_s, update_compiled_s = time_update(update_eager), time_update(update_compiled)

    report = {
        "description": __doc__.splitlines()[0], "command": "python benchmarks/yellowfin_compile.py "
        + " ".join(argv if argv is not None else sys.argv[1:]), "torch": torch.__version__, "cpu": cpu_info(),
        "threads": 1, "steps": args.steps, "parameters": args.tensors * args.size, "tensors": args.tensors,
        "eager_s": eager_s, "compiled_s": compiled_s, "compiled_first_call_s": first_s,
        "compiled_over_eager": compiled_s / eager_s, "update_eager_s": update_eager_s,
        "update_compiled_s": update_compiled_s, "update_share_of_eager_step": update_eager_s / eager_s,
        "best_saving_from_compiling_update_over_eager_step": (update_eager_s - update_compiled_s) / eager_s,
        "warnings": messages,
    }
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    cpu = report["cpu"]
    print(f"CPU: {cpu['model']}, vector extensions: {', '.join(cpu['vector_extensions'])}")
    print(f"{args.steps} steps, {args.tensors} x {args.size} float32 parameters, 1 thread")
    print(f"  eager                      {eager_s:7.3f} s")
    print(f"  torch.compile(opt.step)    {compiled_s:7.3f} s  ({compiled_s / eager_s:.2f}x eager; first call "
          f"{first_s:.2f} s)")
    print(f"  heavy-ball update eager    {update_eager_s:7.3f} s  ({update_eager_s / eager_s:.0%} of the eager step)")
    print(f"  heavy-ball update compiled {update_compiled_s:7.3f} s")
    print(f"  warnings: {messages}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
