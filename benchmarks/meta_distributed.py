"""Meta-training throughput with 1 and 2 processes (torchrun, gloo on the CPU).

Runs ``torchrun --standalone --nproc_per_node=N --no-python l2o meta train ...`` for N = 1, 2
(each process one thread), for truncated BPTT (the task batch split) and ES (4 antithetic pairs
split), reads the summary line (inner steps per second over the outer
steps, validation excluded), measures the gloo all-reduce of the packed meta-gradient (the
rule's weights, float64, plus 2 numbers) in the same run, and writes
benchmarks/results/meta_distributed.json with the CPU's vector extensions.

Usage::

    python benchmarks/meta_distributed.py [--steps 30] [--batch 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLREDUCE = """
import sys, time, torch, torch.distributed as dist
from _machine import cpu_info
dist.init_process_group("gloo")
n = int(sys.argv[1]); x = torch.zeros(n, dtype=torch.float64)
for _ in range(20): dist.all_reduce(x)
dist.barrier(); t = time.perf_counter()
for _ in range(200): dist.all_reduce(x)
dt = (time.perf_counter() - t) / 200
if dist.get_rank() == 0: print(dt)
dist.destroy_process_group()
"""


def torchrun(n: int, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                           *args], capture_output=True, text=True, env=env, timeout=1800, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="outer steps per run")
    parser.add_argument("--batch", type=int, default=8, help="task instances per episode (split over the processes)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per process count (the best is kept)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "meta_distributed.json"))
    args = parser.parse_args(argv)
    train = ["--task", "regression", "--widths", "32", "--depths", "2", "--batch-sizes", "32", "--horizon", "100",
             "--unroll", "10", "--batch", str(args.batch), "--groups", "2", "--steps", str(args.steps),
             "--val-every", "0", "--checkpoint-every", str(args.steps), "--no-progress", "--threads", "1"]
    estimators = {"bptt": [], "es": ["--estimator", "es", "--pairs", "4"]}
    runs: dict[str, dict[str, list[dict]]] = {e: {} for e in estimators}
    dim = None
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for estimator, extra in estimators.items():
                for n in (1, 2):
                    out = Path(tmp) / f"{estimator}n{n}r{repeat}"
                    proc = torchrun(n, ["--no-python", "l2o", "meta", "train", *train, *extra, "--out", str(out)])
                    line = [ln for ln in proc.stdout.splitlines() if ln.startswith('{"outer_steps"')][-1]
                    runs[estimator].setdefault(str(n), []).append(json.loads(line))
                if dim is None:
                    from safetensors.torch import load_file

                    dim = sum(t.numel() for t in load_file(out / "weights.safetensors").values())
    nbytes = (dim + 2) * 8
    script = Path(tempfile.mkstemp(suffix=".py")[1])
    script.write_text(ALLREDUCE)
    try:
        allreduce_s = float(torchrun(2, [str(script), str(dim + 2)]).stdout.strip().splitlines()[-1])
    finally:
        script.unlink()
    best = {e: {n: max(r["inner_steps_per_second"] for r in rs) for n, rs in by_n.items()} for e, by_n in runs.items()}
    result = {
        "benchmark": "meta_distributed",
        "command": "python benchmarks/meta_distributed.py " + " ".join(sys.argv[1:]),
        "train_args": train,
        "cpu": cpu_info(), "cpus": os.cpu_count(), "platform": platform.platform(),
        "note": "shared machine: other jobs ran at the same time, so absolute numbers and the ratio are noisy",
        "inner_steps_per_second": best,
        "runs": runs,
        "speedup_2_over_1": {e: b["2"] / b["1"] for e, b in best.items()},
        "outer_step_seconds": {e: {n: args.batch * 10 / ips for n, ips in b.items()}  # unroll 10 x batch
                               for e, b in best.items()},
        "cpu_seconds_per_rank": {e: {n: min(r["cpu_seconds"] for r in rs) for n, rs in by_n.items()}
                                 for e, by_n in runs.items()},
        "meta_parameters": dim,
        "allreduce_bytes_per_outer_step": nbytes,
        "allreduce_seconds_gloo_2proc_localhost": allreduce_s,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from l2o.io import atomic_write_text, jsonable

    atomic_write_text(out, json.dumps(jsonable(result), indent=2) + "\n")
    print(json.dumps(jsonable({k: result[k] for k in ("inner_steps_per_second", "speedup_2_over_1",
                                                      "outer_step_seconds", "meta_parameters",
                                                      "allreduce_bytes_per_outer_step",
                                                      "allreduce_seconds_gloo_2proc_localhost")}), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
