"""h-detach: an LSTM that stochastically blocks the gradient through the hidden state.

Arpit, Kanuparthi, Kerg, Ke, Mitliagkas and Bengio, "h-detach: Modifying the LSTM Gradient
Towards Better Optimization" (ICLR 2019). The LSTM gradient reaching an early time step is a
sum of a path through the cell states (the "linear" path c_{t-1} -> c_t) and paths through
the hidden states h_{t-1} -> gates_t. When the h-paths have large norm they suppress the
cell-state path that carries long-term information. h-detach treats h_{t-1} as a constant in
the backward pass of step t with probability ``p`` (independently at every time step), while
the cell-state path is never cut. The forward pass is unchanged.

Two forms are provided:

* :class:`HDetachLSTM`, an ``nn.Module`` with ``nn.LSTM``'s common constructor arguments,
  parameter names and call signature (so state dicts are interchangeable). With ``p = 0``
  (or in eval mode) its outputs and gradients equal ``nn.LSTM``'s.
* :func:`lstm_layer` / :func:`lstm_forward`, pure functions of a parameter dict, used by
  functional tasks (see :class:`l2o.tasks.copying.CopyingTask`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _check_prob(detach_prob: float) -> float:
    detach_prob = float(detach_prob)
    if not 0.0 <= detach_prob <= 1.0:
        raise ValueError(f"detach_prob must be in [0, 1], got {detach_prob}")
    return detach_prob


def lstm_layer(x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
               bias_ih: Tensor | None = None, bias_hh: Tensor | None = None,
               detach_mask: Tensor | list[bool] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer over a whole sequence, with optional h-detach.

    Gate layout and equations are ``nn.LSTM``'s (rows of the weights: input, forget, cell,
    output gates)::

        i, f, g, o = split(W_ih x_t + b_ih + W_hh h~_{t-1} + b_hh)
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    where ``h~_{t-1} = stop_gradient(h_{t-1})`` when ``detach_mask[t]`` is true and
    ``h_{t-1}`` otherwise. ``c_{t-1}`` is never detached.

    Args:
        x: inputs, shape (T, B, input_size) (time first).
        h0, c0: initial states, shape (B, hidden).
        weight_ih, weight_hh, bias_ih, bias_hh: ``nn.LSTM``-shaped weights of the layer.
        detach_mask: T booleans; None means never detach.

    Returns:
        (outputs of shape (T, B, hidden), h_T, c_T).
    """
    steps = x.shape[0]
    hidden = weight_hh.shape[1]
    # One big matmul for every input projection; only the recurrent part is sequential.
    projected = torch.matmul(x, weight_ih.t())
    if bias_ih is not None:
        projected = projected + bias_ih
    if bias_hh is not None:
        projected = projected + bias_hh
    if detach_mask is not None:
        if isinstance(detach_mask, Tensor):
            detach_mask = detach_mask.tolist()
        if len(detach_mask) != steps:
            raise ValueError(f"detach_mask must have one entry per time step ({steps}), got {len(detach_mask)}")
    h, c = h0, c0
    w_hh_t = weight_hh.t()
    outputs = []
    for t in range(steps):
        h_in = h.detach() if detach_mask is not None and detach_mask[t] else h
        gates = projected[t] + h_in @ w_hh_t
        i, f, g, o = gates.split(hidden, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    if steps == 0:
        return x.new_zeros(0, *h0.shape), h, c
    return torch.stack(outputs), h, c


def lstm_forward(params: dict[str, Tensor], x: Tensor, num_layers: int = 1, prefix: str = "",
                 hx: tuple[Tensor, Tensor] | None = None, detach_masks: Tensor | None = None,
                 ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """A stacked LSTM as a pure function of a parameter dict with ``nn.LSTM``'s names.

    Args:
        params: holds ``{prefix}weight_ih_l{k}``, ``{prefix}weight_hh_l{k}`` and, if present,
            ``{prefix}bias_ih_l{k}``, ``{prefix}bias_hh_l{k}`` for k < num_layers.
        x: inputs, shape (T, B, input_size).
        num_layers: number of stacked layers.
        prefix: key prefix (e.g. ``"lstm."``).
        hx: optional (h0, c0), each (num_layers, B, hidden); zeros if None.
        detach_masks: booleans of shape (num_layers, T) or (T,) (shared by the layers);
            None disables h-detach.

    Returns:
        (outputs (T, B, hidden), (h_n, c_n) each (num_layers, B, hidden)).
    """
    hidden = params[f"{prefix}weight_hh_l0"].shape[1]
    batch = x.shape[1]
    if hx is None:
        zeros = x.new_zeros(num_layers, batch, hidden)
        hx = (zeros, zeros)
    if detach_masks is not None and detach_masks.dim() == 1:
        detach_masks = detach_masks.unsqueeze(0).expand(num_layers, -1)
    h_n, c_n = [], []
    out = x
    for k in range(num_layers):
        out, h, c = lstm_layer(
            out, hx[0][k], hx[1][k], params[f"{prefix}weight_ih_l{k}"], params[f"{prefix}weight_hh_l{k}"],
            params.get(f"{prefix}bias_ih_l{k}"), params.get(f"{prefix}bias_hh_l{k}"),
            None if detach_masks is None else detach_masks[k],
        )
        h_n.append(h)
        c_n.append(c)
    return out, (torch.stack(h_n), torch.stack(c_n))


class HDetachLSTM(nn.Module):
    """An LSTM with h-detach (Arpit et al., 2019); a drop-in for ``nn.LSTM``'s common arguments.

    In training mode, at every time step and in every layer, with probability
    ``detach_prob`` the gradient through the previous hidden state ``h_{t-1}`` into the gates
    is blocked; the gradient through the cell state ``c_{t-1}`` always flows. The forward
    values are those of an ordinary LSTM. In eval mode nothing is detached.

    Parameters are named and shaped as in ``nn.LSTM`` (``weight_ih_l0``, ``weight_hh_l0``,
    ``bias_ih_l0``, ``bias_hh_l0``, ...) and initialised the same way
    (U(-1/sqrt(hidden), 1/sqrt(hidden))), so ``load_state_dict`` works both ways.

    Args:
        input_size: features per time step.
        hidden_size: hidden units per layer.
        num_layers: stacked layers.
        bias: whether the layers have biases.
        batch_first: inputs/outputs are (B, T, F) instead of (T, B, F).
        dropout: dropout on the outputs of every layer but the last (as ``nn.LSTM``).
        detach_prob: the probability ``p`` of blocking the h-path at a time step; the paper
            uses 0.25 and 0.5 on the copying task. 0 gives an ordinary LSTM.
        generator: optional ``torch.Generator`` for the detach draws (reproducibility).

    Not supported (``ValueError``): ``bidirectional=True``, ``proj_size > 0``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, detach_prob: float = 0.25, generator: torch.Generator | None = None,
                 device=None, dtype=None):
        super().__init__()
        if input_size < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}")
        if bidirectional:
            raise ValueError("bidirectional=True is not supported by HDetachLSTM, got bidirectional=True")
        if proj_size:
            raise ValueError(f"proj_size is not supported by HDetachLSTM, got proj_size={proj_size}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.detach_prob = _check_prob(detach_prob)
        self.generator = generator
        factory = {"device": device, "dtype": dtype}
        for k in range(num_layers):
            layer_in = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, layer_in, **factory)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size, **factory)))
            if bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, **factory)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def sample_detach_masks(self, steps: int) -> Tensor:
        """Bernoulli(detach_prob) draws, shape (num_layers, steps); all False in eval mode."""
        if not self.training or self.detach_prob == 0.0:
            return torch.zeros(self.num_layers, steps, dtype=torch.bool)
        return torch.rand(self.num_layers, steps, generator=self.generator) < self.detach_prob

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None,
                detach_masks: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Run the LSTM; same inputs and outputs as ``nn.LSTM`` (unbatched 2-D input too).

        Args:
            input: (T, B, F), or (B, T, F) with ``batch_first``, or unbatched (T, F).
            hx: optional (h0, c0), each (num_layers, B, hidden) or (num_layers, hidden).
            detach_masks: optional explicit detach decisions, bool (num_layers, T); by
                default they are drawn with probability ``detach_prob``.
        """
        unbatched = input.dim() == 2
        if input.dim() not in (2, 3):
            raise ValueError(f"input must be 2-D or 3-D, got shape {tuple(input.shape)}")
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        if hx is not None and unbatched:
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        steps = x.shape[0]
        masks = self.sample_detach_masks(steps) if detach_masks is None else detach_masks
        params = dict(self.named_parameters())
        if self.dropout > 0 and self.training and self.num_layers > 1:
            # Layer by layer so dropout can sit between layers, as in nn.LSTM.
            batch = x.shape[1]
            if hx is None:
                zeros = x.new_zeros(self.num_layers, batch, self.hidden_size)
                hx = (zeros, zeros)
            out, h_n, c_n = x, [], []
            for k in range(self.num_layers):
                out, h, c = lstm_layer(out, hx[0][k], hx[1][k], params[f"weight_ih_l{k}"], params[f"weight_hh_l{k}"],
                                       params.get(f"bias_ih_l{k}"), params.get(f"bias_hh_l{k}"), masks[k])
                if k < self.num_layers - 1:
                    out = nn.functional.dropout(out, self.dropout, training=True)
                h_n.append(h)
                c_n.append(c)
            state = (torch.stack(h_n), torch.stack(c_n))
        else:
            out, state = lstm_forward(params, x, self.num_layers, hx=hx, detach_masks=masks)
        if unbatched:
            return out.squeeze(1), (state[0].squeeze(1), state[1].squeeze(1))
        return (out.transpose(0, 1) if self.batch_first else out), state

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
                f"batch_first={self.batch_first}, dropout={self.dropout}, detach_prob={self.detach_prob}")
