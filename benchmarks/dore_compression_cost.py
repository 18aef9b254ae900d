"""Cost of DORE's compression per step against the all-reduce it replaces, on 2 gloo processes.

For a flat float32 "gradient" of N elements (one tensor; N from ``--sizes``), every rank times,
in interleaved rounds (median over rounds):

- ``allreduce``: ``dist.all_reduce`` of the N floats (what DDP does by default): the baseline;
- ``encode``: the DORE worker side (residual, 2-bit ∞-norm quantization in blocks of 256, pack,
  state update);
- ``exchange``: ``gather`` of the packed messages to rank 0 and ``broadcast`` of the packed reply;
- ``server``: rank 0's server step (decode the K messages, average, model residual, quantize);
- ``decode``: unpack the reply into the direction the optimizer applies;
- ``dore_total``: encode + exchange + server + decode, as the hook runs them.

Rows are ratios to ``allreduce`` (same run, same machine); the bytes each sends are recorded.
On localhost the "network" is memory, so the all-reduce is far cheaper than on a cluster:
docs/distributed.md turns the bytes into times at stated bandwidths. Single-threaded; the CPU's
vector extensions (avx512f / avx2) are recorded beside the ratios.

Usage::

    python benchmarks/dore_compression_cost.py     # writes benchmarks/results/dore_compression_cost.json
    python benchmarks/dore_compression_cost.py --sizes 100000 --rounds 3 --out /tmp/dore_cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from _machine import cpu_info


def _measure(rank: int, world: int, sizes: list, rounds: int, reps: int) -> dict:
    import torch
    import torch.distributed as dist

    from l2o.distributed import make_algorithm
    from l2o.distributed.algorithms import SERVER_ROLE, generator_for

    alg = make_algorithm("dore")
    out = {}
    for n in sizes:
        g = torch.randn(n, generator=torch.Generator().manual_seed(rank))
        wstate, sstate = alg.init_worker(n, g.dtype), alg.init_server(n, g.dtype)
        times = {k: [] for k in ("allreduce", "encode", "exchange", "server", "decode")}
        up = alg.uplink.nbytes(n)
        down = alg.downlink.nbytes(n)
        for r in range(rounds):
            t = {k: 0.0 for k in times}
            for k in range(reps):
                step = r * reps + k
                buf = g.clone()
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(buf)
                t["allreduce"] += time.perf_counter() - t0
                dist.barrier()
                t0 = time.perf_counter()
                msg = alg.worker_encode(wstate, g, generator_for(0, step, rank, 0))
                t["encode"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                gathered = [torch.empty_like(msg) for _ in range(world)] if rank == 0 else None
                dist.gather(msg, gathered, dst=0)
                t1 = time.perf_counter()
                if rank == 0:
                    reply = alg.server_step(sstate, gathered, n, g.dtype, generator_for(0, step, SERVER_ROLE, 0))
                else:
                    reply = torch.empty(down, dtype=torch.uint8)
                t2 = time.perf_counter()
                dist.broadcast(reply, src=0)
                t3 = time.perf_counter()
                alg.worker_decode(wstate, reply, n, g.dtype)
                t4 = time.perf_counter()
                t["exchange"] += (t1 - t0) + (t3 - t2)
                t["server"] += t2 - t1
                t["decode"] += t4 - t3
            for k in times:
                times[k].append(t[k] / reps)
        med = {k: statistics.median(v) for k, v in times.items()}
        med["dore_total"] = med["encode"] + med["exchange"] + med["server"] + med["decode"]
        out[str(n)] = {"seconds": med, "ratio_to_allreduce": {k: v / med["allreduce"] for k, v in med.items()},
                       "bytes_allreduce_payload": 4 * n, "bytes_up_per_worker": up, "bytes_down_per_worker": down}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated element counts")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5, help="repetitions per round")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dore_compression_cost.json"))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1 or args.rounds < 1 or args.reps < 1:
        raise SystemExit("sizes, rounds and reps must be positive")
    from l2o.distributed.launch import spawn
    from l2o.io import atomic_write_text

    results = spawn(_measure, 2, (sizes, args.rounds, args.reps), timeout=1200)
    report = {"benchmark": "dore_compression_cost", "workers": 2, "backend": "gloo (localhost)",
              "compressor": "qsgd s=1 block=256 norm=inf (both directions)", "rounds": args.rounds,
              "reps": args.reps, "cpu": cpu_info(), "platform": platform.platform(),
              "python": sys.version.split()[0], "rank0": results[0], "rank1": results[1]}
    atomic_write_text(args.out, json.dumps(report, indent=2))
    for n, row in results[0].items():
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in row["ratio_to_allreduce"].items())
        print(f"N={n}: {ratios} (allreduce {row['seconds']['allreduce'] * 1e3:.2f} ms)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
