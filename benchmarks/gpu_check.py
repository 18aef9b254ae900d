"""Checks and step times of l2o's optimizers on a GPU (CUDA): correctness first, then speed.

Correctness (on ``--device``, float32 unless said):

- every ``l2o.optim`` optimizer: the multi-tensor path against the per-tensor loop over 5 steps
  (SGLD with a generator on the device, so that both draw the same noise);
- ``SGLD(noise="philox")``: the compiled update against the eager formula, the Philox words on the
  device against the CPU's (the same integers: chains do not depend on the device), and the
  mean and variance of a million normals;
- ``torch.compile(HAdam.step)`` against the eager step;
- the learned optimizers (``mlp-general`` on the 1M-parameter model of ``mlp_lopt.py``, unfused
  and with ``fused=True``, as shipped (with the step-size adaptation) and with ``adapt=0``, ``l2l-digits``
  on a small one and on the 1M-parameter one, where the CPU steps it in chunks; ``--weights
  FILE`` adds a rule of one's own, deployed as its card says): three steps on the device against
  the same (unfused) steps on the CPU;
- meta-training (``MetaTrainer``, each estimator, 10 outer steps) on the device against the CPU.

Speed: each optimizer's ``step()`` on the 50 tensors of ``step_time.py`` (2.7M parameters), as
ratios to ``torch.optim.Adam()`` (default settings: foreach on CUDA) and ``Adam(fused=True)``,
timed with device synchronization, medians of interleaved rounds; and the learned optimizers'
step on the 1M-parameter model against Adam's; meta-training throughput of 8 and 64 digits-MLP
instances advanced together against one at a time (``mlp_lopt.py``'s measurement, on the device).

Usage::

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --device cpu --rounds 2 --out /tmp/gpu_check_cpu.json   # dry run
    python benchmarks/gpu_check.py --only learned_step_time_1M --out /tmp/learned.json        # one section
    python benchmarks/gpu_check.py --only learned_step_time_1M --weights run/weights.safetensors
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

import l2o.optim  # noqa: E402
from l2o.io import atomic_write_text  # noqa: E402
import mlp_lopt  # noqa: E402
from step_time import make_tensors  # noqa: E402


def small_params(device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(64, 32), (32,), (7, 5, 3), (0, 4)]
    return [torch.randn(s, generator=gen).to(device).requires_grad_() for s in shapes]


def grads_for(params, step):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=gen).to(p.device) * 0.1 for p in params]


def drive(optimizer, params, steps=5):
    for step in range(steps):
        for p, g in zip(params, grads_for(params, step)):
            p.grad = g.clone()
        optimizer.step()


def foreach_parity(device) -> dict:
    out = {}
    for name in l2o.optim.available():
        results = []
        for foreach in (False, True):
            params = small_params(device)
            kwargs = {"foreach": foreach}
            if name == "sgld":
                kwargs["generator"] = torch.Generator(device=device).manual_seed(0)
            drive(l2o.optim.create(name, params, **kwargs), params)
            results.append([p.detach().cpu() for p in params])
        diff = max(float((a - b).abs().max()) if a.numel() else 0.0 for a, b in zip(*results))
        finite = all(bool(torch.isfinite(p).all()) for p in results[1])
        moved = float((results[1][0] - small_params("cpu")[0].detach()).abs().max())
        out[name] = {"max_abs_diff_foreach_vs_loop": diff, "finite": finite, "moved": moved}
    return out


def philox_checks(device) -> dict:
    from l2o.optim import _philox
    from l2o.optim.sgld import _fused_langevin_

    key, stream, step = torch.tensor([5, 7], dtype=torch.int64), torch.tensor(3), torch.tensor(11)
    words_cpu = _philox.philox4x32(torch.arange(4096, dtype=torch.int64), 3, 11, 0, 5, 7)
    words_dev = _philox.philox4x32(torch.arange(4096, dtype=torch.int64, device=device), 3, 11, 0, 5, 7)
    same_words = all(torch.equal(a, b.cpu()) for a, b in zip(words_cpu, words_dev))
    z = _philox.philox_normal(1_000_000, stream, step, key.to(device), dtype=torch.float32, device=device)
    z_cpu = _philox.philox_normal(1_000_000, stream, step, key, dtype=torch.float32)
    grad = torch.randn(100_003, generator=torch.Generator().manual_seed(0)).to(device)
    eager, compiled = torch.zeros_like(grad), torch.zeros_like(grad)
    drift, scale = torch.tensor(-0.5, device=device), torch.tensor(0.1, device=device)
    counter = _philox.block_counter(grad.numel(), device)
    _philox.langevin_update_(eager, grad, drift, scale, stream.to(device), step.to(device), key.to(device), counter)
    assert _fused_langevin_(compiled, grad, drift, scale, stream.to(device), step.to(device), key.to(device), counter)
    return {"words_equal_cpu": same_words, "normal_mean": float(z.mean()), "normal_var": float(z.var()),
            "normal_max_abs_diff_vs_cpu": float((z.cpu() - z_cpu).abs().max()),
            "compiled_vs_eager_max_abs_diff": float((compiled - eager).abs().max())}


def compiled_hadam(device) -> dict:
    eager_p, compiled_p = small_params(device), small_params(device)
    eager, compiled = l2o.optim.HAdam(eager_p, lr=0.05), l2o.optim.HAdam(compiled_p, lr=0.05)
    step = torch.compile(compiled.step)
    drive(eager, eager_p)
    for s in range(5):
        for p, g in zip(compiled_p, grads_for(compiled_p, s)):
            p.grad = g.clone()
        step()
    return {"max_abs_diff": max(float((a - b).detach().abs().max()) if a.numel() else 0.0
                                for a, b in zip(eager_p, compiled_p))}


def one_million_model(device):
    return mlp_lopt.one_million_model().to(device)  # the model of benchmarks/mlp_lopt.py


def load_learned(weights: str, params, **options):
    """A shipped name (``mlp-general``) or a weights file of ``l2o meta train``."""
    from l2o.learned.optimizer import LearnedOptimizer
    from l2o.learned.weights import load_weights

    return LearnedOptimizer(params, rule=load_weights(weights), **options)


def learned_vs_cpu(device, weights: str | None = None) -> dict:
    out = {}
    def small_model(dev):
        torch.manual_seed(0)
        return torch.nn.Linear(64, 10).to(dev)

    # (label, weights, model, options of both runs, options of the device run only): the CPU
    # reference is the unfused step, so the fused pass on the device is checked against it
    # mlp-general deploys with the step-size adaptation (its card's default): also checked without it
    cases = [("mlp-general", "mlp-general", one_million_model, {}, {}),
             ("mlp-general fused=True", "mlp-general", one_million_model, {}, {"fused": True}),
             ("mlp-general adapt=0", "mlp-general", one_million_model, {"adapt": 0.0}, {}),
             ("mlp-general fused=True adapt=0", "mlp-general", one_million_model, {"adapt": 0.0}, {"fused": True}),
             ("l2l-digits", "l2l-digits", small_model, {}, {}),
             ("l2l-digits 1M", "l2l-digits", one_million_model, {}, {})]
    if weights is not None:
        cases += [(f"{weights}", weights, one_million_model, {}, {}),
                  (f"{weights} fused=True", weights, one_million_model, {}, {"fused": True})]
    for label, name, make, options, device_options in cases:
        finals = []
        for i, dev in enumerate(("cpu", device)):
            model = make(dev)
            params = list(model.parameters())
            optimizer = load_learned(name, params, **options, **(device_options if i == 1 else {}))
            for step in range(3):
                for p, g in zip(params, grads_for([q.detach().cpu() for q in params], step)):
                    p.grad = (g * 0.01).to(dev)
                optimizer.step()
            finals.append(torch.cat([p.detach().cpu().flatten() for p in params]))
        start = torch.cat([p.detach().flatten() for p in make("cpu").parameters()])
        moved = float((finals[0] - start).abs().max())
        out[label] = {"max_abs_diff_vs_cpu": float((finals[0] - finals[1]).abs().max()), "max_step_cpu": moved}
    return out


def meta_training_vs_cpu(device) -> dict:
    """A few outer steps of ``MetaTrainer`` (each estimator) on the device and on the CPU, from the
    same seeds: how far apart the meta-trained rules end, beside how far training moved them."""
    from l2o.learned.mlp import MLPRule
    from l2o.meta.trainer import MetaConfig, MetaTrainer
    from l2o.tasks.mlp_problems import MLPProblemFamily

    out = {}
    # (label, estimator, rule options, trainer options); the last: the shipped recipe's stage 1
    # (Adam's ratios, under the adaptation)
    cases = (("bptt", "bptt", {}, {}), ("es", "es", {}, {}), ("pes", "pes", {}, {}),
             ("bptt adam_ratios adapt=0.1", "bptt", {"adam_ratios": True}, {"adapt": 0.1}))
    for label, estimator, rule_options, options in cases:
        vectors = []
        for dev in ("cpu", device):
            torch.manual_seed(0)
            rule = MLPRule(**rule_options).to(dev)
            start = torch.nn.utils.parameters_to_vector(rule.parameters()).detach().cpu()
            family = MLPProblemFamily(widths=(16, 32), depths=(1, 2), batch_sizes=(32, 64), horizon=(100, 100))
            config = MetaConfig(estimator=estimator, outer_steps=10, batch_size=8, groups=2, unroll=10, val_every=0,
                                   **options)
            MetaTrainer(rule, family, config, directory=None, log=False).train(progress_bar=False)
            vectors.append(torch.nn.utils.parameters_to_vector(rule.parameters()).detach().cpu())
        out[label] = {"max_abs_diff_vs_cpu": float((vectors[0] - vectors[1]).abs().max()),
                      "max_change_cpu": float((vectors[0] - start).abs().max())}
    return out


def meta_training_speed(device) -> dict:
    """``mlp_lopt.py``'s meta-training throughput (digits MLP instances, batched against one at a
    time) on the device, for 8 and 64 instances, with the device's peak memory of the batched run."""
    out = {}
    for batch in (8, 64):
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        out[f"batch_{batch}"] = mlp_lopt.meta_throughput(batch, 20, 2, 3, device=device)
        if torch.device(device).type == "cuda":
            out[f"batch_{batch}"]["peak_device_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(setups: dict, device, rounds: int, steps: int) -> dict:
    for optimizer in setups.values():  # warm-up, compile
        for _ in range(3):
            optimizer()
    synchronize(device)
    times = {name: [] for name in setups}
    for _ in range(rounds):
        for name, optimizer in setups.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                optimizer()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def optimizer_speed(device, rounds: int, steps: int) -> dict:
    def tensors():
        params = [p.detach().to(device).requires_grad_() for p in make_tensors()]
        for p, q in zip(params, make_tensors()):
            p.grad = q.grad.to(device)
        return params

    configs = {"adam (default)": lambda ps: torch.optim.Adam(ps).step,
               "adam fused": lambda ps: torch.optim.Adam(ps, fused=True).step,
               "hadam": lambda ps: l2o.optim.HAdam(ps).step,
               "hadam compiled": lambda ps: torch.compile(l2o.optim.HAdam(ps).step),
               "sgld": lambda ps: l2o.optim.SGLD(ps).step,
               "sgld noise=philox": lambda ps: l2o.optim.SGLD(ps, noise="philox").step,
               "sgdhd": lambda ps: l2o.optim.SGDHD(ps).step,
               "adamhd": lambda ps: l2o.optim.AdamHD(ps).step,
               "yellowfin": lambda ps: l2o.optim.YellowFin(ps).step}
    setups = {name: make(tensors()) for name, make in configs.items()}
    seconds = time_steps(setups, device, rounds, steps)
    adam, fused = seconds["adam (default)"], seconds["adam fused"]
    return {name: {"ms": 1e3 * s, "ratio_to_adam": s / adam, "ratio_to_fused_adam": s / fused}
            for name, s in seconds.items()}


def learned_speed(device, rounds: int, steps: int, weights: str | None = None) -> dict:
    def setup(factory):
        model = one_million_model(device)
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-3).to(device)
        return factory(list(model.parameters())).step

    setups = {"adam (default)": setup(lambda ps: torch.optim.Adam(ps)),
              "mlp-general": setup(lambda ps: load_learned("mlp-general", ps)),
              "mlp-general fused=True": setup(lambda ps: load_learned("mlp-general", ps, fused=True)),
              "mlp-general adapt=0": setup(lambda ps: load_learned("mlp-general", ps, adapt=0.0)),
              "mlp-general fused=True adapt=0": setup(lambda ps: load_learned("mlp-general", ps, fused=True, adapt=0.0)),
              "mlp-general-v1 fused=True": setup(lambda ps: load_learned("mlp-general-v1", ps, fused=True)),
              "l2l-digits (LSTM)": setup(lambda ps: load_learned("l2l-digits", ps))}
    if weights is not None:  # deployed as its card says (adaptation included)
        setups[weights] = setup(lambda ps: load_learned(weights, ps))
        setups[f"{weights} fused=True"] = setup(lambda ps: load_learned(weights, ps, fused=True))
    seconds = time_steps(setups, device, rounds, steps)
    adam = seconds["adam (default)"]
    return {name: {"ms": 1e3 * s, "ratio_to_adam": s / adam} for name, s in seconds.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_check.json"))
    parser.add_argument("--only", default=None, help="comma-separated section names (default: all)")
    parser.add_argument("--weights", default=None,
                        help="a weights file of `l2o meta train` to check and time beside the shipped rules")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (use --device cpu for a dry run)", file=sys.stderr)
        return 0
    torch._dynamo.config.recompile_limit = 64  # every optimizer's step goes through one wrapper
    report = {"command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "torch": torch.__version__, "python": platform.python_version(),
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()}
    sections = [("foreach_vs_loop", foreach_parity), ("sgld_philox", philox_checks),
                ("hadam_compiled_vs_eager", compiled_hadam), ("learned_device_vs_cpu", lambda d: learned_vs_cpu(d, args.weights)),
                ("step_time_2_7M", lambda d: optimizer_speed(d, args.rounds, args.steps)),
                ("learned_step_time_1M", lambda d: learned_speed(d, args.rounds, max(1, args.steps // 5), args.weights)),
                ("meta_training_vs_cpu", meta_training_vs_cpu), ("meta_training_throughput", meta_training_speed)]
    if args.only is not None:
        wanted = set(args.only.split(","))
        unknown = wanted - {name for name, _ in sections}
        if unknown:
            parser.error(f"unknown sections {sorted(unknown)}; there are {[name for name, _ in sections]}")
        sections = [(name, fn) for name, fn in sections if name in wanted]
    for name, fn in sections:
        start = time.perf_counter()
        try:
            report[name] = fn(args.device)
        except Exception as error:  # report and go on: one failure should not hide the rest
            report[name] = {"error": f"{type(error).__name__}: {error}"}
        print(f"{name} ({time.perf_counter() - start:.1f} s): {json.dumps(report[name])}", flush=True)
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
