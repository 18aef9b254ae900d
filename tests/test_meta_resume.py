"""`l2o meta train` killed with SIGKILL at an arbitrary moment, then `--resume`d, ends with the
uninterrupted run's weights and history, bit for bit, for every estimator (real processes)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from l2o.cli import main
from l2o.io import load_tensors

ESTIMATORS = ("bptt", "es", "pes")
STEPS, EVERY = 18, 3
# groups 2, episodes of 10-20 steps in truncations of 5: checkpoints fall mid-episode
ARGS = ["meta", "train", "--task", "regression", "--widths", "4", "--depths", "1", "--batch-sizes", "8",
        "--horizon", "10:20", "--unroll", "5", "--batch", "2", "--groups", "2", "--hidden", "4", "--pairs", "2",
        "--val-every", "6", "--val-steps", "5", "--seed", "11", "--steps", str(STEPS), "--checkpoint-every",
        str(EVERY), "--no-progress"]
SRC = str(Path(__file__).resolve().parent.parent / "src")


def _last_step(out: Path) -> int:
    try:
        return int(load_tensors(out / "last.safetensors")[1]["step"])
    except Exception:  # not written yet
        return -1


def _weights(out: Path) -> dict:
    return load_tensors(out / "weights.safetensors")[0]


def test_sigkill_at_any_moment_then_resume_gives_the_uninterrupted_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(16)
    procs = {}
    for estimator in ESTIMATORS:  # the runs to kill, side by side
        out = tmp_path / f"killed-{estimator}"
        procs[estimator] = (out, subprocess.Popen([sys.executable, "-m", "l2o.cli", *ARGS, "--estimator", estimator,
                                                   "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL))
    try:
        # each killed at a random moment after one of its checkpoints (so with episodes in flight)
        targets = {e: rng.choice([2, 3, 4]) * EVERY for e in ESTIMATORS}
        delays = {e: rng.uniform(0.0, 0.3) for e in ESTIMATORS}
        kill_at: dict[str, float] = {}
        deadline = time.monotonic() + 300
        while len(kill_at) < len(procs) or any(procs[e][1].poll() is None for e in kill_at):
            assert time.monotonic() < deadline, "the runs took too long"
            for estimator, (out, proc) in procs.items():
                if estimator not in kill_at and (_last_step(out) >= targets[estimator] or proc.poll() is not None):
                    kill_at[estimator] = time.monotonic() + delays[estimator]
                if estimator in kill_at and time.monotonic() >= kill_at[estimator] and proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=30)
            time.sleep(0.01)
        for estimator, (out, proc) in procs.items():
            assert proc.returncode == -signal.SIGKILL, estimator  # it was still running: killed mid-run
            assert 0 < _last_step(out) < STEPS and not (out / "weights.safetensors").exists()
    finally:
        for _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    for estimator in ESTIMATORS:  # the uninterrupted runs
        assert main([*ARGS, "--estimator", estimator, "--out", str(tmp_path / f"ref-{estimator}")]) == 0
    for estimator, (out, _) in procs.items():
        assert main([*ARGS, "--estimator", estimator, "--out", str(out), "--resume"]) == 0
        reference, resumed = _weights(tmp_path / f"ref-{estimator}"), _weights(out)
        assert reference.keys() == resumed.keys()
        for name in reference:
            assert torch.equal(reference[name], resumed[name]), (estimator, name)
        ref_meta, res_meta = (load_tensors(d / "last.safetensors")[1]["summary"] for d in (tmp_path / f"ref-{estimator}", out))
        assert res_meta["history"] == ref_meta["history"] and res_meta["val_history"] == ref_meta["val_history"]
        assert res_meta["outer_steps"] == STEPS
