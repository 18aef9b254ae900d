"""HAdam: Adam with a higher-order moment in the denominator.

Jiang, Balu, Tan, Lee, Hegde, Sarkar, "On Higher-order Moments in Adam" (arXiv:1910.06878, 2019).
See docs/methods/hadam.md for the equations, defaults and deviations.
"""

from __future__ import annotations

import torch

from l2o.optim._base import (L2OOptimizer, addcdiv_, check_betas, check_bool, check_foreach, check_nonnegative,
                             check_positive, check_range, foreach_addcdiv_, group_by_device_and_dtype,
                             new_step_tensor, resolve_foreach, step_value, step_values)


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
        order, eps = group["order"], group["eps"]
        beta1, beta2 = group["betas"]
        foreach = resolve_foreach(group["foreach"], params, cpu_default=False)
        by_form: dict[str, tuple[list, ...]] = {}
        for p, g in zip(params, grads):
            state = self.state[p]
            if not state:
                state["step"] = new_step_tensor()
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state[_moment_key(order, p.dtype, eps)] = torch.zeros_like(p, memory_format=torch.preserve_format)
            key = next(k for k in _MOMENT_FORMS if k in state)
            lists = by_form.setdefault(key, ([], [], [], [], []))
            for lst, item in zip(lists, (p, g, state["exp_avg"], state[key], state["step"])):
                lst.append(item)
        for key, lists in by_form.items():
            (_hadam_foreach if foreach else _hadam_loop)(
                *lists, form=key, lr=group["lr"], beta1=beta1, beta2=beta2, eps=eps, order=order,
                weight_decay=group["weight_decay"], maximize=group["maximize"])


# The three forms of the second accumulator, by state key (see HAdam's docstring).
_MOMENT_FORMS = ("exp_avg_sq", "exp_avg_pow", "exp_avg_root")


def _moment_key(order: float, dtype: torch.dtype, eps: float) -> str:
    """Adam's form for order 2; ``v = E|g|^p`` where the dtype's range makes it safe; else the root form."""
    if order == 2.0:
        return "exp_avg_sq"
    info = torch.finfo(dtype)
    # |g|^p underflows only where |g| < tiny^(1/p): harmless if that is far below eps (the
    # denominator is then eps anyway); it overflows only for |g| > max^(1/p).
    if info.tiny ** (1.0 / order) <= 0.1 * eps and info.max ** (1.0 / order) >= 1e6:
        return "exp_avg_pow"
    return "exp_avg_root"


def _abs_pow(grad: torch.Tensor, order: float) -> torch.Tensor:
    """``|grad|^order`` as a new tensor, by multiplications where the order allows it (pow is slow)."""
    if order % 2 == 0:
        out = grad * grad
        half = order / 2
        if half == 2:
            out.mul_(out)
        elif half != 1:
            out.pow_(half)
        return out
    return grad.abs().pow_(order)


def _root(moment: torch.Tensor, order: float) -> torch.Tensor:
    """``moment^(1/order)`` as a new tensor."""
    if order == 4:
        return moment.sqrt().sqrt_()
    return moment.pow(1.0 / order)


def _root_moment_update(root: torch.Tensor, abs_grad: torch.Tensor, beta2: float, order: float) -> None:
    """In place: ``root <- (beta2 root^p + (1 - beta2) abs_grad^p)^(1/p)``, scaled to avoid under/overflow.

    ``abs_grad`` is consumed (overwritten).
    """
    scale = torch.maximum(root, abs_grad).clamp_min_(torch.finfo(root.dtype).tiny)
    root.div_(scale).pow_(order)
    abs_grad.div_(scale).pow_(order)
    root.lerp_(abs_grad, 1.0 - beta2).pow_(1.0 / order).mul_(scale)


def _hadam_loop(params, grads, exp_avgs, moments, steps, *, form, lr, beta1, beta2, eps, order, weight_decay,
                maximize):
    for param, grad, exp_avg, moment, step_t in zip(params, grads, exp_avgs, moments, steps):
        if maximize:
            grad = -grad
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        step_t += 1
        step = step_value(step_t, param.dtype)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        exp_avg.lerp_(grad, 1 - beta1)
        if form == "exp_avg_sq":  # Adam's arithmetic, as torch.optim.Adam
            moment.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (moment.sqrt() / bias_correction2 ** 0.5).add_(eps)
            addcdiv_(param, exp_avg, denom, -lr / bias_correction1)
            continue
        bias_root = bias_correction2 ** (1.0 / order)
        if form == "exp_avg_pow":
            moment.lerp_(_abs_pow(grad, order), 1.0 - beta2)
            denom = _root(moment, order)
        else:
            _root_moment_update(moment, grad.abs(), beta2, order)
            denom = moment.clone()
        # m_hat / (r_hat + eps) with r_hat = r / bias_root, rewritten to save a pass over memory.
        denom.add_(eps * bias_root)
        addcdiv_(param, exp_avg, denom, -lr * bias_root / bias_correction1)


def _hadam_foreach(params, grads, exp_avgs, moments, steps, *, form, lr, beta1, beta2, eps, order, weight_decay,
                   maximize):
    for p_list, g_list, m_list, v_list, s_list in group_by_device_and_dtype(params, grads, exp_avgs, moments, steps):
        if maximize:
            g_list = torch._foreach_neg(g_list)
        if weight_decay != 0:
            g_list = torch._foreach_add(g_list, p_list, alpha=weight_decay)
        torch._foreach_add_(s_list, 1.0)
        # Step counts can differ between tensors (parameters that had no gradient on some steps).
        steps_now = step_values(s_list, p_list[0].dtype)
        torch._foreach_lerp_(m_list, g_list, 1 - beta1)
        if form == "exp_avg_sq":
            torch._foreach_mul_(v_list, beta2)
            torch._foreach_addcmul_(v_list, g_list, g_list, value=1 - beta2)
            denom = torch._foreach_sqrt(v_list)
            torch._foreach_div_(denom, [(1 - beta2 ** s) ** 0.5 for s in steps_now])
            torch._foreach_add_(denom, eps)
            foreach_addcdiv_(p_list, m_list, denom, [-lr / (1 - beta1 ** s) for s in steps_now])
            continue
        bias_roots = [(1 - beta2 ** s) ** (1.0 / order) for s in steps_now]
        if form == "exp_avg_pow":
            if order % 2 == 0:
                powers = torch._foreach_mul(g_list, g_list)
                if order == 4:
                    torch._foreach_mul_(powers, powers)
                elif order != 2:
                    torch._foreach_pow_(powers, order / 2)
            else:
                powers = torch._foreach_abs(g_list)
                torch._foreach_pow_(powers, order)
            torch._foreach_lerp_(v_list, powers, 1.0 - beta2)
            if order == 4:
                denom = torch._foreach_sqrt(v_list)
                torch._foreach_sqrt_(denom)
            else:
                denom = torch._foreach_pow(v_list, 1.0 / order)
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
            denom = torch._foreach_mul(v_list, 1.0)
        torch._foreach_add_(denom, [eps * b for b in bias_roots])
        foreach_addcdiv_(p_list, m_list, denom, [-lr * b / (1 - beta1 ** s) for b, s in zip(bias_roots, steps_now)])
