"""Meta-training under torch.distributed, and LearnedOptimizer under DDP/FSDP, with 2 real gloo
processes spawned here (free port, hard timeout), compared with one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TINY = ["--task", "regression", "--widths", "4", "--depths", "1", "--batch-sizes", "8", "--horizon", "10:20",
        "--unroll", "5", "--batch", "4", "--groups", "2", "--hidden", "4", "--val-steps", "5", "--no-progress",
        "--threads", "1", "--checkpoint-every", "2", "--val-every", "2"]
RUNS = {"bptt": [*TINY, "--steps", "4"], "es": [*TINY, "--estimator", "es", "--pairs", "3", "--steps", "3"],
        "pes": [*TINY, "--estimator", "pes", "--pairs", "3", "--steps", "4"]}
TIMEOUT = 180


def _worker(rank: int, out: Path) -> None:
    """One rank: the CLI runs of RUNS, a refused run (fewer ES pairs than processes), then
    LearnedOptimizer under DDP and FSDP."""
    import torch
    import torch.distributed as dist

    from l2o.cli import main

    torch.set_num_threads(1)
    report: dict = {"rc": {}}
    for name, args in RUNS.items():
        report["rc"][name] = main(["meta", "train", *args, "--out", str(out / f"{name}2")])
    report["rc"]["refused"] = main(["meta", "train", *TINY, "--estimator", "es", "--pairs", "1", "--steps", "1",
                                    "--out", str(out / "refused")])

    from torch.nn.parallel import DistributedDataParallel as DDP

    from l2o.learned.optimizer import LearnedOptimizer

    def net():
        torch.manual_seed(100 + rank)  # different on each rank: DDP starts every rank from rank 0's
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    generator = torch.Generator().manual_seed(rank)  # each rank its own data
    x, y = torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator)
    ddp, plain = DDP(net()), net()
    with torch.no_grad():  # the control starts where DDP does, so only the all-reduce differs
        for p, q in zip(plain.parameters(), ddp.module.parameters()):
            p.copy_(q)
    for model in (ddp, plain):
        opt = LearnedOptimizer(model.parameters())
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    report["ddp"] = [p.detach().flatten().tolist() for p in ddp.module.parameters()]
    report["plain"] = [p.detach().flatten().tolist() for p in plain.parameters()]
    try:
        from torch.distributed.fsdp import fully_shard

        sharded = net()
        fully_shard(sharded)
        try:
            LearnedOptimizer(sharded.parameters())
            report["fsdp"] = "accepted"
        except ValueError as exc:
            report["fsdp"] = f"refused: {exc}"
    except Exception as exc:  # noqa: BLE001 - FSDP itself unavailable on this build/backend
        report["fsdp"] = f"unavailable: {type(exc).__name__}: {exc}"
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process runs (spawned) and the same runs in this process."""
    out = tmp_path_factory.mktemp("dist")
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        log = open(out / f"rank{rank}.log", "w")
        procs.append((subprocess.Popen([sys.executable, __file__, str(rank), str(out)], env=env, stdout=log,
                                       stderr=subprocess.STDOUT), log))
    try:
        for proc, _ in procs:
            proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = {r: (out / f"rank{r}.log").read_text() for r in range(2)}
    assert all(p.returncode == 0 for p, _ in procs), f"a rank failed or hung: {logs}"
    from l2o.cli import main

    for name, args in RUNS.items():
        assert main(["meta", "train", *args, "--out", str(out / f"{name}1")]) == 0
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, reports, logs


def _weights(path: Path):
    from safetensors.torch import load_file

    return load_file(path)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_two_processes_give_one_process_result(runs, name):
    out, reports, logs = runs
    assert all(r["rc"][name] == 0 for r in reports)
    one, two = _weights(out / f"{name}1" / "weights.safetensors"), _weights(out / f"{name}2" / "weights.safetensors")
    for key in one:
        # float tolerance: the all-reduce sums the ranks' partial meta-gradients in another order
        assert (one[key] - two[key]).abs().max() <= 1e-5 * (1 + one[key].abs().max()), key
    from l2o.meta.plot import read_history

    rows = [json.loads(line) for line in (out / f"{name}2" / "history.jsonl").read_text().splitlines()]
    assert rows and all(row["world_size"] == 2 for row in rows)
    # validation: each rank scores its share of the episodes; the all-reduced mean is the one-process one
    alone = [json.loads(line) for line in (out / f"{name}1" / "history.jsonl").read_text().splitlines()]
    vals = {row["step"]: row["val"] for row in rows if "val" in row}
    assert vals and vals.keys() == {row["step"]: 0 for row in alone if "val" in row}.keys()
    for row in alone:
        if "val" in row:
            assert abs(vals[row["step"]] - row["val"]) <= 1e-5 * (1 + abs(row["val"])), (row["step"], vals)
    assert read_history(out / f"{name}2" / "history.jsonl")[1]  # the validations are read as before
    card = json.loads((out / f"{name}2" / "weights.json").read_text())
    assert card["training"]["world_size"] == 2
    summaries = [json.loads(line) for line in logs[0].splitlines() if line.startswith('{"outer_steps"')]
    summary = summaries[list(RUNS).index(name)]  # rank 0 printed one summary line per run, in order
    assert summary["world_size"] == 2 and summary["outer_steps"] == int(RUNS[name][-1])


def test_only_rank_zero_writes_and_prints(runs):
    out, reports, logs = runs
    assert "final weights" in logs[0] and "final weights" not in logs[1]
    assert '"world_size"' not in logs[1]


def test_resume_with_another_number_of_processes(runs, tmp_path):
    """The 2-process run's checkpoint continued by 1 process ends where 1 process alone does."""
    import shutil

    from l2o.cli import main

    out, _, _ = runs
    for estimator in ("bptt", "pes"):
        for name in (f"{estimator}1", f"{estimator}2"):
            shutil.copytree(out / name, tmp_path / name)
            assert main(["meta", "train", *RUNS[estimator][:-1], "6", "--resume", "--out", str(tmp_path / name)]) == 0
        one = _weights(tmp_path / f"{estimator}1" / "weights.safetensors")
        two = _weights(tmp_path / f"{estimator}2" / "weights.safetensors")
        for key in one:
            assert (one[key] - two[key]).abs().max() <= 1e-5 * (1 + one[key].abs().max()), (estimator, key)
        rows = [json.loads(line) for line in (tmp_path / f"{estimator}2" / "history.jsonl").read_text().splitlines()]
        assert {row["step"]: row["world_size"] for row in rows if "val" in row} == {2: 2, 4: 2, 6: 1}


def test_fewer_pairs_than_processes_refused_clearly_on_every_rank(runs):
    _, reports, logs = runs
    assert all(r["rc"]["refused"] == 2 for r in reports)
    assert all("l2o: error: data-parallel ES splits the 1 antithetic pairs over the 2 processes" in log
               for log in logs.values())


def test_learned_optimizer_under_ddp_keeps_ranks_identical(runs):
    _, reports, _ = runs
    assert reports[0]["ddp"] == reports[1]["ddp"]
    # without DDP's all-reduce the same steps on each rank's own data part ways: the check can fail
    assert reports[0]["plain"] != reports[1]["plain"]
    assert reports[0]["ddp"] != reports[0]["plain"]


def test_learned_optimizer_refuses_fsdp_shards(runs):
    _, reports, _ = runs
    for report in reports:
        assert report["fsdp"].startswith("refused: LearnedOptimizer cannot step FSDP"), report["fsdp"]


if __name__ == "__main__":
    _worker(int(sys.argv[1]), Path(sys.argv[2]))
