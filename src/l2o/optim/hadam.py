"""HAdam: Adam with a higher-order moment in the denominator.

Jiang, Balu, Tan, Lee, Hegde, Sarkar, "On Higher-order Moments in Adam" (arXiv:1910.06878, 2019).
See docs/methods/hadam.md for the equations, defaults and deviations.
"""

from __future__ import annotations

import torch

from l2o.optim._base import (L2OOptimizer, check_betas, check_bool, check_foreach, check_nonnegative,
                             check_positive, check_range, group_by_device_and_dtype, new_step_tensor,
                             resolve_foreach, scalar)


class HAdam(L2OOptimizer):
    r"""Adam whose second accumulator holds the ``order``-th absolute moment of the gradient.

    .. math::
        m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t,\quad
        v_t = \beta_2 v_{t-1} + (1-\beta_2) |g_t|^p,\quad
        \theta_t = \theta_{t-1} - \eta\,\frac{m_t/(1-\beta_1^t)}{(v_t/(1-\beta_2^t))^{1/p} + \epsilon}

    ``order=2`` is exactly Adam (same arithmetic as ``torch.optim.Adam``). For ``order != 2``
    the state keeps the root ``r_t = v_t^{1/p}`` rather than ``v_t``, updated as
    ``r_t = M (\beta_2 (r_{t-1}/M)^p + (1-\beta_2)(|g_t|/M)^p)^{1/p}`` with
    ``M = max(r_{t-1}, |g_t|)``: both ratios are at most 1 and one of them equals 1, so nothing
    overflows and the sum never underflows to zero, for any order (``|g|^8`` of a gradient of
    1e-6 is 1e-48, below float32's range, which would make the step ``m/eps``).

    Args:
        params: parameters or param groups.
        lr: step size :math:`\eta`.
        betas: decay rates :math:`(\beta_1, \beta_2)` of the two moving averages.
        eps: added to the denominator (after bias correction, as in torch.optim.Adam).
        order: the moment order :math:`p \ge 1`; the paper studies even integers. ``|g|^p`` is
            used (for even ``p`` it equals the paper's ``g^p``; for odd ``p`` the signed power
            can make ``v`` negative and its root undefined).
        weight_decay: L2 penalty added to the gradient (as torch.optim.Adam, not decoupled).
        maximize: maximise the objective instead.
        foreach: multi-tensor path (True), per-tensor loop (False) or the measured default (None).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 order: float = 4.0, weight_decay: float = 0.0, maximize: bool = False,
                 foreach: bool | None = None):
        check_nonnegative("lr", lr)
        check_betas(betas)
        check_positive("eps", eps)
        check_range("order", order, 1.0, None)
        check_nonnegative("weight_decay", weight_decay)
        check_bool("maximize", maximize)
        check_foreach(foreach)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, order=float(order), weight_decay=weight_decay,
                        maximize=maximize, foreach=foreach)
        super().__init__(params, defaults)

    def _step_group(self, group, params, grads):
        if not params:
            return
        order = group["order"]
        moment_key = "exp_avg_sq" if order == 2.0 else "exp_avg_root"
        exp_avgs, moments, steps = [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = new_step_tensor()
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state[moment_key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            moments.append(state[moment_key])
            steps.append(state["step"])
        beta1, beta2 = group["betas"]
        kwargs = dict(lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], order=order,
                      weight_decay=group["weight_decay"], maximize=group["maximize"])
        if resolve_foreach(group["foreach"], params, cpu_default=False):
            _hadam_foreach(params, grads, exp_avgs, moments, steps, **kwargs)
        else:
            _hadam_loop(params, grads, exp_avgs, moments, steps, **kwargs)


def _root_moment_update(root: torch.Tensor, abs_grad: torch.Tensor, beta2: float, order: float) -> None:
    """In place: ``root <- (beta2 root^p + (1 - beta2) abs_grad^p)^(1/p)``, scaled to avoid under/overflow.

    ``abs_grad`` is consumed (overwritten).
    """
    scale = torch.maximum(root, abs_grad).clamp_min_(torch.finfo(root.dtype).tiny)
    root.div_(scale).pow_(order)
    abs_grad.div_(scale).pow_(order)
    root.lerp_(abs_grad, 1.0 - beta2).pow_(1.0 / order).mul_(scale)


def _hadam_loop(params, grads, exp_avgs, moments, steps, *, lr, beta1, beta2, eps, order, weight_decay, maximize):
    for param, grad, exp_avg, moment, step_t in zip(params, grads, exp_avgs, moments, steps):
        if maximize:
            grad = -grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        step_t += 1
        step = scalar(step_t)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        exp_avg.lerp_(grad, 1 - beta1)
        if order == 2.0:
            moment.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (moment.sqrt() / bias_correction2 ** 0.5).add_(eps)
        else:
            _root_moment_update(moment, grad.abs(), beta2, order)
            denom = (moment / bias_correction2 ** (1.0 / order)).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)


def _hadam_foreach(params, grads, exp_avgs, moments, steps, *, lr, beta1, beta2, eps, order, weight_decay,
                   maximize):
    for p_list, g_list, m_list, v_list, s_list in group_by_device_and_dtype(params, grads, exp_avgs, moments, steps):
        if maximize:
            g_list = torch._foreach_neg(g_list)
        if weight_decay != 0:
            g_list = torch._foreach_add(g_list, p_list, alpha=weight_decay)
        torch._foreach_add_(s_list, 1.0)
        # Step counts can differ between tensors (parameters that had no gradient on some steps).
        step_values = [scalar(s) for s in s_list]
        torch._foreach_lerp_(m_list, g_list, 1 - beta1)
        if order == 2.0:
            torch._foreach_mul_(v_list, beta2)
            torch._foreach_addcmul_(v_list, g_list, g_list, value=1 - beta2)
            denom = torch._foreach_sqrt(v_list)
            torch._foreach_div_(denom, [(1 - beta2 ** s) ** 0.5 for s in step_values])
        else:
            abs_grads = torch._foreach_abs(g_list)
            scales = torch._foreach_maximum(v_list, abs_grads)
            torch._foreach_clamp_min_(scales, torch.finfo(v_list[0].dtype).tiny)
            torch._foreach_div_(v_list, scales)
            torch._foreach_pow_(v_list, order)
            torch._foreach_div_(abs_grads, scales)
            torch._foreach_pow_(abs_grads, order)
            torch._foreach_lerp_(v_list, abs_grads, 1.0 - beta2)
            torch._foreach_pow_(v_list, 1.0 / order)
            torch._foreach_mul_(v_list, scales)
            denom = torch._foreach_div(v_list, [(1 - beta2 ** s) ** (1.0 / order) for s in step_values])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(p_list, m_list, denom, [-lr / (1 - beta1 ** s) for s in step_values])
