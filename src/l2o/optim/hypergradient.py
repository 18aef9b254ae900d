"""Hypergradient descent: SGD and Adam whose learning rate is learned online.

Baydin, Cornish, Martinez Rubio, Schmidt, Wood, "Online Learning Rate Adaptation with
Hypergradient Descent" (ICLR 2018). See docs/methods/hypergradient.md.

The learning rate of each param group, ``group["lr"]``, *is* the adapted rate
:math:`\\alpha_t`: the optimizer overwrites it at every step, so it is saved by ``state_dict``,
readable at any time, and a chainable ``torch.optim.lr_scheduler`` (StepLR, ExponentialLR,
MultiplicativeLR, ...) scales the current adapted rate.
"""

from __future__ import annotations

import torch

from l2o.optim._base import (L2OOptimizer, check_betas, check_bool, check_foreach, check_nonnegative,
                             check_positive, check_range, group_by_device_and_dtype, new_step_tensor,
                             resolve_foreach, scalar)


def _hypergradient(grads: list[torch.Tensor], previous: list[torch.Tensor | None]) -> float:
    """``sum_i <g_i, d_i>`` over the tensors that have a previous direction ``d_i``."""
    dots = [torch.dot(g.reshape(-1), d.reshape(-1)) for g, d in zip(grads, previous) if d is not None]
    if not dots:
        return 0.0
    # Summed in float64 (so the value does not depend on how tensors are bucketed), on each device
    # first: one read-back per device per step, not one per tensor (each is a sync on a GPU).
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for d in dots:
        by_device.setdefault(d.device, []).append(d.double())
    return sum(scalar(torch.stack(ds).sum()) for ds in by_device.values())


def _effective_grads(params, grads, weight_decay, maximize):
    # A sparse gradient is made dense, as the reference code does: the hypergradient is a dot
    # product with the previous (dense) direction, and the momentum buffer is dense anyway.
    grads = [g.to_dense() if g.is_sparse else g for g in grads]
    if maximize:
        grads = [-g for g in grads]
    if weight_decay != 0:
        grads = [g.add(p, alpha=weight_decay) for p, g in zip(params, grads)]
    return grads


class SGDHD(L2OOptimizer):
    r"""SGD (optionally with momentum) whose learning rate follows its hypergradient.

    With :math:`d_t` the direction of step :math:`t` (the gradient :math:`g_t`, the momentum
    buffer, or its Nesterov form), each step is

    .. math::
        \alpha_t = \alpha_{t-1} + \beta\, g_t \cdot d_{t-1},\qquad
        \theta_t = \theta_{t-1} - \alpha_t d_t,

    since :math:`-g_t\cdot d_{t-1}` is the derivative of :math:`f(\theta_{t-1})` with respect to
    :math:`\alpha_{t-1}`. The dot product runs over every parameter of the param group: one
    :math:`\alpha` per group (the paper has a single global one; use one group for that).
    At the first step :math:`d_0` does not exist and :math:`\alpha` is left unchanged.

    The momentum buffer follows ``torch.optim.SGD`` (and the reference code):
    :math:`b_1 = g_1`, then :math:`b_t = \mu b_{t-1} + (1 - \text{dampening})\, g_t`. Sparse
    gradients (e.g. ``nn.Embedding(sparse=True)``) are accepted and made dense first, as in the
    reference code: the step costs what a dense gradient costs.

    Args:
        params: parameters or param groups.
        lr: the initial learning rate :math:`\alpha_0` (0 is allowed: the rate then grows from 0).
        hypergrad_lr: :math:`\beta`, the step size of the learning-rate update.
        momentum: heavy-ball momentum :math:`\mu` (0: plain SGD-HD).
        dampening: dampening of the gradient in the momentum buffer (0, as ``torch.optim.SGD``).
        nesterov: use Nesterov momentum (the paper's SGDN-HD; needs zero dampening).
        weight_decay: L2 penalty added to the gradient before everything else.
        maximize: maximise the objective instead.
        foreach: multi-tensor path (True), per-tensor loop (False) or the measured default (None).
    """

    supports_sparse = True

    def __init__(self, params, lr: float = 1e-3, hypergrad_lr: float = 1e-3, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, maximize: bool = False,
                 foreach: bool | None = None, dampening: float = 0.0):
        check_nonnegative("lr", lr)
        check_nonnegative("hypergrad_lr", hypergrad_lr)
        check_range("momentum", momentum, 0.0, 1.0, high_open=True)
        check_range("dampening", dampening, 0.0, 1.0)
        check_bool("nesterov", nesterov)
        if nesterov and momentum == 0:
            raise ValueError(f"invalid nesterov: {nesterov!r} (Nesterov momentum needs momentum > 0)")
        if nesterov and dampening != 0:
            raise ValueError(f"invalid dampening: {dampening!r} (Nesterov momentum needs zero dampening)")
        check_nonnegative("weight_decay", weight_decay)
        check_bool("maximize", maximize)
        check_foreach(foreach)
        defaults = dict(lr=float(lr), hypergrad_lr=hypergrad_lr, momentum=momentum, dampening=dampening,
                        nesterov=nesterov, weight_decay=weight_decay, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults)

    def _step_group(self, group, params, grads):
        if not params:
            return
        momentum, nesterov = group["momentum"], group["nesterov"]
        grads = _effective_grads(params, grads, group["weight_decay"], group["maximize"])
        states = [self.state[p] for p in params]
        for p, state in zip(params, states):
            if not state:
                state["step"] = new_step_tensor()
        # Heavy ball: the previous direction is the momentum buffer itself; otherwise a copy is kept.
        direction_key = "momentum_buffer" if momentum != 0 and not nesterov else "previous_direction"
        previous = [s.get(direction_key) for s in states]
        group["lr"] = lr = group["lr"] + group["hypergrad_lr"] * _hypergradient(grads, previous)

        foreach = resolve_foreach(group["foreach"], params, cpu_default=False)
        for s in states:
            s["step"] += 1
        if momentum == 0:
            for state, g in zip(states, grads):
                if "previous_direction" not in state:
                    state["previous_direction"] = torch.empty_like(g, memory_format=torch.preserve_format)
            directions = [s["previous_direction"] for s in states]
            if foreach:
                for p_list, g_list, d_list in group_by_device_and_dtype(params, grads, directions):
                    torch._foreach_copy_(d_list, g_list)
                    torch._foreach_add_(p_list, g_list, alpha=-lr)
            else:
                for p, g, d in zip(params, grads, directions):
                    d.copy_(g)
                    p.add_(g, alpha=-lr)
            return

        fresh = set()  # buffers created this step start at g (b_1 = g_1), undampened
        for index, (state, g) in enumerate(zip(states, grads)):
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.clone(memory_format=torch.preserve_format)
                fresh.add(index)
                if nesterov:
                    state["previous_direction"] = torch.empty_like(g, memory_format=torch.preserve_format)
        buffers = [s["momentum_buffer"] for s in states]
        directions = [s["previous_direction"] for s in states] if nesterov else buffers
        keep = 1.0 - group.get("dampening", 0.0)
        if foreach:
            old = [i for i in range(len(params)) if i not in fresh]
            for b_list, g_list in group_by_device_and_dtype([buffers[i] for i in old], [grads[i] for i in old]):
                torch._foreach_mul_(b_list, momentum)
                torch._foreach_add_(b_list, g_list, alpha=keep)
            for p_list, g_list, b_list, d_list in group_by_device_and_dtype(params, grads, buffers, directions):
                if nesterov:
                    torch._foreach_copy_(d_list, g_list)
                    torch._foreach_add_(d_list, b_list, alpha=momentum)
                torch._foreach_add_(p_list, d_list, alpha=-lr)
        else:
            for index, (p, g, b, d) in enumerate(zip(params, grads, buffers, directions)):
                if index not in fresh:
                    b.mul_(momentum).add_(g, alpha=keep)
                if nesterov:
                    torch.add(g, b, alpha=momentum, out=d)
                p.add_(d, alpha=-lr)


class AdamHD(L2OOptimizer):
    r"""Adam whose learning rate follows its hypergradient (the paper's Adam-HD).

    With :math:`u_t = \hat m_t / (\sqrt{\hat v_t} + \epsilon)` Adam's direction,

    .. math::
        \alpha_t = \alpha_{t-1} + \beta\, g_t \cdot u_{t-1},\qquad
        \theta_t = \theta_{t-1} - \alpha_t u_t.

    One :math:`\alpha` per param group, stored in ``group["lr"]`` (see the module docstring).

    Args:
        params: parameters or param groups.
        lr: the initial learning rate :math:`\alpha_0` (0 is allowed).
        betas, eps: as in ``torch.optim.Adam`` (eps added after bias correction).
        hypergrad_lr: :math:`\beta`, the step size of the learning-rate update.
        weight_decay: L2 penalty added to the gradient (as torch.optim.Adam).
        maximize: maximise the objective instead.
        foreach: multi-tensor path (True), per-tensor loop (False) or the measured default (None).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 hypergrad_lr: float = 1e-7, weight_decay: float = 0.0, maximize: bool = False,
                 foreach: bool | None = None):
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_positive("eps", eps)
        check_nonnegative("hypergrad_lr", hypergrad_lr)
        check_nonnegative("weight_decay", weight_decay)
        check_bool("maximize", maximize)
        check_foreach(foreach)
        defaults = dict(lr=float(lr), betas=tuple(betas), eps=eps, hypergrad_lr=hypergrad_lr,
                        weight_decay=weight_decay, maximize=maximize, foreach=foreach)
        super().__init__(params, defaults)

    def _step_group(self, group, params, grads):
        if not params:
            return
        grads = _effective_grads(params, grads, group["weight_decay"], group["maximize"])
        states = [self.state[p] for p in params]
        previous = [s.get("previous_direction") for s in states]
        group["lr"] = lr = group["lr"] + group["hypergrad_lr"] * _hypergradient(grads, previous)
        for state, p in zip(states, params):
            if not state:
                state["step"] = new_step_tensor()
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["previous_direction"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        eps = group["eps"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        if resolve_foreach(group["foreach"], params, cpu_default=False):
            for p_list, g_list, m_list, v_list, s_list, state_list in group_by_device_and_dtype(
                    params, grads, exp_avgs, exp_avg_sqs, steps, states):
                torch._foreach_add_(s_list, 1.0)
                step_values = [scalar(s) for s in s_list]
                torch._foreach_lerp_(m_list, g_list, 1 - beta1)
                torch._foreach_mul_(v_list, beta2)
                torch._foreach_addcmul_(v_list, g_list, g_list, value=1 - beta2)
                # u = m_hat / (sqrt(v_hat) + eps) = m / (sqrt(v) * bc1 / sqrt(bc2) + eps * bc1).
                denom = torch._foreach_sqrt(v_list)
                torch._foreach_mul_(denom, [(1 - beta1 ** s) / (1 - beta2 ** s) ** 0.5 for s in step_values])
                torch._foreach_add_(denom, [eps * (1 - beta1 ** s) for s in step_values])
                new_directions = torch._foreach_div(m_list, denom)
                torch._foreach_add_(p_list, new_directions, alpha=-lr)
                for state, direction in zip(state_list, new_directions):
                    state["previous_direction"] = direction
        else:
            directions = [s["previous_direction"] for s in states]
            for p, g, m, v, d, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, directions, steps):
                step_t += 1
                step = scalar(step_t)
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                # The denominator is built in the direction's buffer (its old value was used by the
                # hypergradient above): no allocation, two passes fewer than sqrt / div / add / mul.
                bias1 = 1 - beta1 ** step
                torch.sqrt(v, out=d).mul_(bias1 / (1 - beta2 ** step) ** 0.5).add_(eps * bias1)
                torch.div(m, d, out=d)
                p.add_(d, alpha=-lr)
