"""Shared machinery of l2o's hand-designed optimizers.

Every optimizer in :mod:`l2o.optim` follows the same conventions as ``torch.optim``:

* Hyperparameters are checked in ``__init__`` with the ``check_*`` helpers below, which raise a
  ``ValueError`` naming the parameter and the bad value.
* ``foreach: bool | None`` picks the multi-tensor (``torch._foreach_*``) path (``True``) or the
  plain per-tensor loop (``False``); the loop is the reference implementation and the foreach path
  must match it. ``None`` means "the measured default for this optimizer on this device", see
  :func:`resolve_foreach`.
* The step counter lives in ``state["step"]`` as a 0-dim float tensor (as in torch.optim), so
  ``state_dict`` round trips and ``torch.compile`` behave.
* Sparse gradients raise :class:`SparseGradientError` (a ``RuntimeError``) naming the optimizer.
* A non-finite gradient (NaN or ±inf in any entry of any parameter's gradient) skips the whole
  step: no parameter and no state changes, and a :class:`NonFiniteGradientWarning` says so, as
  mixed-precision training skips the step whose scaled gradients overflowed. One bad coordinate
  would otherwise reach every parameter through the group-wide quantities some methods compute
  (SGD-HD's and Adam-HD's hypergradient, YellowFin's tuner). Inside a ``torch.compile``d step
  the check is not made (its host read-back would break the graph). :func:`grads_finite` and
  :func:`warn_nonfinite_skip` are the two halves of that policy, for any optimizer (the learned
  optimizer calls them too).

Subclasses of :class:`L2OOptimizer` implement ``_step_group(group, params, grads)``, which
receives, for one param group, only the parameters that have a gradient.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from numbers import Real

import torch


class SparseGradientError(RuntimeError):
    """Raised when an optimizer that only handles dense gradients gets a sparse one."""


class NonFiniteGradientWarning(RuntimeWarning):
    """Warned when a step is skipped because a gradient holds NaN or infinity."""


def grads_finite(grads: Sequence[torch.Tensor | None]) -> bool:
    """Whether every entry of every gradient is finite (``None`` gradients are ignored).

    One reduction per (device, dtype) bucket and one host synchronisation in the common case:
    each tensor's 2-norm, which is finite only if every entry is. A 2-norm that is not finite
    (a NaN or infinity, or finite entries whose squares overflow) is settled by the largest
    magnitude, which is NaN or infinite exactly when some entry is. (The infinity-norm alone
    would do, but on the CPU ``torch._foreach_norm(..., inf)`` runs some 20 times slower than
    the 2-norm.) Sparse gradients are checked on their stored values.
    """
    dense: list[torch.Tensor] = []
    for g in grads:
        if g is None or g.is_meta:  # a meta tensor has no values to check
            continue
        if g.is_sparse:
            g = g.coalesce().values()
        if g.numel():
            dense.append(g)
    if not dense:
        return True
    return _all_finite(dense, 2.0) or _all_finite(dense, math.inf)


def _all_finite(tensors: list[torch.Tensor], order: float) -> bool:
    """Whether the ``order``-norm of every tensor is finite (one host synchronisation)."""
    norms = []
    for (bucket,) in group_by_device_and_dtype(tensors):
        norms.extend(m.reshape(1) for m in torch._foreach_norm(bucket, order))
    values = torch.cat([m.to(device="cpu", dtype=torch.float64) for m in norms]) if len(
        {m.device for m in norms}) > 1 else torch.cat(norms)
    return bool(torch.isfinite(values).all())


def warn_nonfinite_skip(name: str, step) -> None:
    """Warn that optimizer ``name`` skipped ``step`` because of a non-finite gradient.

    Args:
        name: the optimizer's name, as users know it.
        step: the step number (an int, a 0-dim tensor, or None when unknown).
    """
    if isinstance(step, torch.Tensor):
        step = int(step.item())
    where = f" at step {step}" if step is not None else ""
    warnings.warn(f"{name}: a gradient holds NaN or infinity{where}; the step was skipped (parameters and "
                  "optimizer state unchanged)", NonFiniteGradientWarning, stacklevel=3)


def _as_float(name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"invalid {name}: {value!r} (expected a number or a 1-element tensor)")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"invalid {name}: {value!r} (expected a real number)")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"invalid {name}: {value!r} (NaN)")
    return value


def check_range(name: str, value, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high`` (``<`` where the side is open).

    Args:
        name: the hyperparameter's name, used in the message.
        value: a real number (or a 1-element tensor).
        low, high: bounds, ``None`` for unbounded.
        low_open, high_open: exclude the bound itself.
    """
    number = _as_float(name, value)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        left = "-inf" if low is None else f"{low:g}"
        right = "inf" if high is None else f"{high:g}"
        interval = f"{'(' if low_open or low is None else '['}{left}, {right}{')' if high_open or high is None else ']'}"
        raise ValueError(f"invalid {name}: {value!r} (must be in {interval})")
    if math.isinf(number):
        raise ValueError(f"invalid {name}: {value!r} (must be finite)")


def check_nonnegative(name: str, value) -> None:
    """Raise ``ValueError`` unless ``0 <= value < inf``."""
    check_range(name, value, 0.0, None)


def check_positive(name: str, value) -> None:
    """Raise ``ValueError`` unless ``0 < value < inf``."""
    check_range(name, value, 0.0, None, low_open=True)


def check_beta(name: str, value) -> None:
    """Raise ``ValueError`` unless ``0 <= value < 1`` (a decay rate)."""
    check_range(name, value, 0.0, 1.0, high_open=True)


def check_betas(betas) -> None:
    """Check an Adam-style ``betas=(beta1, beta2)`` pair."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"invalid betas: {betas!r} (expected a pair (beta1, beta2))")
    check_beta("betas[0]", betas[0])
    check_beta("betas[1]", betas[1])


def check_bool(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"invalid {name}: {value!r} (expected True or False)")


def check_foreach(foreach) -> None:
    """``foreach`` must be ``None`` (measured default), ``True`` or ``False``."""
    if foreach is not None and not isinstance(foreach, bool):
        raise ValueError(f"invalid foreach: {foreach!r} (expected None, True or False)")


def resolve_foreach(foreach: bool | None, params: Sequence[torch.Tensor], cpu_default: bool) -> bool:
    """The path to take: ``foreach`` if given, else the optimizer's measured default.

    On CUDA the multi-tensor kernels launch once per group of tensors instead of once per
    tensor, so foreach wins there (torch.optim's choice too). On CPU there is no launch cost
    and the answer depends on the update; each optimizer passes the default that
    ``benchmarks/step_time.py`` measured for it as ``cpu_default``.
    """
    if foreach is not None:
        return foreach
    if params and all(p.device.type == "cuda" for p in params):
        return True
    return cpu_default


def group_by_device_and_dtype(*tensor_lists: Sequence[torch.Tensor]) -> list[tuple[list[torch.Tensor], ...]]:
    """Split aligned tensor lists into sub-lists whose first tensors share device and dtype.

    The ``torch._foreach_*`` kernels require every tensor of one call to share device and
    dtype. Order inside each sub-list follows the input order, so a per-tensor loop and the
    foreach path visit tensors in the same order within a bucket.

    Returns:
        One tuple of lists (one list per input list) per (device, dtype) bucket.
    """
    if not tensor_lists:
        return []
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensor_lists[0]):
        buckets[(tensor.device, tensor.dtype)].append(index)
    return [tuple([lst[i] for i in indices] for lst in tensor_lists) for indices in buckets.values()]


def scalar(value) -> float:
    """A Python float from a 0-dim tensor (``.item()``: faster than tensor arithmetic on the CPU).

    Under ``torch.compile`` this is a graph break; the update itself still compiles.
    """
    return value.item() if isinstance(value, torch.Tensor) else value


def step_value(step: torch.Tensor, dtype: torch.dtype):
    """The step count that per-tensor coefficients (bias corrections, schedules) of a ``dtype``
    parameter are computed from.

    A Python float in eager mode (``.item()`` then float arithmetic: cheaper than tensor
    arithmetic on the CPU). While ``torch.compile`` traces the step it is the step tensor itself,
    cast to ``dtype``: an ``.item()`` would break the graph and specialize it on every new step
    count, and coefficients computed in the parameter's dtype stay cheap inside the fused kernel
    (Inductor recomputes them there; a float64 ``pow`` per vector of a float32 parameter made the
    compiled step twice as slow). With float32 parameters the coefficients carry float32 rounding,
    e.g. ``1 - 0.999 ** 1`` is off by 1.3e-5 relative, as in torch.optim's capturable steps.
    """
    return step.to(dtype) if torch.compiler.is_compiling() else scalar(step)


def step_values(steps: Sequence[torch.Tensor], dtype: torch.dtype) -> list:
    """:func:`step_value` for a list of step tensors."""
    return [step_value(s, dtype) for s in steps]


def addcdiv_(target: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor, coefficient) -> None:
    """``target += coefficient * numerator / denominator`` for a float coefficient (one
    ``addcdiv_``) or, while compiling, a tensor one (see :func:`step_value`)."""
    if isinstance(coefficient, torch.Tensor):
        target.add_(numerator / denominator * coefficient)
    else:
        target.addcdiv_(numerator, denominator, value=coefficient)


def foreach_addcdiv_(targets: list[torch.Tensor], numerators: list[torch.Tensor], denominators: list[torch.Tensor],
                     coefficients: list) -> None:
    """:func:`addcdiv_` for lists: one ``torch._foreach_addcdiv_`` for float coefficients, three
    multi-tensor ops (fused by Inductor) for tensor ones."""
    if coefficients and isinstance(coefficients[0], torch.Tensor):
        update = torch._foreach_div(numerators, denominators)
        torch._foreach_mul_(update, coefficients)
        torch._foreach_add_(targets, update)
    else:
        torch._foreach_addcdiv_(targets, numerators, denominators, coefficients)


def new_step_tensor() -> torch.Tensor:
    """The initial ``state['step']``: a 0-dim float tensor on the CPU, as torch.optim keeps it."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.zeros((), dtype=dtype)


class L2OOptimizer(torch.optim.Optimizer):
    """Base class: closure handling, sparse-gradient check, one ``_step_group`` per param group."""

    #: Name used in error messages (defaults to the class name).
    display_name: str | None = None
    #: Whether sparse gradients are accepted; if False they raise SparseGradientError.
    supports_sparse: bool = False

    def _params_with_grad(self, group: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse and not self.supports_sparse:
                raise SparseGradientError(
                    f"{self.display_name or type(self).__name__} does not support sparse gradients "
                    f"(got one for a parameter of shape {tuple(p.shape)}); use a dense embedding "
                    "(sparse=False) or torch.optim.SparseAdam for that parameter")
            params.append(p)
            grads.append(p.grad)
        return params, grads

    def _step_group(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Perform one optimisation step.

        Args:
            closure: re-evaluates the model and returns the loss (called with gradients enabled).

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [(group, *self._params_with_grad(group)) for group in self.param_groups]
        # Inside a torch.compile'd step the check is left out: its host read-back would break the
        # graph (a fullgraph compile fails); there a non-finite gradient propagates as in torch.optim.
        if not torch.compiler.is_compiling() and not grads_finite([g for _, _, grads in work for g in grads]):
            warn_nonfinite_skip(self.display_name or type(self).__name__, self._step_number(work))
            return loss
        for group, params, grads in work:
            self._step_group(group, params, grads)
        return loss

    def _step_number(self, work) -> int | None:
        """The number of the step being taken (1 for the first), for messages; None if unknown."""
        for _, params, _ in work:
            for p in params:
                step = self.state[p].get("step") if p in self.state else None
                if isinstance(step, torch.Tensor):
                    return int(step.item()) + 1
                if isinstance(step, (int, float)):
                    return int(step) + 1
        return None
