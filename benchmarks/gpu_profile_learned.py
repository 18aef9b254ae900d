"""Where the MLP learned optimizer's step spends its time on a GPU: a ``torch.profiler`` table.

For the unfused and the fused (``fused=True``) step of ``mlp-general`` on the 1M-parameter model
of ``mlp_lopt.py``, after five warm-up steps, ten profiled steps: kernel launches, memory
copies and synchronizations per step, then the operators by CPU time (the table's "Self CUDA
time total", divided by ten, is how long the GPU was busy per step). A diagnosis tool, not a
benchmark: it prints and writes nothing.

Usage (on a machine with CUDA)::

    PYTHONPATH=src python3 benchmarks/gpu_profile_learned.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))

import mlp_lopt  # noqa: E402
from l2o.learned.optimizer import LearnedOptimizer  # noqa: E402

STEPS = 10


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to profile", file=sys.stderr)
        return 0
    for fused in (False, True):
        model = mlp_lopt.one_million_model().cuda()
        gen = torch.Generator().manual_seed(1)
        for p in model.parameters():
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-3).cuda()
        optimizer = LearnedOptimizer.pretrained("mlp-general", list(model.parameters()), fused=fused)
        for _ in range(5):
            optimizer.step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(STEPS):
                optimizer.step()
            torch.cuda.synchronize()
        events = prof.key_averages()

        def per_step(match) -> float:
            return sum(e.count for e in events if match(e.key)) / STEPS

        launches = per_step(lambda k: k in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))
        print(f"fused={fused}: kernel launches per step {launches:.0f}; "
              f"memory copies (cudaMemcpyAsync) {per_step(lambda k: k == 'cudaMemcpyAsync'):.1f}; "
              f"synchronizations {per_step(lambda k: 'Synchronize' in k):.1f}")
        print(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=45))
    return 0


if __name__ == "__main__":
    sys.exit(main())
