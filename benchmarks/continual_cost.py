"""Cost of OGD and HAT, as ratios to a plain SGD step of the same network measured in the same run.

The network is the continual room's default: a 64-100-100-10 ReLU MLP on permuted digits, batches
of 32, single-threaded. Rows:

- ``sgd``: one step of plain fine-tuning (zero_grad, forward, backward, SGD step): the baseline.
- ``ogd-VARIANT k tasks``: the same step with OGD's projection against the basis that k finished
  tasks leave (k = 0..4, M stored examples per task: M rows per task for GTL/AVE, 10·M for ALL),
  with the basis's memory in bytes (float32) and the time to add one task's block (per-example
  output gradients by torch.func plus re-orthogonalised Gram–Schmidt) as a ratio to a step.
- ``hat``: one HAT step (masked forward with the sparsity regularizer, gradient blocking and
  compensation, the guard that restores blocked entries, embedding clamp) after 2 tasks, and
  ``hat (no guard)`` without the restore.

Timings are interleaved rounds (each row once per round), median over rounds. The CPU's vector
extensions (avx512f / avx2) are recorded beside the ratios.

Usage::

    python benchmarks/continual_cost.py            # writes benchmarks/results/continual_cost.json
    python benchmarks/continual_cost.py --rounds 3 --steps 5 --out /tmp/continual_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from _machine import cpu_info

from l2o.continual import HAT, OGD, Method, make_stream
from l2o.io import atomic_write_text, jsonable

RESULTS = Path(__file__).resolve().parent / "results" / "continual_cost.json"


def stepper(method, stream, t: int, batch: int):
    """A function doing one training step of ``method`` on task ``t`` (the runner's loop body)."""
    method.begin_task(stream, t)
    opt = method.make_optimizer()
    x, y = stream[t].x_train[:batch], stream[t].y_train[:batch]
    tids = torch.full((batch,), t, dtype=torch.long)

    def step():
        opt.zero_grad(set_to_none=True)
        method.loss(x, y, tids, t, 5, 10).backward()
        method.before_step(t)
        opt.step()
        method.after_step(t)

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--steps", type=int, default=20, help="steps timed per row and round (default 20)")
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--memory", type=int, default=20, help="OGD's stored examples per task (default 20)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stream = make_stream("permuted-digits", 5, seed=0)
    gen = torch.Generator().manual_seed(0)

    rows: dict[str, dict] = {}
    fns = {}
    sgd = Method(lr=0.01)
    sgd.setup(stream, 0)
    fns["sgd"] = stepper(sgd, stream, 0, args.batch)
    for variant in ("gtl", "ave", "all"):
        ogd = OGD(lr=0.01, variant=variant, memory=args.memory)
        ogd.setup(stream, 0)
        for k in range(5):
            name = f"ogd-{variant} {k} tasks"
            fns[name] = stepper(ogd, stream, k, args.batch)
            # freeze this basis for the row: steps on task k project against tasks 0..k-1
            rows[name] = {"basis_rows": len(ogd.basis), "basis_bytes": ogd.basis.nbytes}
            basis_k = ogd.basis.rows.clone()

            def fixed(step=fns[name], m=ogd, rows_k=basis_k):
                keep = m.basis.rows
                m.basis.rows = rows_k
                step()
                m.basis.rows = keep

            fns[name] = fixed
            t0 = time.perf_counter()
            ogd.end_task(stream, k, gen)
            rows[name]["add_task_s"] = time.perf_counter() - t0
    for guard in (True, False):
        hat = HAT(lr=0.01, guard=guard)
        hat.setup(stream, 0)
        for t in range(2):
            hat.begin_task(stream, t)
            hat.end_task(stream, t, gen)
        name = "hat" if guard else "hat (no guard)"
        fns[name] = stepper(hat, stream, 2, args.batch)
        rows[name] = {}

    times = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            fn()  # warm
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times["sgd"])
    out_rows = {"sgd": {"step_s": base, "ratio": 1.0}}
    for name in fns:
        if name == "sgd":
            continue
        med = statistics.median(times[name])
        out_rows[name] = {"step_s": med, "ratio": med / base, **rows.get(name, {})}
        if "add_task_s" in out_rows[name]:
            out_rows[name]["add_task_ratio"] = out_rows[name]["add_task_s"] / base
    result = {"description": "OGD and HAT step time as ratios to a plain SGD step (64-100-100-10 MLP, batch "
                             f"{args.batch}, M={args.memory}); OGD basis memory as tasks grow",
              "cpu": cpu_info(), "machine": platform.machine(), "torch": torch.__version__,
              "threads": 1, "rounds": args.rounds, "steps": args.steps, "rows": out_rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(jsonable(result), indent=1))
    for name, r in out_rows.items():
        extra = f"  basis {r['basis_rows']} rows, {r['basis_bytes'] / 2**20:.1f} MiB" if "basis_rows" in r else ""
        print(f"{name:22s} {1e3 * r['step_s']:8.3f} ms  x{r['ratio']:6.2f}{extra}")
    print(f"cpu: {result['cpu']['widest']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
