"""``LearnedOptimizer``: any learned update rule as an ordinary ``torch.optim.Optimizer``.

Usage::

    opt = l2o.LearnedOptimizer.pretrained("l2l-digits", model.parameters())
    for x, y in loader:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

The rule's per-parameter state (e.g. the LSTM's hidden and cell states) lives in
``optimizer.state[p]`` as tensors, so ``state_dict()`` / ``load_state_dict()`` round trip and
training continues identically. The rule's weights are not part of the optimizer's state dict:
they are fixed (shipped or loaded from a file).
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable, Iterable

import torch

from l2o.learned.adaptation import check_adapt, default_adapt, next_log_scales
from l2o.learned.base import LearnedRule
from l2o.optim._base import grads_finite, warn_nonfinite_skip


def _refuse_sharded(params: list) -> None:
    """FSDP's sharded parameters (FSDP2's DTensors, FSDP1's flat parameters) are refused: each rank
    would hold a slice of every tensor, and a rule's per-tensor quantities (the MLP rule's tensor
    features, the step-size adaptation's cosine) would be computed on the slice, so the ranks would
    take different steps from the one the weights were meta-trained for. DistributedDataParallel
    (whole tensors on every rank, gradients all-reduced in the backward pass) works unchanged."""
    for p in params:
        sharded = getattr(p, "_is_flat_param", False) or type(p).__name__ == "DTensor" or \
            type(getattr(p, "data", None)).__name__ == "DTensor"
        if sharded:
            raise ValueError("LearnedOptimizer cannot step FSDP's sharded parameters: its rule computes per-tensor "
                             "quantities that a shard of a tensor does not have; wrap the model in "
                             "DistributedDataParallel instead (every rank keeps whole tensors)")


class LearnedOptimizer(torch.optim.Optimizer):
    """Applies a trained :class:`~l2o.learned.base.LearnedRule` to ``params``.

    All parameters with a gradient are processed in one call of the rule (a coordinatewise
    rule sees every coordinate in one batch).

    Args:
        params: iterable of tensors or of param-group dicts.
        rule: the trained rule; None loads the shipped ``"l2l-digits"`` LSTM.
        lr: a multiplier of the rule's update (1.0 applies it exactly as meta-trained); kept
            per param group so learning-rate schedulers work.
        fused: run the rule's step as compiled passes over each tensor (rules with
            ``supports_fused``, i.e. the MLP rule): about 2.3-2.5 times faster on large tensors on a
            CPU. The first step compiles them with ``torch.compile`` (about 10-30 s on a CPU for
            each tensor rank among tensors of over 4,096 elements, cached on disk for later
            processes); without a working compiler it warns and runs
            the unfused step. Same numbers up to float rounding.
        adapt: rate ``kappa`` of a per-tensor step-size adaptation on top of the rule (0: off;
            None, the default: the rate the weights were meta-trained under, from their card: 0.1
            for ``mlp-general``, 0 for the other shipped rules). Each tensor keeps a log step
            multiplier ``l`` and its previous step ``u``; before each step,
            ``l += kappa * cos(g, u)`` (clipped to ``+-log(1e4)``) and the rule's step is
            multiplied by ``lr * exp(l)``. ``-g . u`` is the
            derivative of the loss with respect to the previous step's size (the hypergradient of
            Baydin et al. 2018), so the multiplier grows while successive steps keep pointing
            downhill and shrinks when they overshoot. Costs one more number per parameter
            (``u``) and a dot product and two norms per tensor. See docs/methods/mlp_lopt.md.

    The parameters must all be on one device; the rule runs there (a copy of it is moved there
    when its weights are elsewhere, e.g. shipped weights, which load on the CPU). The rule computes
    in float32 (its weights' dtype) for float32, bfloat16 and float16 parameters, with its state
    in float32, and in float64 when any parameter is float64 (on a float64 copy of the rule).
    """

    def __init__(self, params: Iterable, rule: LearnedRule | None = None, lr: float = 1.0, fused: bool = False,
                 adapt: float | None = None):
        if not (lr >= 0.0):
            raise ValueError(f"lr must be >= 0, got {lr}")
        if rule is None:
            from l2o.learned.weights import PRETRAINED

            rule = PRETRAINED.load("l2l-digits")
        if not isinstance(rule, LearnedRule):
            raise ValueError(f"rule must be a LearnedRule, got {type(rule).__name__}")
        adapt = default_adapt(rule) if adapt is None else check_adapt(adapt)
        if fused and not rule.supports_fused:
            raise ValueError(f"fused=True needs a rule with a fused step (the MLP rule); {type(rule).__name__} has none")
        self.fused, self.adapt = bool(fused), adapt
        super().__init__(params, {"lr": lr})
        _refuse_sharded([p for group in self.param_groups for p in group["params"]])
        devices = {p.device for group in self.param_groups for p in group["params"]}
        if len(devices) > 1:
            raise ValueError(f"LearnedOptimizer needs all parameters on one device, got {sorted(map(str, devices))}; "
                             "use one optimizer per device")
        # The rule's weights must live where the parameters are (a shipped rule loads on the CPU),
        # and be float64 when some parameters are (the rule computes in its own dtype; half
        # precision parameters are computed on in float32): a copy is moved and converted, so a
        # rule shared with other optimizers is left as it was.
        self.rule = rule
        if devices:
            device = devices.pop()
            wide = any(p.dtype == torch.float64 for group in self.param_groups for p in group["params"])
            tensors = [*rule.parameters(), *rule.buffers()]
            if any(t.device != device for t in tensors) or (wide and any(
                    t.is_floating_point() and t.dtype != torch.float64 for t in rule.parameters())):
                self.rule = copy.deepcopy(rule).to(device)
                if wide:
                    self.rule = self.rule.double()
        for p in self.rule.parameters():
            p.requires_grad_(False)

    @classmethod
    def pretrained(cls, name: str, params: Iterable, **kwargs) -> LearnedOptimizer:
        """An optimizer running the shipped weights ``name`` (see ``l2o.learned.PRETRAINED``)."""
        from l2o.learned.weights import PRETRAINED

        return cls(params, rule=PRETRAINED.load(name), **kwargs)

    @classmethod
    def from_file(cls, path: str | os.PathLike, params: Iterable, **kwargs) -> LearnedOptimizer:
        """An optimizer running the weights saved at ``path`` by :func:`l2o.learned.save_rule`."""
        from l2o.learned.weights import load_rule

        return cls(params, rule=load_rule(path), **kwargs)

    def step(self, closure: Callable | None = None):
        """One step of the rule on every parameter with a gradient; returns the closure's loss.

        Under ``torch.compile`` the step runs eagerly (one warning): its per-step host work (the
        finiteness check, the adaptation's multipliers, the per-tensor dispatch) would break the
        graph and recompile as gradients are re-allocated; ``fused=True`` is the compiled path.
        """
        return self._eager_step(closure, torch.compiler.is_compiling())

    @torch.compiler.disable
    @torch.no_grad()
    def _eager_step(self, closure: Callable | None, compiling: bool):
        if compiling and not getattr(self, "_warned_compile", False):
            self._warned_compile = True
            warnings.warn("LearnedOptimizer.step is not compiled: it runs eagerly under torch.compile "
                          "(LearnedOptimizer(..., fused=True) runs the rule's step as compiled kernels)",
                          UserWarning, stacklevel=3)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with_grads = [(p, group["lr"]) for group in self.param_groups for p in group["params"] if p.grad is not None]
        if any(p.grad.is_sparse for p, _ in with_grads):
            raise RuntimeError("LearnedOptimizer does not support sparse gradients")
        # The optimizers' one policy (l2o.optim): a non-finite gradient skips the whole step.
        if not grads_finite([p.grad for p, _ in with_grads]):
            warn_nonfinite_skip("LearnedOptimizer", None)
            return loss
        entries = []  # (key, param, lr)
        params, grads = {}, {}
        for p, lr in with_grads:
            key = str(len(entries))
            state = self.state[p]
            if not state:
                state.update(self.rule.init_state({key: p.detach()})[key])
            entries.append((key, p, lr))
            params[key], grads[key] = p.detach(), p.grad
        if not entries:
            return loss
        if self.adapt:
            multipliers = self._adapted_multipliers([p for _, p, _ in entries])
            entries = [(key, p, lr * m) for (key, p, lr), m in zip(entries, multipliers)]
        # The rule's in-place step (``LearnedRule.update_``: its own where it declares
        # ``supports_in_place``, else ``update`` copied in place), the adaptation's entries left alone.
        self.rule.update_(grads, {key: self.state[p] for key, p, _ in entries}, params,
                          {key: lr for key, _, lr in entries}, fused=self.fused)
        if self.adapt:  # prev_step held p before the step: now the step taken
            torch._foreach_sub_([self.state[p]["prev_step"] for _, p, _ in entries], [p for _, p, _ in entries])
        return loss

    def _adapted_multipliers(self, params: list[torch.Tensor]) -> list[float] | list[torch.Tensor]:
        """Update each tensor's log step multiplier from cos(g, previous step); exp of each. Leaves
        a copy of ``p`` in ``state["prev_step"]``, from which ``step`` subtracts the new ``p``.
        On the CPU the multipliers are read back as floats (free there); elsewhere they stay on
        the device as 0-d tensors that the rule's step multiplies by (reading them back would
        wait for the device at every step). All parameters share one device (``__init__``)."""
        states = [self.state[p] for p in params]
        for p, state in zip(params, states):
            if "log_scale" not in state:
                state["log_scale"] = torch.zeros((), dtype=torch.float64, device=p.device)
                state["prev_step"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        log_scales, steps = [st["log_scale"] for st in states], [st["prev_step"] for st in states]
        new = next_log_scales(torch.stack(log_scales), [p.grad for p in params], steps, self.adapt)
        torch._foreach_copy_(log_scales, list(new.unbind()))
        torch._foreach_copy_(steps, params)
        if params[0].device.type != "cpu":
            return list(new.exp().unbind())
        return [math.exp(v) for v in new.tolist()]

    def state_dict(self) -> dict:
        """As ``torch.optim.Optimizer.state_dict``, with the state tensors copied: the result is a
        snapshot even for rules that update their state in place."""
        result = super().state_dict()
        result["state"] = {k: _copy_tensors(s) for k, s in result["state"].items()}
        return result

    def load_state_dict(self, state_dict: dict) -> None:
        """As ``torch.optim.Optimizer.load_state_dict``; the optimizer keeps its own copies of the
        state tensors, so in-place steps never write into ``state_dict``, and in the dtype they
        were saved in (torch.optim would cast them to the parameter's: the float32 state of
        half-precision parameters would lose its precision)."""
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        # the saved ids and the parameters, paired group by group as torch.optim pairs them
        ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        for pid, p in zip(ids, (p for group in self.param_groups for p in group["params"])):
            if pid in saved:
                self.state[p] = {k: (v.to(device=p.device, copy=True) if isinstance(v, torch.Tensor) else v)
                                 for k, v in saved[pid].items()}


def _copy_tensors(state: dict) -> dict:
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
