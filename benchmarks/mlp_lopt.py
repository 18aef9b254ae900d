"""Speed and memory of the MLP learned optimizer, as ratios to baselines measured in the same run.

1. Meta-training throughput: inner steps per second of truncated-BPTT meta-training (forward,
   optimizee gradient, rule update, and the meta-gradient's backward pass) for a batch of 8
   digits-MLP instances advanced together (stacked parameters, one rule call per step), against
   the same work done one instance at a time in a Python loop. Ratio = batched / looped.
2. Deployed step time: ``optimizer.step()`` of ``LearnedOptimizer`` running the MLP rule, and the
   LSTM rule beside it, on a model of about one million parameters, divided by
   ``torch.optim.Adam()`` (default settings) on the same model; the MLP both as it runs by default
   and with ``fused=True`` (its network as one compiled pass; the first step, which compiles it,
   is reported apart as ``first_step_seconds``, and is cold only when Inductor's on-disk cache
   is; ``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` makes it cold), and fused with the step-size
   adaptation off (``adapt=0``) and on (``adapt=0.1``; the shipped weights' default). The optimizers are timed in
   interleaved rounds (each once per round) so that load from other processes hits them alike;
   medians are kept, of wall-clock time and of process CPU time (the latter is not inflated
   when another process takes the core for a while). Beside them, the MLP's matrix products
   alone on as many coordinates (the part no rearrangement of the unfused path's feature
   computation removes; the fused pass does not use them).
   The same three (Adam, the MLP unfused and fused) on a CNN of many small tensors (biases and
   batch-norm weights), where per-tensor overhead rather than per-coordinate work dominates.
3. Peak memory of meta-training: the peak resident set size of a fresh process that runs
   batched meta-training (batch 8, unroll 20), next to the same process's RSS just before
   training starts.

Everything runs single-threaded unless ``--threads`` says otherwise (the memory probe always
does). Usage::

    python benchmarks/mlp_lopt.py                  # writes benchmarks/results/mlp_lopt.json
    python benchmarks/mlp_lopt.py --rounds 3 --out /tmp/quick.json
    python benchmarks/mlp_lopt.py --only meta_training_throughput --grouped --out /tmp/grouped.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from l2o.io import atomic_write_text
from l2o.learned.base import LearnedRule

MEMORY_PROBE = r"""
import resource, sys, torch

def peak_kib():
    # VmHWM belongs to this process image (ru_maxrss would inherit the parent's peak across exec).
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

torch.set_num_threads(1)
from l2o.learned.mlp import MLPRule
from l2o.meta.trainer import MetaConfig, MetaTrainer
from l2o.tasks.mlp_problems import MLPProblemFamily
family = MLPProblemFamily(datasets=("digits",), widths=(20,), depths=(1,), activations=("relu",), batch_sizes=(128,),
                       horizon=(200, 200))
trainer = MetaTrainer(MLPRule(), family, MetaConfig(outer_steps=int(sys.argv[1]), batch_size=8, groups=1,
                         unroll=20, val_every=0), directory=None, log=False)
trainer._outer_step(0)
before = peak_kib()
trainer.train(progress_bar=False)
after = peak_kib()
print(before, after)
"""


#: the parts of the benchmark, in the order they run (``--only``)
PARTS = ("meta_training_memory", "meta_training_throughput", "step_time_1m", "step_time_many_tensors")


def digits_tasks(count: int):
    from l2o.tasks.mlp_problems import TaskConfig, build_task

    config = TaskConfig("digits", hidden=20, layers=1, activation="relu", batch_size=128, horizon=10**6)
    return [build_task(config, seed) for seed in range(count)]


class ScaledGradient(LearnedRule):
    """A learned rule with no per-coordinate work of its own, ``p - exp(log_lr) * g`` (one learned
    number): meta-training with it times the optimizees' share of the work alone."""

    def __init__(self):
        super().__init__()
        self.log_lr = torch.nn.Parameter(torch.tensor(-3.0))

    def init_state(self, params):
        return {name: {} for name in params}

    def config(self):
        return {}

    def update(self, grads, state, params):
        lr = torch.exp(self.log_lr)
        return {name: p - lr * grads[name] for name, p in params.items()}, state


def meta_throughput(batch: int, unroll: int, truncations: int, rounds: int, device: str = "cpu",
                    grouped: bool | None = None, optimizee_only: bool = False) -> dict:
    """Inner steps per second: batched vs looped, interleaved rounds, medians (``device``: where
    the rule and the optimizees run; ``benchmarks/gpu_check.py`` passes cuda). ``grouped``: step
    all tensors of a task in one pass (True) or one pass per tensor (False) whatever the device;
    None keeps the rule's default for the device (``MLPRule.grouped_devices``).
    ``optimizee_only``: the same measurement with :class:`ScaledGradient` in place of the MLP rule
    (the ratio the optimizees' own forward and backward passes allow)."""
    from l2o.learned.mlp import MLPRule
    from l2o.meta.episode import MeanLogRatio, start_episode

    rule = (ScaledGradient() if optimizee_only else MLPRule()).to(device)
    if grouped is not None and not optimizee_only:
        rule.grouped_devices = frozenset({torch.device(device).type}) if grouped else frozenset()
    tasks = digits_tasks(batch)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    work = batch * unroll * truncations

    def timed(run) -> tuple[float, float]:
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        run()
        sync()
        return work / (time.perf_counter() - start), work / (time.process_time() - cpu)

    def batched():
        episode = start_episode(rule, tasks, list(range(batch)), 10**6)

        def run():
            for _ in range(truncations):
                episode.advance(rule, unroll, MeanLogRatio()).meta_loss.backward()
        return timed(run)

    def looped():
        episodes = [start_episode(rule, [t], [i], 10**6) for i, t in enumerate(tasks)]

        def run():
            for _ in range(truncations):
                for episode in episodes:
                    episode.advance(rule, unroll, MeanLogRatio()).meta_loss.backward()
        return timed(run)

    batched(), looped()  # warm up
    results = {"batched": [], "looped": []}
    for _ in range(rounds):
        results["batched"].append(batched())
        results["looped"].append(looped())
    b, lo = (statistics.median(x[0] for x in results[k]) for k in ("batched", "looped"))
    bc, lc = (statistics.median(x[1] for x in results[k]) for k in ("batched", "looped"))
    return {"batch": batch, "unroll": unroll, "truncations_per_round": truncations, "rounds": rounds,
            "batched_inner_steps_per_s": round(b, 1), "looped_inner_steps_per_s": round(lo, 1),
            "speedup": round(b / lo, 2),
            "per_cpu_second": {"batched_inner_steps": round(bc, 1), "looped_inner_steps": round(lc, 1),
                               "speedup": round(bc / lc, 2)}}


def one_million_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(1024, 768), torch.nn.ReLU(), torch.nn.Linear(768, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 10))


def many_tensors_model() -> torch.nn.Module:
    """A CNN of 10 conv layers (64 channels, 3x3) with batch norm and a linear head: 42 tensors, 32
    of them small (biases and normalization weights), 371,210 parameters."""
    torch.manual_seed(0)
    layers = []
    for _ in range(10):
        layers += [torch.nn.Conv2d(64, 64, 3), torch.nn.BatchNorm2d(64)]
    return torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(64, 10))


def mlp_rule():
    from l2o.learned.mlp import MLPRule
    from l2o.learned.weights import PRETRAINED

    return PRETRAINED.load("mlp-general") if "mlp-general" in PRETRAINED else MLPRule()


def lstm_rule():
    from l2o.learned.lstm import LSTMRule
    from l2o.learned.weights import PRETRAINED

    return PRETRAINED.load("l2l-digits") if "l2l-digits" in PRETRAINED else LSTMRule()


def build_optimizers(factories: dict, make_model) -> tuple[dict, dict, torch.nn.Module]:
    """One fresh model (``make_model()``, seeded gradients) and one optimizer per factory, each
    stepped once outside the timing (state allocation, and the fused passes' compilation, whose
    seconds are returned); also one model, for its sizes."""
    setups, first_step = {}, {}
    for name, factory in factories.items():
        model = make_model()
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen) * 1e-3
        opt = factory(model.parameters())
        start = time.perf_counter()
        opt.step()
        first_step[name] = round(time.perf_counter() - start, 3)
        setups[name] = opt
    return setups, first_step, model


def time_interleaved(setups: dict, rounds: int, steps_of) -> tuple[dict, dict]:
    """Wall-clock and process-CPU seconds per step of each optimizer, ``rounds`` rounds in which
    each runs ``steps_of(name)`` steps in turn (so that load from other processes hits all alike)."""
    times = {name: [] for name in setups}
    cpu = {name: [] for name in setups}
    for _ in range(rounds):
        for name, opt in setups.items():
            count = steps_of(name)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(count):
                opt.step()
            times[name].append((time.perf_counter() - start) / count)
            cpu[name].append((time.process_time() - cpu_start) / count)
    return times, cpu


def step_times_many_tensors(rounds: int, steps: int) -> dict:
    """Adam and the MLP optimizer (unfused and fused) on a model of many small tensors."""
    from l2o.learned.optimizer import LearnedOptimizer

    factories = {"adam (default)": lambda ps: torch.optim.Adam(ps),
                 "mlp learned optimizer": lambda ps: LearnedOptimizer(ps, rule=mlp_rule()),
                 "mlp learned optimizer, fused=True": lambda ps: LearnedOptimizer(ps, rule=mlp_rule(), fused=True)}
    setups, _, model = build_optimizers(factories, many_tensors_model)
    times, _ = time_interleaved(setups, rounds, lambda name: steps)
    adam = statistics.median(times["adam (default)"])
    return {"parameters": sum(p.numel() for p in model.parameters()), "tensors": len(list(model.parameters())),
            "rounds": rounds, "steps_per_round": steps,
            "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
            "ratio_to_adam": {k: round(statistics.median(v) / adam, 2) for k, v in times.items()}}


def step_times(rounds: int, steps: int) -> dict:
    from l2o.learned.adaptation import default_adapt
    from l2o.learned.optimizer import LearnedOptimizer

    class MatmulsOnly:
        """The MLP's matrix products alone (first layer, ReLU, output layer) over as many
        coordinates as the model has, in the deployment path's chunks: a floor for any
        implementation that evaluates the same network with these library matmuls."""

        def __init__(self, ps):
            rule = mlp_rule()
            self.n = sum(p.numel() for p in ps)
            self.chunk = rule.fast_chunk
            gen = torch.Generator().manual_seed(2)
            self.feats = torch.randn(rule.n_coord_features, self.chunk, generator=gen)
            self.hidden = torch.empty(rule.hidden, self.chunk)
            self.out = torch.empty(2, self.chunk)
            self.w1, self.b1 = rule.coord_in.weight.detach(), rule.coord_in.bias.detach().unsqueeze(1)
            self.w2, self.b2 = rule.head.weight.detach(), rule.head.bias.detach().unsqueeze(1)

        def step(self):
            for lo in range(0, self.n, self.chunk):
                c = min(self.chunk, self.n - lo)
                h = torch.addmm(self.b1, self.w1, self.feats[:, :c], out=self.hidden[:, :c]).relu_()
                torch.addmm(self.b2, self.w2, h, out=self.out[:, :c])

    factories = {
        "adam (default)": lambda ps: torch.optim.Adam(ps),
        "mlp matmuls only (floor)": lambda ps: MatmulsOnly(list(ps)),
        "mlp learned optimizer": lambda ps: LearnedOptimizer(ps, rule=mlp_rule()),
        "mlp learned optimizer, fused=True": lambda ps: LearnedOptimizer(ps, rule=mlp_rule(), fused=True),
        # mlp-general deploys with the per-tensor step-size adaptation (its card's default; one more buffer,
        # a dot product and two norms per tensor): the fused step with it off, and with it on at 0.1
        "mlp learned optimizer, fused=True, adapt=0": lambda ps: LearnedOptimizer(ps, rule=mlp_rule(), fused=True,
                                                                                   adapt=0.0),
        "mlp learned optimizer, fused=True, adapt=0.1": lambda ps: LearnedOptimizer(ps, rule=mlp_rule(), fused=True,
                                                                                     adapt=0.1),
        "lstm learned optimizer": lambda ps: LearnedOptimizer(ps, rule=lstm_rule()),
    }
    setups, first_step, model = build_optimizers(factories, one_million_model)
    # the LSTM takes seconds per step: one per round
    times, cpu = time_interleaved(setups, rounds, lambda name: 1 if name.startswith("lstm") else steps)
    adam, adam_cpu = statistics.median(times["adam (default)"]), statistics.median(cpu["adam (default)"])
    return {"parameters": sum(p.numel() for p in model.parameters()), "rounds": rounds, "steps_per_round": steps,
            "lstm_steps_per_round": 1, "lstm_weights": "l2l-digits", "mlp_weights": "mlp-general",
            "mlp_default_adapt": default_adapt(mlp_rule()),
            "first_step_seconds": first_step,
            "seconds_per_step": {k: statistics.median(v) for k, v in times.items()},
            "ratio_to_adam": {k: round(statistics.median(v) / adam, 2) for k, v in times.items()},
            "cpu_seconds_per_step": {k: statistics.median(v) for k, v in cpu.items()},
            "cpu_ratio_to_adam": {k: round(statistics.median(v) / adam_cpu, 2) for k, v in cpu.items()}}


def peak_memory(outer_steps: int) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(outer_steps)], capture_output=True, text=True,
                         check=True)
    before, after = (int(x) for x in out.stdout.split())
    scale = 1024 if sys.platform != "darwin" else 1  # KiB on Linux, bytes on macOS
    return {"outer_steps": outer_steps, "batch": 8, "unroll": 20,
            "peak_rss_mib_before_training": round(before * scale / 2**20, 1),
            "peak_rss_mib_after_training": round(after * scale / 2**20, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--truncations", type=int, default=3, help="truncations per throughput measurement")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per step-time measurement")
    parser.add_argument("--memory-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the throughput and step-time parts (default 1)")
    parser.add_argument("--grouped", action="store_true",
                        help="meta-training throughput with all tensors of a task in one pass of the rule "
                             "(the default on a GPU only)")
    parser.add_argument("--only", default=None, help=f"comma-separated parts (default: all): {','.join(PARTS)}")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mlp_lopt.json"))
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    parts = PARTS if args.only is None else args.only.split(",")
    if set(parts) - set(PARTS):
        parser.error(f"unknown parts {sorted(set(parts) - set(PARTS))}; there are {list(PARTS)}")
    torch.set_num_threads(args.threads)
    result = {"command": "python benchmarks/mlp_lopt.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
              "threads": args.threads}
    measurements = {
        "meta_training_memory": lambda: peak_memory(args.memory_steps),
        "meta_training_throughput": lambda: {
            **meta_throughput(8, 20, args.truncations, args.rounds, grouped=True if args.grouped else None),
            "optimizee_only": meta_throughput(8, 20, args.truncations, args.rounds, optimizee_only=True)},
        "step_time_1m": lambda: step_times(args.rounds, args.steps),
        "step_time_many_tensors": lambda: step_times_many_tensors(args.rounds, args.steps)}
    for part in PARTS:
        if part in parts:
            print(f"{part} ...", file=sys.stderr)
            result[part] = measurements[part]()
            print(json.dumps(result[part]), file=sys.stderr)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
