"""The coordinatewise LSTM optimizer of Andrychowicz et al. (2016), "Learning to learn by
gradient descent by gradient descent" (arXiv:1606.04474).

One small 2-layer LSTM (20 hidden units per layer) is shared by every coordinate of the
optimizee; each coordinate keeps its own hidden and cell state. The input is the gradient,
preprocessed as in the paper's appendix A:

    g -> (log(|g|) / p, sign(g))   if |g| >= exp(-p)
         (-1, exp(p) * g)          otherwise

with p = 10, and the update is a linear read-out of the top LSTM layer times 0.1:

    theta_{t+1} = theta_t + 0.1 * W_out h_t

All coordinates of all tensors go through the LSTM as one batch (one fused ``lstm_cell`` call
per layer per step), which is what makes meta-training fast. Deployed (``LearnedOptimizer``),
the same computation runs in place on cache-sized chunks of that batch (:meth:`LSTMRule.update_`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from l2o.learned.base import LearnedRule, ParamDict, StateDict, apply_step_


def preprocess_gradients(grads: Tensor, p: float = 10.0) -> Tensor:
    """The paper's gradient preprocessing, coordinatewise: ``(..., ) -> (..., 2)``.

    Large gradients (``|g| >= e^-p``) map to ``(log|g| / p, sign g)``; small ones (zero
    included) to ``(-1, e^p g)``. Infinite gradients are clamped to the largest finite value of
    the dtype (features stay finite); NaN gradients stay NaN, so a broken coordinate shows up
    as such instead of being hidden.

    Args:
        grads: gradients, any shape.
        p: the scale parameter (> 0).
    """
    if p <= 0:
        raise ValueError(f"p must be > 0, got {p}")
    threshold = math.exp(-p)
    finfo = torch.finfo(grads.dtype)
    g = torch.where(torch.isinf(grads), grads.sign() * finfo.max, grads)
    magnitude = g.abs()
    large = magnitude >= threshold
    # clamp keeps log finite on the unused branch, so no NaN leaks into (second-order) gradients.
    log_part = torch.where(large, torch.log(magnitude.clamp(min=threshold)) / p, torch.full_like(g, -1.0))
    sign_part = torch.where(large, torch.sign(g), g * math.exp(p))
    # torch.where picks a NaN g's first feature from the "small" branch (NaN >= t is False).
    log_part = torch.where(torch.isnan(g), g, log_part)
    return torch.stack([log_part, sign_part], dim=-1)


def _stream_chunks(sizes: list[int], chunk: int):
    """For the tensors of ``sizes`` laid end to end, each ``chunk``-long window as its pieces
    ``(tensor index, lo, hi)`` (coordinates ``lo:hi`` of that tensor)."""
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    first = 0
    for start in range(0, bounds[-1], chunk):
        stop = min(start + chunk, bounds[-1])
        while bounds[first + 1] <= start:
            first += 1
        pieces, i = [], first
        while i < len(sizes) and bounds[i] < stop:
            pieces.append((i, max(start, bounds[i]) - bounds[i], min(stop, bounds[i + 1]) - bounds[i]))
            i += 1
        yield pieces


class LSTMRule(LearnedRule):
    """Coordinatewise LSTM update rule (the paper's optimizer ``m``).

    Args:
        hidden_size: LSTM units per layer (paper: 20).
        num_layers: stacked LSTM layers (paper: 2).
        preprocess_p: the preprocessing parameter p (paper appendix: 10); 0 or None feeds the
            raw gradient instead.
        output_scale: the read-out is multiplied by this (paper: 0.1).
    """

    kind = "lstm"
    #: coordinatewise, no per-tensor statistics: stacked tasks are more coordinates
    supports_batching = False
    supports_in_place = True

    def __init__(self, hidden_size: int = 20, num_layers: int = 2, preprocess_p: float | None = 10.0,
                 output_scale: float = 0.1):
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"need hidden_size >= 1 and num_layers >= 1, got {hidden_size}, {num_layers}")
        self.hidden_size, self.num_layers = int(hidden_size), int(num_layers)
        self.preprocess_p = float(preprocess_p) if preprocess_p else None
        self.output_scale = float(output_scale)
        input_size = 2 if self.preprocess_p else 1
        self.cells = nn.ModuleList(
            nn.LSTMCell(input_size if i == 0 else self.hidden_size, self.hidden_size) for i in range(self.num_layers)
        )
        self.readout = nn.Linear(self.hidden_size, 1)

    def config(self) -> dict[str, Any]:
        return {"hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "preprocess_p": self.preprocess_p, "output_scale": self.output_scale}

    def init_state(self, params: ParamDict) -> StateDict:
        dtype = next(self.parameters()).dtype
        return {
            name: {
                "h": torch.zeros(p.numel(), self.num_layers, self.hidden_size, dtype=dtype, device=p.device),
                "c": torch.zeros(p.numel(), self.num_layers, self.hidden_size, dtype=dtype, device=p.device),
            }
            for name, p in params.items()
        }

    def step_flat(self, grad: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The LSTM on a flat batch of coordinates.

        Args:
            grad: ``(n,)`` gradients.
            h, c: ``(n, num_layers, hidden_size)`` states.

        Returns:
            ``(delta, h, c)``: the ``(n,)`` updates and the new states.
        """
        x = preprocess_gradients(grad, self.preprocess_p) if self.preprocess_p else grad.unsqueeze(-1)
        new_h, new_c = [], []
        for layer, cell in enumerate(self.cells):
            h_l, c_l = cell(x, (h[:, layer], c[:, layer]))
            new_h.append(h_l)
            new_c.append(c_l)
            x = h_l
        delta = self.readout(x).squeeze(-1) * self.output_scale
        return delta, torch.stack(new_h, 1), torch.stack(new_c, 1)

    #: coordinates per chunk of the in-place deployment step on the CPU: the gates and hidden
    #: states of a chunk (about 250 numbers per coordinate) stay in the cache, where the whole
    #: batch of a large model (gigabytes) would stream through memory several times per step.
    fast_chunk: int = 8192

    @torch.no_grad()
    def update_(self, grads: ParamDict, state: StateDict, params: ParamDict,
                lr: dict[str, float | Tensor] | None = None, fused: bool = False) -> None:
        """The step of :meth:`update` done in place (deployment; no autograd).

        The coordinates of all tensors with a gradient form one stream, as in :meth:`update`,
        taken ``fast_chunk`` at a time: each chunk's new hidden and cell states are written into
        ``state``, and its steps into ``params``. When the stream fits in one chunk (every task of
        the ``small`` benchmark suite) the arithmetic is exactly that of :meth:`update`; otherwise
        the results agree up to float rounding (a matrix product over fewer rows may round
        differently). ``lr[name]`` scales a tensor's step as ``LearnedOptimizer`` does with
        out-of-place rules (a float, or a 0-d tensor on the parameters' device).
        """
        if fused:
            raise ValueError("LSTMRule has no fused step")
        names = [n for n in params if grads.get(n) is not None and params[n].numel() > 0]
        if not names:
            return
        dtype = next(self.parameters()).dtype
        for n in names:  # states may come back from a state_dict in another dtype
            for key in ("h", "c"):
                if state[n][key].dtype != dtype or not state[n][key].is_contiguous():
                    state[n][key] = state[n][key].to(dtype).contiguous()
        sizes = [params[n].numel() for n in names]
        grad_flat = [grads[n].reshape(-1) for n in names]
        h_flat = [state[n]["h"] for n in names]
        c_flat = [state[n]["c"] for n in names]
        deltas = [torch.empty(size, dtype=dtype, device=params[n].device) for n, size in zip(names, sizes)]
        # On a GPU the step is launch-bound, not memory-bound: the whole stream is one chunk there.
        chunk = self.fast_chunk if params[names[0]].device.type == "cpu" else sum(sizes)
        for pieces in _stream_chunks(sizes, chunk):
            if len(pieces) == 1:
                i, lo, hi = pieces[0]
                g, h, c = grad_flat[i][lo:hi].to(dtype), h_flat[i][lo:hi], c_flat[i][lo:hi]
            else:
                g = torch.cat([grad_flat[i][lo:hi].to(dtype) for i, lo, hi in pieces])
                h = torch.cat([h_flat[i][lo:hi] for i, lo, hi in pieces])
                c = torch.cat([c_flat[i][lo:hi] for i, lo, hi in pieces])
            delta, new_h, new_c = self.step_flat(g, h, c)
            offset = 0
            for i, lo, hi in pieces:
                width = hi - lo
                h_flat[i][lo:hi] = new_h[offset:offset + width]
                c_flat[i][lo:hi] = new_c[offset:offset + width]
                deltas[i][lo:hi] = delta[offset:offset + width]
                offset += width
        for n, d in zip(names, deltas):
            p = params[n]
            new_p = p + d.reshape(p.shape).to(p.dtype)  # as update() and LearnedOptimizer compute it
            apply_step_(p, new_p, 1.0 if lr is None else lr.get(n, 1.0))

    def update(self, grads: ParamDict, state: StateDict, params: ParamDict) -> tuple[ParamDict, StateDict]:
        names = list(params)
        if not names:
            return {}, {}
        dtype = next(self.parameters()).dtype
        sizes = [params[n].numel() for n in names]
        flat_grad = torch.cat([grads[n].reshape(-1).to(dtype) for n in names])
        # States may come back from a state_dict in the optimizee's dtype: the LSTM runs in its own.
        h = torch.cat([state[n]["h"] for n in names]).to(dtype)
        c = torch.cat([state[n]["c"] for n in names]).to(dtype)
        delta, h, c = self.step_flat(flat_grad, h, c)
        new_params, new_state = {}, {}
        for name, d, h_n, c_n in zip(names, delta.split(sizes), h.split(sizes), c.split(sizes)):
            p = params[name]
            new_params[name] = p + d.reshape(p.shape).to(p.dtype)
            new_state[name] = {"h": h_n, "c": c_n}
        return new_params, new_state
