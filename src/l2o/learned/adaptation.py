"""Per-tensor step-size adaptation on top of a learned rule (``adapt=kappa``).

Each tensor keeps a log step multiplier ``l`` and the step ``u`` it took last; before each step

    l <- clip(l + kappa * cos(g, u), +-MAX_LOG_SCALE),    step = exp(l) * (the rule's step)

``-g . u`` is the derivative of the loss with respect to the size of the previous step (the
hypergradient of Baydin et al. 2018), so the multiplier grows while successive steps keep
pointing downhill and shrinks when they overshoot. Deployment (``LearnedOptimizer(adapt=...)``)
and meta-training (``l2o meta train --adapt``) use the same update, from this module.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: bound on the log step multiplier (a factor of 1e4 either way)
MAX_LOG_SCALE = math.log(1e4)
#: per-tensor state of the adaptation, kept beside the rule's: the log multiplier, the last step
ADAPT_KEYS = ("log_scale", "prev_step")


def check_adapt(kappa: float, name: str = "adapt") -> float:
    """``kappa`` as a float, or ValueError (naming it ``name``) unless it is finite and >= 0."""
    if not 0.0 <= kappa < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {kappa}")
    return float(kappa)


def default_adapt(rule) -> float:
    """The adaptation rate ``rule`` was meta-trained under (``l2o meta train --adapt``, kept in its
    weights file's ``deploy`` entry and set by ``load_rule``); 0 for any other rule."""
    return float(rule.deploy_defaults.get("adapt", 0.0))


def next_log_scale(log_scale: Tensor, g: Tensor, u: Tensor, kappa: float, batch_dims: int = 0) -> Tensor:
    """``clip(log_scale + kappa * cos(g, u))``, the cosine taken over the dimensions after the first
    ``batch_dims`` (one value per task when tasks are stacked), in ``log_scale``'s dtype. A zero
    ``g`` or ``u`` (no previous step yet) leaves it unchanged."""
    if batch_dims == 0:
        dot = torch.dot(g.reshape(-1), u.reshape(-1))
        norm_g, norm_u = torch.linalg.vector_norm(g), torch.linalg.vector_norm(u)
    else:
        dims = tuple(range(batch_dims, g.dim()))
        dot = (g * u).sum(dims)
        norm_g, norm_u = torch.linalg.vector_norm(g, dim=dims), torch.linalg.vector_norm(u, dim=dims)
    return _advance(log_scale, dot, norm_g, norm_u, kappa)


def next_log_scales(log_scales: Tensor, grads: list[Tensor], steps: list[Tensor], kappa: float) -> Tensor:
    """:func:`next_log_scale` for many tensors at once (``log_scales``: one value per tensor, all on
    one device): the same numbers, in fewer operations. Off the CPU the norms are taken by one
    multi-tensor call (a GPU's cost is the number of kernels it launches); on the CPU one by one,
    as :func:`next_log_scale` takes them."""
    dots = torch.stack([torch.dot(g.reshape(-1), u.reshape(-1)) for g, u in zip(grads, steps)])
    if log_scales.device.type == "cpu":
        norms_g = torch.stack([torch.linalg.vector_norm(g) for g in grads])
        norms_u = torch.stack([torch.linalg.vector_norm(u) for u in steps])
    else:
        norms_g, norms_u = torch.stack(torch._foreach_norm(grads)), torch.stack(torch._foreach_norm(steps))
    return _advance(log_scales, dots, norms_g, norms_u, kappa)


def _advance(log_scale: Tensor, dot: Tensor, norm_g: Tensor, norm_u: Tensor, kappa: float) -> Tensor:
    norms = norm_g.to(log_scale.dtype) * norm_u.to(log_scale.dtype)
    positive = norms > 0
    cos = torch.where(positive, dot.to(log_scale.dtype) / torch.where(positive, norms, 1.0), 0.0)
    return (log_scale + kappa * cos).clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE)


def init_adapt_state(state: dict, params: dict, tasks: int | None) -> dict:
    """``state`` with the adaptation's entries added for each tensor: a zero log multiplier (one per
    task when ``tasks`` instances are stacked, else one) and a zero previous step."""
    out = {}
    for name, p in params.items():
        log_scale = p.new_zeros(tasks) if tasks is not None else p.new_zeros(())
        out[name] = {**state[name], "log_scale": log_scale, "prev_step": torch.zeros_like(p)}
    return out


def adapted(rule, kappa: float, batch_dims: int = 0):
    """The functional step of ``rule`` (``(grads, state, params) -> (new params, new state)``, with
    ``batch_dims`` leading task dimensions) under the adaptation of rate ``kappa``: each tensor's
    step (each task's, when stacked) multiplied by its adapted factor, the adaptation's state kept in
    the tensor's state beside the rule's. ``kappa == 0``: the rule's own step, unwrapped.

    This is the wrapper meta-training applies; ``LearnedOptimizer`` applies the same update in
    place through :func:`next_log_scales`. The multipliers take no part in the meta-gradient (the
    cosine is detached): the rule is trained for the steps it makes under them."""
    def plain(grads, state, params):
        return rule.update_batched(grads, state, params, batch_dims=batch_dims)

    if not kappa:
        return plain

    def step(grads, state, params):
        rule_state = {n: {k: v for k, v in s.items() if k not in ADAPT_KEYS} for n, s in state.items()}
        new_params, new_state = plain(grads, rule_state, params)
        for n, p in params.items():
            log_scale = next_log_scale(state[n]["log_scale"], grads[n].detach(), state[n]["prev_step"].detach(), kappa,
                                       batch_dims=batch_dims)
            factor = torch.exp(log_scale)
            if batch_dims:
                factor = factor.view(*factor.shape, *([1] * (p.dim() - batch_dims)))
            taken = (p - new_params[n]) * factor  # p_old - p_new
            new_params[n] = p - taken
            new_state[n] = {**new_state[n], "log_scale": log_scale, "prev_step": taken}
        return new_params, new_state

    return step
