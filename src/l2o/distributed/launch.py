"""Real processes on localhost (gloo), with hard timeouts: used by the tests and benchmarks.

:func:`spawn` starts ``world_size`` processes on a free port, runs ``fn(rank, world_size, *args)``
in each (after ``init_process_group("gloo")``) and returns the JSON-able results by rank. A
process that fails or dies, or a run past ``timeout``, raises :class:`WorkerFailed` naming the
ranks and their errors; remaining processes are terminated, so nothing hangs.

:func:`train_ddp` is one DDP training run on a :mod:`l2o.distributed.problems` problem with the
compression hook (or DDP's own all-reduce, or torch's PowerSGD hook), the same seeds as
:func:`l2o.distributed.simulator.simulate`.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import traceback
from datetime import timedelta
from pathlib import Path

__all__ = ["spawn", "train_ddp", "train_many", "WorkerFailed", "free_port"]


class WorkerFailed(RuntimeError):
    """A spawned rank failed, died or the run timed out."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn, rank, world_size, port, args, out_dir, group_timeout):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=group_timeout))
        result = fn(rank, world_size, *args)
        Path(out_dir, f"{rank}.json").write_text(json.dumps(result))
    except BaseException:
        Path(out_dir, f"{rank}.err").write_text(traceback.format_exc())
        os._exit(1)
    try:
        dist.destroy_process_group()
    except Exception:
        pass


def spawn(fn, world_size: int, args: tuple = (), *, timeout: float = 60.0, group_timeout: float = 10.0,
          grace: float = 15.0) -> list:
    """Run ``fn`` on ``world_size`` gloo processes; results by rank (see the module)."""
    import multiprocessing as mp

    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="l2o-dist-") as out_dir:
        port = free_port()
        procs = [ctx.Process(target=_entry, args=(fn, r, world_size, port, args, out_dir, group_timeout), daemon=True)
                 for r in range(world_size)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        first_failure = None
        terminated: set[int] = set()
        while True:
            alive = [p for p in procs if p.is_alive()]
            if not alive:
                break
            now = time.monotonic()
            if first_failure is None and any(p.exitcode not in (None, 0) for p in procs):
                first_failure = now
                deadline = min(deadline, now + grace)
            if now > deadline:
                terminated.update(procs.index(p) for p in alive)
                for p in alive:
                    p.terminate()
                for p in alive:
                    p.join(5)
                    if p.is_alive():
                        p.kill()
                break
            time.sleep(0.05)
        errors = []
        for r, p in enumerate(procs):
            p.join(1)
            err = Path(out_dir, f"{r}.err")
            if err.exists():
                last = [ln for ln in err.read_text().strip().splitlines() if ln.strip()]
                errors.append(f"rank {r}: {last[-1] if last else 'failed'}")
            elif Path(out_dir, f"{r}.json").exists():
                continue
            elif r in terminated:
                errors.append(f"rank {r}: killed after the {timeout:g} s timeout" if first_failure is None
                              else f"rank {r}: still running {grace:g} s after another rank failed; terminated")
            else:
                errors.append(f"rank {r}: died with exit code {p.exitcode} before finishing")
        if errors:
            raise WorkerFailed("distributed run failed: " + "; ".join(errors))
        return [json.loads(Path(out_dir, f"{r}.json").read_text()) for r in range(world_size)]


def train_ddp(rank: int, world_size: int, config: dict) -> dict:
    """One DDP run (see the module). ``config``: ``problem`` (name), ``problem_kwargs``,
    ``algorithm`` (name or ``"ddp"`` for DDP's own all-reduce or ``"powersgd"``), ``algorithm_kwargs``,
    ``lr``, ``steps``, ``seed``, ``dtype`` ("float32"/"float64"), optional ``bucket_cap_mb``,
    ``die_at_step`` with ``die_rank`` (that rank exits abruptly), ``extra_empty_param``."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from .algorithms import make_algorithm
    from .hook import CompressionState, compression_hook
    from .problems import make_problem

    dtype = getattr(torch, config.get("dtype", "float32"))
    problem = make_problem(config["problem"], workers=world_size, dtype=dtype, **config.get("problem_kwargs", {}))
    model = problem.make_model()
    if config.get("extra_empty_param"):
        model.register_parameter("empty", torch.nn.Parameter(torch.zeros(0, dtype=dtype)))
    ddp = DDP(model, bucket_cap_mb=config.get("bucket_cap_mb", 25))
    name = config["algorithm"]
    state = None
    if name == "powersgd":
        from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as ps

        ps_state = ps.PowerSGDState(process_group=None, matrix_approximation_rank=config.get("rank", 1),
                                    start_powerSGD_iter=2, min_compression_rate=1, random_seed=config.get("seed", 0))
        ddp.register_comm_hook(ps_state, ps.powerSGD_hook)
    elif name != "ddp":
        state = CompressionState(make_algorithm(name, **config.get("algorithm_kwargs", {})), ddp.module,
                                 seed=config.get("seed", 0))
        ddp.register_comm_hook(state, compression_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=config["lr"], foreach=False)
    losses, times = [], []
    for step in range(config["steps"]):
        if config.get("die_at_step") == step and config.get("die_rank") == rank:
            os._exit(3)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = problem.loss(ddp, problem.worker_batch(rank, step))
        if config.get("extra_empty_param"):
            loss = loss + ddp.module.empty.sum()  # used, so DDP expects its (empty) gradient
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    params = [p for p in ddp.module.parameters() if p.requires_grad]
    flat = torch.cat([p.detach().reshape(-1) for p in params if p.numel() > 0])
    result = {"loss": losses, "params": flat.tolist(), "step_time": times,
              "final_loss": problem.full_loss(ddp.module)}
    if state is not None:
        result.update(bytes_up=state.bytes_up, bytes_down=state.bytes_down, history=state.history,
                      collective_sizes=[n for _, n in state.collective_sizes])
    dist.barrier()
    return result


def train_many(rank: int, world_size: int, configs: list) -> list:
    """:func:`train_ddp` for each config in turn, in one process group (one start-up for all)."""
    return [train_ddp(rank, world_size, config) for config in configs]
