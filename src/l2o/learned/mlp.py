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
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from l2o.learned._mlp_kernel import fused_accumulate_, fused_mlp_step_
from l2o.learned.base import LearnedRule, ParamDict, StateDict, apply_step_

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
    ``tanh(t / tau - 1)``, and with ``tensor_features`` the scale of the tensor) enter as a
    per-tensor bias of the first layer, which is the same as concatenating them to every
    coordinate but cheaper.

    Args:
        hidden: width of each hidden layer.
        hidden_layers: number of hidden layers (ReLU).
        betas: momentum decays.
        rms_beta: decay of the second-moment accumulator.
        timescales: timescales of the training-progress features.
        step_mult: scale of the step (an untrained net makes tiny steps).
        exp_mult: scale of the log-magnitude output.
        eps: added to mean squares before the square root (normalizers and ``1/sqrt(v)``).
        tensor_features: also give the network the scale the normalization divides out:
            ``0.2 * log RMS`` over the tensor of ``g``, ``sqrt(v)`` and ``p`` (three more
            per-tensor features). Without them the rule is blind to the problem's scale.
        adam_ratios: leave the ratio features ``g / sqrt(v)`` and ``m_b / sqrt(v)`` unnormalized,
            with Adam's bias corrections instead (``g / sqrt(v_hat)``, ``m_hat_b / sqrt(v_hat)``).
            They are free of the problem's scale already, and their size is the signal-to-noise
            information Adam's step shrinks with; dividing them by their RMS over the tensor
            removes it (on a one-element tensor it leaves only signs).
    """

    kind = "mlp"
    supports_batching = True
    supports_in_place = True
    #: ``update_(..., fused=True)`` exists (``LearnedOptimizer(fused=True)``)
    supports_fused = True

    def __init__(self, hidden: int = 16, hidden_layers: int = 1, betas=DEFAULT_BETAS, rms_beta: float = 0.999,
                 timescales=DEFAULT_TIMESCALES, step_mult: float = 0.01, exp_mult: float = 0.1, eps: float = 1e-12,
                 tensor_features: bool = False, adam_ratios: bool = False):
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
        self.tensor_features = bool(tensor_features)
        self.adam_ratios = bool(adam_ratios)
        # rows of the feature matrix whose log-RMS are the tensor features: g, sqrt(v), p
        self.scale_rows = (0, nb + 1, nb + 2)
        self.n_global_features = len(self.timescales_list) + (len(self.scale_rows) if self.tensor_features else 0)
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
                "exp_mult": self.exp_mult, "eps": self.eps, "tensor_features": self.tensor_features, "adam_ratios": self.adam_ratios}

    def init_state(self, params: ParamDict, batch_dims: int = 0) -> StateDict:
        """Fresh state, for parameters stacked along ``batch_dims`` leading task dimensions."""
        return {name: self._fresh_state(p, batch_dims) for name, p in params.items()}

    def _fresh_state(self, p: Tensor, batch_dims: int) -> dict[str, Tensor]:
        # Momenta stacked on a "beta" axis placed right after the task dimensions, so that each
        # (task, beta) slice is contiguous and the feature matrix is built without transposes.
        shape = (*p.shape[:batch_dims], len(self.betas), *p.shape[batch_dims:])
        dtype = self._work_dtype(p.dtype)
        return {"m": torch.zeros(shape, dtype=dtype, device=p.device),
                "v": torch.zeros(p.shape, dtype=dtype, device=p.device),
                "step": torch.zeros((), dtype=dtype, device=p.device)}

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
        first = next(iter(params.values()), None)
        if first is not None and self.path(first, batch_dims=batch_dims) == "grouped":
            return self._update_grouped(grads, state, params)
        new_params, new_state = {}, {}
        differentiable = torch.is_grad_enabled()
        for name, p in params.items():
            g = grads.get(name)
            if g is None:  # a frozen or unused tensor keeps its value and state
                new_params[name], new_state[name] = p, state[name]
                continue
            if self.path(p, batch_dims=batch_dims, differentiable=differentiable) == "chunked":
                new_params[name], new_state[name] = self._update_tensor_fast(p, g, state[name])
            else:
                new_params[name], new_state[name] = self._update_tensor(p, g, state[name], batch_dims)
        return new_params, new_state

    #: The peer implementations of one step, as torch.optim splits single-tensor, multi-tensor and
    #: fused ones; :meth:`path` alone chooses among them, for :meth:`update` and :meth:`update_`:
    #:
    #: - ``"reference"``: :meth:`_update_tensor`, one tensor, differentiable (the definition);
    #: - ``"grouped"``: :meth:`_update_grouped`, every tensor of stacked tasks in one pass;
    #: - ``"chunked"``: :meth:`_fast_step`, no autograd, chunks of coordinates, in place or not;
    #: - ``"fused"``: :meth:`_fast_step` through the compiled passes of :mod:`l2o.learned._mlp_kernel`;
    #: - ``"small_fused"``: :meth:`_small_steps_`, the small tensors stepped together.
    PATHS = ("reference", "grouped", "chunked", "fused", "small_fused")

    def path(self, p: Tensor, *, batch_dims: int = 0, differentiable: bool = True, fused: bool = False,
             contiguous: bool = True) -> str:
        """Which of :data:`PATHS` steps tensor ``p`` (see there)."""
        if batch_dims == 1 and p.device.type in self.grouped_devices:
            return "grouped"
        large = p.numel() > self.fast_threshold
        if fused and not large:
            return "small_fused"
        if large and batch_dims == 0 and not differentiable and contiguous:
            return "fused" if fused else "chunked"
        return "reference"

    #: device types on which a batched update (``batch_dims=1``, meta-training) steps all tensors
    #: in one pass (:meth:`_update_grouped`) instead of one pass per tensor. A GPU is bound by
    #: kernel launches there, and one pass doubled meta-training throughput for 8 digits-MLP tasks
    #: on an H200; on the CPU the per-coordinate gathers it needs cost more than they save.
    grouped_devices: frozenset[str] = frozenset({"cuda"})

    def _update_grouped(self, grads: ParamDict, state: StateDict, params: ParamDict) -> tuple[ParamDict, StateDict]:
        """:meth:`update` with ``batch_dims=1``, every tensor with a gradient in one pass
        (:meth:`_grouped_pass`): the equations of :meth:`_update_tensor`, tensor by tensor, up to
        float rounding (tested)."""
        new_params, new_state = dict(params), dict(state)  # tensors without a gradient keep theirs
        names = []
        for n, p in params.items():
            if grads.get(n) is None:
                continue
            if p[0].numel() == 0:  # nothing to group; its step count still advances
                new_params[n], new_state[n] = self._update_tensor(p, grads[n], state[n], 1)
            else:
                names.append(n)
        if not names:
            return new_params, new_state
        first = params[names[0]]
        tasks, nb = first.shape[0], len(self.betas)
        sizes = [params[n][0].numel() for n in names]
        new_p, m, v, steps = self._grouped_pass(
            torch.cat([grads[n].reshape(tasks, 1, -1) for n in names], dim=-1),
            torch.cat([params[n].reshape(tasks, 1, -1) for n in names], dim=-1),
            torch.cat([state[n]["m"].reshape(tasks, nb, -1) for n in names], dim=-1),
            torch.cat([state[n]["v"].reshape(tasks, 1, -1) for n in names], dim=-1),
            torch.stack([state[n]["step"] for n in names]), sizes)
        for i, (n, p_i, m_i, v_i) in enumerate(zip(names, new_p.split(sizes, -1), m.split(sizes, -1),
                                                    v.split(sizes, -1))):
            new_params[n] = p_i.reshape(params[n].shape)
            new_state[n] = {"m": m_i.reshape(state[n]["m"].shape), "v": v_i.reshape(params[n].shape), "step": steps[i]}
        return new_params, new_state

    def _segments(self, sizes: list[int], dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
        """For tensors of ``sizes`` laid end to end: each coordinate's tensor index, and the sizes."""
        return self._constant(("segments", tuple(sizes), dtype, device), lambda: (
            torch.repeat_interleave(torch.arange(len(sizes), device=device), torch.tensor(sizes, device=device),
                                    output_size=sum(sizes)),
            torch.tensor(sizes, dtype=dtype, device=device)))

    def _grouped_pass(self, g: Tensor, p: Tensor, m_prev: Tensor, v_prev: Tensor, steps: Tensor, sizes: list[int],
                      lr: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step of the tensors of ``sizes``, laid end to end along the last dimension, in one
        pass: ``g``, ``p``, ``v_prev`` are (tasks, 1, N), ``m_prev`` (tasks, betas, N), ``steps``
        each tensor's step count so far, ``lr`` an optional (N,) step multiplier. Each tensor's
        feature statistics are summed by segment (per task), its features divided by its own RMS,
        and its progress features (its own step count) and, with ``tensor_features``, scale
        features go into its coordinates' first-layer bias. Returns the new parameters
        (tasks, N), momenta, second moments and step counts."""
        tasks, dtype, device, nb = p.shape[0], p.dtype, p.device, len(self.betas)
        seg, numel = self._segments(sizes, dtype, device)
        beta = self.beta_vec.to(dtype).view(1, nb, 1)
        m = m_prev * beta + g * (1.0 - beta)
        v = v_prev * self.rms_beta + g.square() * (1.0 - self.rms_beta)
        steps = steps.to(dtype) + 1
        r = torch.rsqrt(v + self.eps)
        feats = torch.cat([g, m, v.sqrt(), p, g * r, m * r], dim=1)  # (tasks, F, N)
        sumsq = feats.new_zeros(tasks, feats.shape[1], len(sizes)).index_add(2, seg, feats.square())
        scale = self._ratio_scales(torch.rsqrt(sumsq / numel + self.eps), steps, dim=1)  # (tasks, F, tensors)
        x = feats * scale[..., seg]
        glob = self._global_features(steps.unsqueeze(-1), scale.transpose(1, 2), dtype)  # (tensors, G) or (tasks, ..)
        bias = (self.coord_in.bias + self.global_in(glob)).transpose(-1, -2)[..., seg]  # (H, N) or (tasks, H, N)
        h = torch.matmul(self.coord_in.weight, x) + bias
        if self.head is not None:
            h = torch.relu(h)
            for lin in self.hidden_stack:
                h = torch.relu(torch.matmul(lin.weight, h) + lin.bias.unsqueeze(-1))
            h = torch.matmul(self.head.weight, h) + self.head.bias.unsqueeze(-1)
        step_size = self.step_mult if lr is None else self.step_mult * lr
        return p[:, 0] - h[:, 0] * torch.exp(h[:, 1] * self.exp_mult) * step_size, m, v, steps

    #: tensors with more coordinates than this take the deployment path when no gradient is
    #: being recorded (smaller ones: the differentiable path, where per-op overhead dominates).
    fast_threshold: int = 4096
    #: coordinates per chunk of the deployment path on the CPU (elsewhere a tensor is one chunk;
    #: its buffers, reused across steps, hold
    #: about ``(n_coord_features + hidden + 3) * fast_chunk`` numbers, plus one number per
    #: coordinate of the largest tensor).
    fast_chunk: int = 65536

    @torch.no_grad()
    def update_(self, grads: ParamDict, state: StateDict, params: ParamDict,
                lr: dict[str, float | Tensor] | None = None, fused: bool = False) -> None:
        """The step of :meth:`update` done in place (deployment; no autograd).

        ``params[name]`` and the tensors in ``state[name]`` are overwritten: no memory is allocated
        per step for the new parameters and accumulators (fresh allocations of this size cost
        page faults that take longer than the step's arithmetic). ``lr[name]`` multiplies the
        step (default 1): a float, or a 0-d tensor on the parameters' device, which the step uses
        there without reading it back (``LearnedOptimizer``'s adaptation on a GPU). Tensors
        without a gradient are left alone. ``fused``: tensors of more than ``fast_threshold``
        coordinates take two compiled passes (:mod:`l2o.learned._mlp_kernel`; compiled on first
        use), and the smaller ones are stepped together (:meth:`_small_steps_`) instead of one by
        one. Both give the same numbers up to float rounding; without ``fused`` the arithmetic is
        exactly that of earlier releases.
        """
        small: dict[tuple[torch.dtype, torch.device], list] = {}  # the small tensors, stepped together
        for name, p in params.items():
            g = grads.get(name)
            if g is None or p.numel() == 0:
                continue
            st = state[name]
            scale = 1.0 if lr is None else lr.get(name, 1.0)
            work = self._work_dtype(p.dtype)
            for key in ("m", "v", "step"):  # state made for another dtype (e.g. model.double() since)
                if st[key].dtype != work:
                    st[key] = st[key].to(work)
            # Half-precision parameters: the step is computed on a float32 copy, then stored back.
            p_work, g_work = (p, g) if p.dtype == work else (p.to(work), g.to(work))
            contiguous = p_work.is_contiguous() and st["m"].is_contiguous() and st["v"].is_contiguous()
            path = self.path(p, differentiable=False, fused=fused, contiguous=contiguous)
            if path == "small_fused":
                small.setdefault((work, p.device), []).append((p, g, st, scale))
                continue
            if path in ("chunked", "fused"):
                self._fast_step(p_work, g_work, st["m"], st["v"], st["step"], p_work, st["m"], st["v"], scale,
                                path == "fused")
                st["step"] = st["step"] + 1
            else:
                self._small_step_(p_work, g_work, st, scale)
            if p_work is not p:
                p.copy_(p_work)
        for items in small.values():
            self._small_steps_(items)

    def _work_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype the rule computes in for parameters of ``dtype``: its weights' dtype, or
        ``dtype`` if that is wider (a float64 optimizee under a float32 rule in meta-training)."""
        return torch.promote_types(dtype, self.coord_in.weight.dtype)

    def _small_step_(self, p: Tensor, g: Tensor, st: dict[str, Tensor], scale: float | Tensor) -> None:
        """The in-place step of one small tensor through the differentiable path's code."""
        new_p, new_st = self._update_tensor(p, g, st, 0)
        apply_step_(p, new_p, scale)
        st["m"].copy_(new_st["m"])
        st["v"].copy_(new_st["v"])
        st["step"] = new_st["step"]

    def _small_steps_(self, items: list[tuple[Tensor, Tensor, dict[str, Tensor], float | Tensor]]) -> None:
        """The in-place step of many small tensors (one dtype and device) as one computation
        (``update_(..., fused=True)``).

        Per-tensor operations cost the same ~25 small kernels whatever the size, so a model with
        many biases and normalization weights would pay them once per tensor. Here the tensors
        go through the network together (:meth:`_grouped_pass`), each with its own normalization,
        step count and learning rate: the equations of :meth:`update`, tensor by tensor (tested
        against the one-by-one step).
        """
        ps, gs, sts, lrs = zip(*items)
        sizes = [p.numel() for p in ps]
        nb = len(self.betas)
        dtype, device = sts[0]["v"].dtype, ps[0].device  # the work dtype (``update_``)
        seg, _ = self._segments(sizes, dtype, device)
        if any(isinstance(x, Tensor) for x in lrs):  # multipliers on the device: gathered there
            lr = torch.stack([torch.as_tensor(x, dtype=dtype, device=device) for x in lrs])[seg]
        else:
            lr = self._constant(("lr", lrs, tuple(sizes), dtype, device),
                                lambda: torch.tensor(lrs, dtype=dtype, device=device)[seg])
        new_p, m, v, steps = self._grouped_pass(
            torch.cat([x.reshape(-1).to(dtype) for x in gs]).view(1, 1, -1),
            torch.cat([x.reshape(-1).to(dtype) for x in ps]).view(1, 1, -1),
            torch.cat([st["m"].reshape(nb, -1) for st in sts], dim=1).unsqueeze(0),
            torch.cat([st["v"].reshape(-1) for st in sts]).view(1, 1, -1),
            torch.stack([st["step"] for st in sts]), sizes, lr)
        for i, (p_i, m_i, v_i) in enumerate(zip(new_p[0].split(sizes), m[0].split(sizes, dim=1), v[0, 0].split(sizes))):
            ps[i].copy_(p_i.view(ps[i].shape))
            sts[i]["m"].copy_(m_i.view(sts[i]["m"].shape))
            sts[i]["v"].copy_(v_i.view(sts[i]["v"].shape))
            sts[i]["step"] = steps[i].to(sts[i]["step"].dtype).clone()  # its own tensor, not a view of steps

    def _update_tensor_fast(self, p: Tensor, g: Tensor, st: dict[str, Tensor]):
        """Out-of-place deployment step (see :meth:`_fast_step`)."""
        m, v, new_p = torch.empty_like(st["m"]), torch.empty_like(st["v"]), torch.empty_like(p)
        self._fast_step(p, g, st["m"], st["v"], st["step"], new_p, m, v, 1.0)
        return new_p, {"m": m, "v": v, "step": st["step"] + 1}

    def _constant(self, key: tuple, build: Callable[[], Any]) -> Any:
        """Small tensors made from Python numbers (segment indices, learning rates), kept by value:
        made on a GPU at every step, each would be a host-to-device copy that waits for the
        kernels already queued."""
        cache = self.__dict__.setdefault("_constants", {})
        value = cache.get(key)
        if value is None:
            if len(cache) >= 64:  # e.g. a learning rate that a scheduler changes at every step
                cache.clear()
            value = cache[key] = build()
        return value

    def _workspace(self, dtype: torch.dtype, device: torch.device, chunk: int) -> dict[str, Tensor]:
        """Buffers of the deployment path, allocated once per (dtype, device, chunk) and reused."""
        key = (dtype, device, chunk)
        cache = self.__dict__.setdefault("_fast_buffers", {})
        ws = cache.get(key)
        if ws is None:
            cache.clear()  # one set at a time
            width = self.hidden if self.hidden_layers else 2
            ws = {"feats": torch.empty(self.n_coord_features, chunk, dtype=dtype, device=device),
                  "hidden": torch.empty(width, chunk, dtype=dtype, device=device),
                  "out": torch.empty(2, chunk, dtype=dtype, device=device),
                  "r": torch.empty(chunk, dtype=dtype, device=device),
                  "views": {}}
            cache[key] = ws
        return ws

    def _chunk_views(self, ws: dict, c: int) -> tuple[Tensor, ...]:
        """Views of the buffers for a chunk of ``c`` coordinates (kept: building views costs
        Python time on every chunk otherwise)."""
        views = ws["views"].get(c)
        if views is None:
            nb, nf = len(self.betas), self.n_coord_features
            f, h, o, r = ws["feats"][:, :c], ws["hidden"][:, :c], ws["out"][:, :c], ws["r"][:c]
            # f, g, m_b, sqrt v, p, g r, m_b r, [g, m_b], [g r, m_b r], hidden, out, r
            views = (f, f[0], f[1:1 + nb], f[1 + nb], f[2 + nb], f[3 + nb], f[4 + nb:], f[:1 + nb], f[3 + nb:nf],
                     h, o, r)
            if len(ws["views"]) > 4:
                ws["views"].clear()
            ws["views"][c] = views
        return views

    def _fast_step(self, p: Tensor, g: Tensor, m_old: Tensor, v_old: Tensor, step_old: Tensor,
                   p_out: Tensor, m_out: Tensor, v_out: Tensor, lr: float | Tensor, fused: bool = False) -> None:
        """The step of :meth:`_update_tensor` for one tensor (no autograd), written into
        ``p_out``, ``m_out``, ``v_out`` (which may be ``p``, ``m_old``, ``v_old`` themselves),
        computed in chunks of coordinates that stay in cache, with buffers reused across steps.

        Pass 1 updates the accumulators and sums each feature's square over the tensor; pass 2
        rebuilds each chunk's features (cheaper than storing ``n_coord_features`` numbers per
        coordinate) and applies the MLP, with the per-tensor normalization folded into the
        first layer's weights (``W (x * s) = (W * s) x``). With ``fused``, each pass is one
        compiled loop over the whole tensor (:mod:`l2o.learned._mlp_kernel`), with this
        function's own passes as the fallback."""
        n, nb = p.numel(), len(self.betas)
        dtype, device = p.dtype, p.device
        # Chunks keep the feature rows in the CPU's cache; on a GPU each chunk costs ~25 kernel
        # launches, so the whole tensor is one chunk there.
        chunk = min(self.fast_chunk, n) if device.type == "cpu" else n
        ws = self._workspace(dtype, device, chunk)
        beta = self.beta_vec.to(dtype).unsqueeze(1)
        one_minus_beta = 1.0 - beta
        gf, pf, newp = g.reshape(n), p.reshape(n), p_out.view(n)
        m, v = m_out.view(nb, n), v_out.view(n)
        # Chunk views made in one call each.
        g_c, p_c, out_c = gf.split(chunk), pf.split(chunk), newp.split(chunk)
        m_c, v_c = m.split(chunk, dim=1), v.split(chunk)
        m0_c, v0_c = m_old.reshape(nb, n).split(chunk, dim=1), v_old.reshape(n).split(chunk)
        # Feature rows (the order of ``_update_tensor``): g, m_b, sqrt(v), p, g r, m_b r.

        # r = 1 / sqrt(v + eps) for the whole tensor, kept from pass 1 for the eager pass 2 (the
        # fused one recomputes it: one chunk's worth is enough then).
        if fused:
            r_c = [ws["r"][:c] for c in (len(x) for x in g_c)]
        else:
            r_all = ws.get("r_all")
            if r_all is None or r_all.numel() < n:
                r_all = ws["r_all"] = torch.empty(n, dtype=dtype, device=device)
            r_c = r_all[:n].split(chunk)
        sumsq = None
        if fused:  # pass 1 as one compiled loop: the accumulators and all the sums in one read
            sums = ws.get("sums")
            if sums is None:
                sums = ws["sums"] = torch.empty(self.n_coord_features, dtype=dtype, device=device)
            # The tensors go in with their own shapes, not as flat views: the passes write into them,
            # and a compiled write through a view is replayed on the view's base, whose rank the
            # compiled code fixes (a conv weight's state after a linear one's failed to compile).
            if fused_accumulate_(m_out, v_out, m_old, v_old, g, p, beta, one_minus_beta, self.rms_beta, self.eps,
                                 sums):
                sumsq = sums
        if sumsq is None:
            sumsq = self._accumulate(ws, g_c, m_c, v_c, r_c, m0_c, v0_c, gf, pf, v, beta, one_minus_beta)
        step = step_old + 1
        scale = self._ratio_scales(torch.rsqrt((sumsq / n).to(dtype) + self.eps), step, dim=0)
        w_in = self.coord_in.weight * scale
        bias = (self.coord_in.bias + self.global_in(self._global_features(step, scale, dtype))).unsqueeze(1)
        # Output rows pre-multiplied: row 0 by step_mult * lr (the step), row 1 by exp_mult.
        on_device = isinstance(lr, Tensor)
        base = self.step_mult * (1.0 if on_device else lr)
        out_mult = self._constant(("out_mult", base, self.exp_mult, dtype, device), lambda: torch.tensor(
            [[base], [self.exp_mult]], dtype=dtype, device=device))
        if on_device:
            out_mult = out_mult.clone()
            out_mult[0].mul_(lr)
        if self.head is None:
            w_in, bias = w_in * out_mult, bias * out_mult
        else:
            w_out, b_out = self.head.weight * out_mult, self.head.bias.unsqueeze(1) * out_mult
        if fused:
            b_in = bias.squeeze(1)
            layers = ([(w_in, b_in)] if self.head is None else
                      [(w_in, b_in), *((lin.weight, lin.bias) for lin in self.hidden_stack), (w_out, b_out.squeeze(1))])
            if fused_mlp_step_(p_out, p, g, m_out, v_out, layers, self.eps):
                return
        # Pass 2: features again (g r, m_b r still in the buffer when there is one chunk), MLP, update.
        single = len(g_c) == 1
        for gc, mc, vc, pc, oc, r in zip(g_c, m_c, v_c, p_c, out_c, r_c):
            f, f_g, f_m, f_sv, f_p, _, _, f_plain, f_scaled, h, out, _ = self._chunk_views(ws, gc.shape[0])
            f_g.copy_(gc)
            f_m.copy_(mc)
            if fused:  # the fused pass 2 failed to compile: r was kept for one chunk at a time at most
                torch.add(vc, self.eps, out=r).rsqrt_()
            if fused or not single:
                torch.mul(f_plain, r, out=f_scaled)
            torch.sqrt(vc, out=f_sv)
            f_p.copy_(pc)
            if self.head is None:
                torch.addmm(bias, w_in, f, out=out)
            else:
                torch.addmm(bias, w_in, f, out=h).relu_()
                hh = h
                for lin in self.hidden_stack:
                    hh = torch.relu(torch.addmm(lin.bias.unsqueeze(1), lin.weight, hh))
                torch.addmm(b_out, w_out, hh, out=out)
            d, s = out
            # p - step_mult * d * exp(exp_mult * s)
            torch.addcmul(pc, d, s.exp_(), value=-1.0, out=oc)

    def _accumulate(self, ws, g_c, m_c, v_c, r_c, m0_c, v0_c, gf, pf, v, beta, one_minus_beta) -> Tensor:
        """Eager pass 1 of :meth:`_fast_step`, chunk by chunk: the accumulators, and each feature's
        sum of squares over the tensor (float64): chunk norms of m_b, g r and m_b r (squared,
        summed), dot products for g and p, and the sum of v = (sqrt v)^2."""
        nb = len(self.betas)
        norms = torch.empty(len(g_c), 2 * nb + 1, dtype=gf.dtype, device=gf.device)
        for i, (gc, mc, vc, r) in enumerate(zip(g_c, m_c, v_c, r_c)):
            _, _, _, _, _, f_gr, f_mr, _, f_scaled, _, _, _ = self._chunk_views(ws, gc.shape[0])
            torch.mul(m0_c[i], beta, out=mc).addcmul_(one_minus_beta, gc)
            torch.mul(v0_c[i], self.rms_beta, out=vc).addcmul_(gc, gc, value=1.0 - self.rms_beta)
            torch.add(vc, self.eps, out=r).rsqrt_()
            torch.mul(gc, r, out=f_gr)
            torch.mul(mc, r, out=f_mr)
            torch.linalg.vector_norm(mc, dim=1, out=norms[i, :nb])
            torch.linalg.vector_norm(f_scaled, dim=1, out=norms[i, nb:])
        sq = norms.to(torch.float64).square_().sum(dim=0)
        return torch.cat([torch.stack([torch.dot(gf, gf).double()]), sq[:nb],
                          torch.stack([v.sum().double(), torch.dot(pf, pf).double()]), sq[nb:]])

    def _ratio_scales(self, scale: Tensor, step: Tensor, dim: int) -> Tensor:
        """``scale`` (each feature's ``1 / RMS`` along ``dim``) with, under ``adam_ratios``, the rows
        of ``g r`` and ``m_b r`` replaced by Adam's bias corrections at ``step`` (each tensor's own
        step count, ``step.shape`` matching ``scale``'s dimensions after ``dim``):
        ``sqrt(1 - rms_beta^t)`` and ``sqrt(1 - rms_beta^t) / (1 - b^t)``, so that the features
        become ``g / sqrt(v_hat)`` and ``m_hat_b / sqrt(v_hat)``."""
        if not self.adam_ratios:
            return scale
        t = step.to(scale.dtype).unsqueeze(-1)
        root = torch.sqrt(1.0 - torch.pow(self.rms_beta, t))
        corrections = torch.cat([root, root / (1.0 - torch.pow(self.beta_vec.to(scale.dtype), t))], dim=-1)
        corrections = corrections.movedim(-1, 0).expand(*scale.shape[:dim], -1, *scale.shape[dim + 1:])
        kept = self.n_coord_features - corrections.shape[dim]
        return torch.cat([scale.narrow(dim, 0, kept), corrections], dim=dim)

    def _global_features(self, step: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
        """Per-tensor features: progress, and with ``tensor_features`` ``0.2 log RMS`` of g, sqrt(v)
        and p (``scale`` holds each feature's ``1 / RMS``: (F,) or (tasks, F)); (G,) or (tasks, G)."""
        progress = progress_features(step, self.timescales.to(dtype))
        if not self.tensor_features:
            return progress
        log_rms = -0.2 * torch.log(scale[..., list(self.scale_rows)])
        return torch.cat([progress.expand(*log_rms.shape[:-1], -1), log_rms], dim=-1)

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
        scale = self._ratio_scales(torch.rsqrt(feats.square().mean(dim=-1) + self.eps), step, dim=1)  # (tasks, F)
        w_in = self.coord_in.weight.unsqueeze(0) * scale.unsqueeze(1)  # (tasks, H, F)
        bias = self.coord_in.bias + self.global_in(self._global_features(step, scale, p.dtype))
        bias = bias.view(-1, bias.shape[-1], 1)  # (1, H, 1), or (tasks, H, 1) with tensor features
        chunk = n if torch.is_grad_enabled() else 32768  # cache-sized chunks when deployed
        outs = []
        for lo in range(0, n, chunk):
            # bmm, then the bias added by broadcasting: faster than baddbmm, which first copies a
            # bias expanded to the output's shape (forward) and reduces over it (backward).
            h = torch.bmm(w_in, feats[..., lo:lo + chunk]) + bias  # (tasks, H, c)
            if self.head is not None:
                h = torch.relu(h)
                for lin in self.hidden_stack:
                    h = torch.relu(torch.baddbmm(lin.bias.view(1, -1, 1), lin.weight.expand(tasks, -1, -1), h))
                h = torch.baddbmm(self.head.bias.view(1, -1, 1), self.head.weight.expand(tasks, -1, -1), h)
            outs.append(h)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # (tasks, 2, n)
        delta = out[:, 0] * torch.exp(out[:, 1] * self.exp_mult) * self.step_mult
        return p - delta.reshape(p.shape), new_state
