"""The MLP rule's deployment step as two fused passes (``LearnedOptimizer(fused=True)``).

Pass 1 (:func:`accumulate_`) updates the accumulators and sums each feature's square over the
tensor in one read of it. Pass 2 (:func:`mlp_step_`), given the updated accumulators, rebuilds
every coordinate's features, applies the network and writes the new parameter, with every layer written out as sums of products of
per-coordinate values and scalar weights. ``torch.compile`` turns that into a single loop over
coordinates: the features and hidden activations stay in registers instead of being written to
memory as rows of a matrix product, which is what the eager path's time goes to (memory
traffic, not arithmetic). The per-tensor normalization is folded into the first layer's weights
by the caller, and the output rows are pre-scaled (row 0 by ``step_mult * lr``, row 1 by
``exp_mult``), exactly as in the eager path (``MLPRule._fast_step``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2o._compile import CompiledOnce


def mlp_step_(p_out: Tensor, p: Tensor, g: Tensor, m: Tensor, v: Tensor, layers: list[tuple[Tensor, Tensor]],
              eps: float) -> None:
    """``p_out = p - d * exp(s)`` with ``(d, s)`` the network's outputs for each coordinate.

    Args:
        p_out: output, shaped like ``p`` (may be ``p`` itself).
        p, g, v: parameter, gradient and updated second moment (one shape).
        m: updated momenta, ``(len(betas), *p.shape)``.
        layers: ``(weight, bias)`` per layer, first layer ``(H, F)`` with the feature order of
            ``MLPRule`` (g, m_b, sqrt(v), p, g r, m_b r), last layer ``(2, H)``; ReLU between.
        eps: as in ``r = 1 / sqrt(v + eps)``.

    Every tensor comes in with its own shape and is flattened here (one compilation per rank).
    """
    pf, gf, vf = p.reshape(-1), g.reshape(-1), v.reshape(-1)
    r = torch.rsqrt(vf + eps)
    momenta = m.reshape(m.shape[0], -1).unbind(0)
    x = [gf, *momenta, torch.sqrt(vf), pf, gf * r, *(mb * r for mb in momenta)]
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
    p_out.copy_((pf - d * torch.exp(s)).view(p_out.shape))


def accumulate_(m_out: Tensor, v_out: Tensor, m: Tensor, v: Tensor, g: Tensor, p: Tensor, beta: Tensor,
                one_minus_beta: Tensor, rms_beta: float, eps: float, sums_out: Tensor) -> None:
    """Momenta and second moment updated into ``m_out``, ``v_out`` (which may be ``m``, ``v``);
    ``sums_out`` (F,): each feature's sum of squares, in the order g, m_b, sqrt(v), p, g r, m_b r.

    Args:
        m: ``(len(betas), *p.shape)`` momenta; v, g, p: one shape; beta, one_minus_beta:
            ``(len(betas), 1)``.
    """
    gf = g.reshape(-1)
    m_new = m.reshape(m.shape[0], -1) * beta + gf * one_minus_beta
    v_new = v.reshape(-1) * rms_beta + gf * gf * (1.0 - rms_beta)
    r2 = 1.0 / (v_new + eps)  # r^2
    g2 = gf * gf
    pf = p.reshape(-1)
    momenta = m_new.unbind(0)
    sums = [g2.sum(), *((mb * mb).sum() for mb in momenta), v_new.sum(), (pf * pf).sum(), (g2 * r2).sum(),
            *((mb * mb * r2).sum() for mb in momenta)]
    sums_out.copy_(torch.stack(sums))
    m_out.copy_(m_new.view(m_out.shape))
    v_out.copy_(v_new.view(v_out.shape))


fused_mlp_step_ = CompiledOnce(mlp_step_, "LearnedOptimizer(fused=True)")
fused_accumulate_ = CompiledOnce(accumulate_, "LearnedOptimizer(fused=True)")
