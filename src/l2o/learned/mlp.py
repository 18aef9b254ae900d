"""A per-parameter MLP learned optimizer (the line of learned_optimization's ``MLPLOpt``).

Every coordinate of the optimizee is described by a small feature vector built from a few
accumulators (momenta at several timescales and a second moment), each feature normalized by
its root-mean-square over the tensor the coordinate belongs to. One small MLP, shared by all
coordinates, maps the features to a direction ``d`` and a log-magnitude ``s``; the step is

    p <- p - step_mult * d * exp(exp_mult * s)

There is no recurrent state per coordinate: the memory cost is ``len(betas) + 1`` accumulators
per parameter (plus one step counter per tensor), and a step costs one small matmul per
coordinate. See ``docs/methods/mlp_lopt.md`` for the equations, defaults and deviations.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from l2o.learned.base import LearnedRule, ParamDict, StateDict

DEFAULT_BETAS = (0.5, 0.9, 0.99, 0.999)
DEFAULT_TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)


def progress_features(step: Tensor, timescales: Tensor) -> Tensor:
    """Training-progress encoding ``tanh(step / tau - 1)`` for each timescale ``tau``."""
    return torch.tanh(step.to(timescales.dtype) / timescales - 1.0)


class MLPRule(LearnedRule):
    """Per-parameter MLP update rule.

    Per-coordinate features (each divided by its RMS over the tensor, per task when batched):
    the gradient ``g``, the momenta ``m_b`` for every ``b`` in ``betas``, ``sqrt(v)`` (the RMS
    accumulator with decay ``rms_beta``), the parameter ``p``, ``g / sqrt(v)`` and
    ``m_b / sqrt(v)``. Features shared by the whole tensor (the training-progress encoding
    ``tanh(t / tau - 1)``) enter as a per-tensor bias of the first layer, which is the same
    as concatenating them to every coordinate but cheaper.

    Args:
        hidden: width of each hidden layer.
        hidden_layers: number of hidden layers (ReLU).
        betas: momentum decays.
        rms_beta: decay of the second-moment accumulator.
        timescales: timescales of the training-progress features.
        step_mult: scale of the step (an untrained net makes tiny steps).
        exp_mult: scale of the log-magnitude output.
        eps: added to mean squares before the square root (normalizers and ``1/sqrt(v)``).
    """

    kind = "mlp"

    def __init__(self, hidden: int = 16, hidden_layers: int = 1, betas=DEFAULT_BETAS, rms_beta: float = 0.999,
                 timescales=DEFAULT_TIMESCALES, step_mult: float = 0.01, exp_mult: float = 0.1, eps: float = 1e-12):
        super().__init__()
        if hidden < 1 or hidden_layers < 0:
            raise ValueError(f"need hidden >= 1 and hidden_layers >= 0, got hidden={hidden}, hidden_layers={hidden_layers}")
        betas = tuple(float(b) for b in betas)
        if not betas or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be a non-empty list of decays in [0, 1), got {betas}")
        if not 0.0 <= rms_beta < 1.0:
            raise ValueError(f"rms_beta must be in [0, 1), got {rms_beta}")
        if step_mult <= 0 or exp_mult < 0:
            raise ValueError(f"need step_mult > 0 and exp_mult >= 0, got step_mult={step_mult}, exp_mult={exp_mult}")
        self.hidden, self.hidden_layers = int(hidden), int(hidden_layers)
        self.betas, self.rms_beta = betas, float(rms_beta)
        self.timescales_list = tuple(float(t) for t in timescales)
        self.step_mult, self.exp_mult, self.eps = float(step_mult), float(exp_mult), float(eps)
        self.register_buffer("beta_vec", torch.tensor(betas), persistent=False)
        self.register_buffer("timescales", torch.tensor(self.timescales_list), persistent=False)
        nb = len(betas)
        self.n_coord_features = 1 + nb + 1 + 1 + 1 + nb  # g, m_b, sqrt(v), p, g/sqrt(v), m_b/sqrt(v)
        self.n_global_features = len(self.timescales_list)
        width_in = self.n_coord_features
        # First layer split in two: per-coordinate part and per-tensor (global) part.
        self.coord_in = nn.Linear(width_in, hidden if hidden_layers else 2, bias=True)
        self.global_in = nn.Linear(self.n_global_features, hidden if hidden_layers else 2, bias=False)
        self.hidden_stack = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(max(hidden_layers - 1, 0)))
        self.head = nn.Linear(hidden, 2) if hidden_layers else None
        self._init_weights()

    def _init_weights(self) -> None:
        gen = torch.Generator().manual_seed(0)
        for lin in [self.coord_in, self.global_in, *self.hidden_stack] + ([self.head] if self.head else []):
            fan_in = lin.weight.shape[1]
            with torch.no_grad():
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if lin.bias is not None:
                    lin.bias.zero_()
        if self.head is not None:
            with torch.no_grad():  # small outputs at first: tiny, nearly random steps
                self.head.weight.mul_(0.1)

    def config(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "hidden_layers": self.hidden_layers, "betas": list(self.betas),
                "rms_beta": self.rms_beta, "timescales": list(self.timescales_list), "step_mult": self.step_mult,
                "exp_mult": self.exp_mult, "eps": self.eps}

    def init_state(self, params: ParamDict) -> StateDict:
        return {name: self._fresh_state(p, batch_dims=0) for name, p in params.items()}

    def init_state_batched(self, params: ParamDict, batch_dims: int = 1) -> StateDict:
        """Fresh state for parameters stacked along ``batch_dims`` leading task dimensions."""
        return {name: self._fresh_state(p, batch_dims) for name, p in params.items()}

    def _fresh_state(self, p: Tensor, batch_dims: int) -> dict[str, Tensor]:
        # Momenta stacked on a "beta" axis placed right after the task dimensions, so that each
        # (task, beta) slice is contiguous and the feature matrix is built without transposes.
        shape = (*p.shape[:batch_dims], len(self.betas), *p.shape[batch_dims:])
        return {"m": torch.zeros(shape, dtype=p.dtype, device=p.device),
                "v": torch.zeros_like(p),
                "step": torch.zeros((), dtype=p.dtype, device=p.device)}

    def update(self, grads: ParamDict, state: StateDict, params: ParamDict,
               batch_dims: int = 0) -> tuple[ParamDict, StateDict]:
        """One step for every tensor in ``params``.

        Args:
            grads, state, params: dicts keyed by parameter name (see ``LearnedRule``).
            batch_dims: 0, or 1 when every tensor is a stack of independent tasks along its
                first dimension (batched meta-training); normalization is then per task.
        """
        if batch_dims not in (0, 1):
            raise ValueError(f"batch_dims must be 0 or 1, got {batch_dims}")
        new_params, new_state = {}, {}
        for name, p in params.items():
            g = grads.get(name)
            if g is None:  # a frozen or unused tensor keeps its value and state
                new_params[name], new_state[name] = p, state[name]
                continue
            if batch_dims == 0 and not torch.is_grad_enabled() and p.numel() > self.fast_threshold:
                new_params[name], new_state[name] = self._update_tensor_fast(p, g, state[name])
            else:
                new_params[name], new_state[name] = self._update_tensor(p, g, state[name], batch_dims)
        return new_params, new_state

    #: tensors larger than this take the chunked path when no gradient is being recorded.
    fast_threshold: int = 65536
    fast_chunk: int = 65536

    def _update_tensor_fast(self, p: Tensor, g: Tensor, st: dict[str, Tensor]):
        """The same step as :meth:`_update_tensor` (deployment, no autograd), computed in chunks of
        coordinates so that the feature matrix and hidden activations stay in cache, with the
        per-tensor normalization folded into the first layer."""
        n, nb = p.numel(), len(self.betas)
        dtype = p.dtype
        beta = self.beta_vec.to(dtype).unsqueeze(1)
        one_minus_beta = 1.0 - beta
        gf, pf = g.reshape(n), p.reshape(n)
        m_old, v_old = st["m"].reshape(nb, n), st["v"].reshape(n)
        m, v = torch.empty_like(m_old), torch.empty_like(v_old)
        new_p = torch.empty_like(pf)
        step = st["step"] + 1
        nf = self.n_coord_features
        chunk = min(self.fast_chunk, n)
        buf = torch.empty(nf, chunk, dtype=dtype, device=p.device)
        rbuf = torch.empty(chunk, dtype=dtype, device=p.device)

        def features(lo: int, hi: int) -> Tensor:
            c = hi - lo
            f, r = buf[:, :c], rbuf[:c]
            torch.add(v[lo:hi], self.eps, out=r)
            r.rsqrt_()
            f[0].copy_(gf[lo:hi])
            f[1:1 + nb].copy_(m[:, lo:hi])
            torch.sqrt(v[lo:hi], out=f[1 + nb])
            f[2 + nb].copy_(pf[lo:hi])
            torch.mul(gf[lo:hi], r, out=f[3 + nb])
            torch.mul(m[:, lo:hi], r, out=f[4 + nb:])
            return f

        # Pass 1: accumulators, and each feature's sum of squares without building the features:
        # (sqrt v)^2 = v, (g r)^2 = g^2 / (v + eps), (m r)^2 = m^2 / (v + eps).
        sumsq = torch.zeros(nf, dtype=torch.float64, device=p.device)
        inv = torch.empty(chunk, dtype=dtype, device=p.device)
        tmp = torch.empty(chunk, dtype=dtype, device=p.device)
        msq = torch.empty(nb, chunk, dtype=dtype, device=p.device)
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            c = hi - lo
            gc, pc, vc, mc = gf[lo:hi], pf[lo:hi], v[lo:hi], m[:, lo:hi]
            torch.mul(m_old[:, lo:hi], beta, out=mc).addcmul_(one_minus_beta, gc.unsqueeze(0))
            torch.mul(v_old[lo:hi], self.rms_beta, out=vc).addcmul_(gc, gc, value=1.0 - self.rms_beta)
            torch.add(vc, self.eps, out=inv[:c]).reciprocal_()
            torch.mul(mc, mc, out=msq[:, :c])
            torch.mul(gc, inv[:c], out=tmp[:c])
            parts = torch.stack([torch.dot(gc, gc), vc.sum(), torch.dot(pc, pc), torch.dot(tmp[:c], gc)])
            sumsq[0] += parts[0]
            sumsq[1:1 + nb] += msq[:, :c].sum(dim=1)
            sumsq[1 + nb:3 + nb] += parts[1:3]
            sumsq[3 + nb] += parts[3]
            sumsq[4 + nb:] += torch.mv(msq[:, :c], inv[:c])
        scale = torch.rsqrt((sumsq / n).to(dtype) + self.eps)
        w_in = self.coord_in.weight * scale.unsqueeze(0)
        bias = (self.coord_in.bias + self.global_in(progress_features(step, self.timescales.to(dtype)))).unsqueeze(1)
        hidden = torch.empty(w_in.shape[0], chunk, dtype=dtype, device=p.device)
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            f = features(lo, hi)
            h = torch.addmm(bias, w_in, f, out=hidden[:, : hi - lo])
            if self.head is not None:
                h.relu_()
                for lin in self.hidden_stack:
                    h = torch.relu(torch.addmm(lin.bias.unsqueeze(1), lin.weight, h))
                h = torch.addmm(self.head.bias.unsqueeze(1), self.head.weight, h)
            delta = h[1].mul(self.exp_mult).exp_().mul_(h[0]).mul_(self.step_mult)
            torch.sub(pf[lo:hi], delta, out=new_p[lo:hi])
        return new_p.view_as(p), {"m": m.view_as(st["m"]), "v": v.view_as(p), "step": step}

    def _update_tensor(self, p: Tensor, g: Tensor, st: dict[str, Tensor], batch_dims: int):
        tasks = p.shape[0] if batch_dims else 1
        n = p[0].numel() if batch_dims else p.numel()
        nb = len(self.betas)
        beta = self.beta_vec.to(p.dtype).view(1, nb, 1)
        g2 = g.reshape(tasks, 1, n)
        m = st["m"].reshape(tasks, nb, n) * beta + g2 * (1.0 - beta)
        v = st["v"].reshape(tasks, 1, n) * self.rms_beta + g2.square() * (1.0 - self.rms_beta)
        step = st["step"] + 1
        new_state = {"m": m.reshape(st["m"].shape), "v": v.reshape(p.shape), "step": step}
        if n == 0:
            return p, new_state
        r = torch.rsqrt(v + self.eps)
        p2 = p.reshape(tasks, 1, n)
        # Feature matrix (tasks, features, coordinates): one contiguous row per feature.
        feats = torch.cat([g2, m, v.sqrt(), p2, g2 * r, m * r], dim=1)
        # Second-moment normalization per (task, feature), folded into the first layer's weights.
        scale = torch.rsqrt(feats.square().mean(dim=-1) + self.eps)  # (tasks, F)
        w_in = self.coord_in.weight.unsqueeze(0) * scale.unsqueeze(1)  # (tasks, H, F)
        bias = self.coord_in.bias + self.global_in(progress_features(step, self.timescales.to(p.dtype)))
        bias = bias.view(1, -1, 1).expand(tasks, -1, 1)
        chunk = n if torch.is_grad_enabled() else 32768  # cache-sized chunks when deployed
        outs = []
        for lo in range(0, n, chunk):
            h = torch.baddbmm(bias, w_in, feats[..., lo:lo + chunk])  # (tasks, H, c)
            if self.head is not None:
                h = torch.relu(h)
                for lin in self.hidden_stack:
                    h = torch.relu(torch.baddbmm(lin.bias.view(1, -1, 1), lin.weight.expand(tasks, -1, -1), h))
                h = torch.baddbmm(self.head.bias.view(1, -1, 1), self.head.weight.expand(tasks, -1, -1), h)
            outs.append(h)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # (tasks, 2, n)
        delta = out[:, 0] * torch.exp(out[:, 1] * self.exp_mult) * self.step_mult
        return p - delta.reshape(p.shape), new_state
