"""The MLP rule's per-coordinate network as one fused pass (``LearnedOptimizer(fused=True)``).

Given the already-updated accumulators, this rebuilds every coordinate's features, applies the
network and writes the new parameter, with every layer written out as sums of products of
per-coordinate values and scalar weights. ``torch.compile`` turns that into a single loop over
coordinates: the features and hidden activations stay in registers instead of being written to
memory as rows of a matrix product, which is what the eager path's time goes to (memory
traffic, not arithmetic). The per-tensor normalization is folded into the first layer's weights
by the caller, and the output rows are pre-scaled (row 0 by ``step_mult * lr``, row 1 by
``exp_mult``), exactly as in the eager path (``MLPRule._fast_step``).
"""

from __future__ import annotations

from torch import Tensor
import torch

from l2o._compile import CompiledOnce


def mlp_step_(p_out: Tensor, p: Tensor, g: Tensor, m: Tensor, v: Tensor, layers: list[tuple[Tensor, Tensor]],
              eps: float) -> None:
    """``p_out = p - d * exp(s)`` with ``(d, s)`` the network's outputs for each coordinate.

    Args:
        p_out: (n,) output (may be ``p`` itself).
        p, g, v: (n,) parameter, gradient and updated second moment.
        m: (len(betas), n) updated momenta.
        layers: ``(weight, bias)`` per layer, first layer ``(H, F)`` with the feature order of
            ``MLPRule`` (g, m_b, sqrt(v), p, g r, m_b r), last layer ``(2, H)``; ReLU between.
        eps: as in ``r = 1 / sqrt(v + eps)``.
    """
    r = torch.rsqrt(v + eps)
    momenta = m.unbind(0)
    x = [g, *momenta, torch.sqrt(v), p, g * r, *(mb * r for mb in momenta)]
    last = len(layers) - 1
    for i, (weight, bias) in enumerate(layers):
        y = []
        for j in range(weight.shape[0]):
            acc = bias[j] + weight[j, 0] * x[0]
            for k in range(1, len(x)):
                acc = acc + weight[j, k] * x[k]
            y.append(torch.relu(acc) if i < last else acc)
        x = y
    d, s = x
    p_out.copy_(p - d * torch.exp(s))


fused_mlp_step_ = CompiledOnce(mlp_step_, "LearnedOptimizer(fused=True)")
