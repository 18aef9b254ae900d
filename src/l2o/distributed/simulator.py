"""K virtual workers and a virtual server in one process, seeded.

The loop is the one the DDP hook runs across processes: every worker computes its gradient on
its own batch and encodes it tensor by tensor (:meth:`Algorithm.worker_encode`); the server
decodes, steps and encodes its reply (:meth:`Algorithm.server_step`); the reply is decoded into a
direction that ``torch.optim.SGD(lr)`` applies. The same seeds give the same numbers as
real processes (tested).
"""

from __future__ import annotations

import math

import torch

from .algorithms import SERVER_ROLE, Algorithm, generator_for
from .problems import Problem


def simulate(problem: Problem, algorithm: Algorithm, lr: float, steps: int, *, seed: int = 0,
             eval_every: int = 0, record_residuals: bool = False, progress: bool = False,
             desc: str | None = None) -> dict:
    """Run ``steps`` steps with ``problem.workers`` virtual workers.

    Returns ``{"loss": [mean minibatch loss per step], "worker_loss": [[per worker] per step],
    "eval": [(step, full training loss)], "bits": [cumulative bits after each step],
    "params": final flat parameters, "diverged": bool}`` and, with ``record_residuals``, the
    norms of what each side compressed per step (``"worker_residual"``: mean over workers of
    ‖Δᵢ‖ for DORE/DIANA (‖gᵢ + mᵢ‖ etc. for the others), ``"server_residual"``: ‖q‖).
    """
    if lr <= 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be positive and finite, got {lr!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    model = problem.make_model()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, foreach=False)
    K = problem.workers
    live = [i for i, p in enumerate(params) if p.numel() > 0]
    workers = [{i: algorithm.init_worker(params[i].numel(), params[i].dtype) for i in live} for _ in range(K)]
    server = {i: algorithm.init_server(params[i].numel(), params[i].dtype) for i in live}
    out = {"loss": [], "worker_loss": [], "eval": [], "bits": [], "diverged": False}
    if record_residuals:
        out["worker_residual"], out["server_residual"] = [], []
    bits = 0
    if eval_every:
        out["eval"].append((0, problem.full_loss(model)))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc=desc or algorithm.name, leave=False)
    for step in range(steps):
        payloads = {i: [] for i in live}
        losses, wres = [], 0.0
        for w in range(K):
            model.zero_grad(set_to_none=True)
            loss = problem.loss(model, problem.worker_batch(w, step))
            loss.backward()
            losses.append(float(loss.detach()))
            sq = 0.0
            for i in live:
                g = params[i].grad.reshape(-1)
                state = workers[w][i]
                if record_residuals:
                    sq += float(_compressed_input(algorithm, state, g).pow(2).sum())
                payload = algorithm.worker_encode(state, g, generator_for(seed, step, w, i))
                payloads[i].append(payload)
                bits += 8 * payload.numel()
            wres += math.sqrt(sq) / K
        sres = 0.0
        for i in live:
            p = params[i]
            down = algorithm.server_step(server[i], payloads[i], p.numel(), p.dtype,
                                         generator_for(seed, step, SERVER_ROLE, i))
            bits += 8 * down.numel() * K
            if record_residuals:
                sres += server[i].get("last_residual_norm", 0.0) ** 2
            p.grad = algorithm.worker_decode(workers[0][i], down, p.numel(), p.dtype).view_as(p)
        opt.step()
        out["loss"].append(sum(losses) / K)
        out["worker_loss"].append(losses)
        out["bits"].append(bits)
        if record_residuals:
            out["worker_residual"].append(wres)
            out["server_residual"].append(math.sqrt(sres))
        if eval_every and ((step + 1) % eval_every == 0 or step + 1 == steps):
            out["eval"].append((step + 1, problem.full_loss(model)))
        if bar is not None:
            bar.update(1)
        if not math.isfinite(out["loss"][-1]):
            out["diverged"] = True
            break
    if bar is not None:
        bar.close()
    out["params"] = torch.cat([p.detach().reshape(-1) for p in params]).tolist()
    return out


def _compressed_input(algorithm, state, g):
    """What the worker side is about to compress (for residual-norm plots)."""
    if "h" in state:
        return g - state["h"]
    if "m" in state:
        return g + state["m"]
    if "delta" in state:
        return g + state["delta"]
    return g
