"""The gradient noise scale of McCandlish et al. (2018) and the SGD noise scales of Smith & Le
(2018) and Park et al. (2019).

``B_simple = tr(Σ) / |G|²``, where ``G`` is the expected gradient of the mean loss and ``Σ`` the
covariance of one example's gradient. Two estimators:

- :func:`exact_noise_scale`: per-example gradients (``torch.func.vmap`` over ``torch.func.grad``)
  over the given examples, in chunks, never holding more than one chunk of them. ``tr(Σ)`` and
  ``|G|²`` are the unbiased estimates (``n − 1`` denominator; ``|ḡ|² − tr(Σ)/n``), with jackknife
  standard errors.
- :func:`two_batch_noise_scale`: McCandlish et al.'s Appendix A estimator from the squared norms of
  batch gradients at two batch sizes, ``E|G_B|² = |G|² + tr(Σ)/B``, averaged over draws, with
  standard errors over the draws. It costs one ordinary backward pass over the large batch per draw.

Both take the loss in functional form, ``loss_of(params, inputs, targets) -> mean loss``;
:func:`gradient_noise_scale` wraps an ``nn.Module`` and a ``loss_fn(outputs, targets)`` and
:func:`task_noise_scale` an :class:`l2o.tasks.Task` whose batches are ``(inputs, targets)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

LossOf = Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]

#: the relative mismatch between a batch's gradient and the mean of its per-example gradients
#: beyond which the loss is refused as not being a mean over independent examples
MEAN_CHECK_TOLERANCE = 1e-3


@dataclass(frozen=True)
class NoiseScale:
    """A measured gradient noise scale.

    Attributes:
        b_simple: ``tr(Σ) / |G|²`` (``inf`` where the estimate of ``|G|²`` is not positive: the
            gradient is not distinguishable from its noise).
        trace_cov: estimate of ``tr(Σ)``, the trace of the per-example gradient covariance.
        grad_sq_norm: unbiased estimate of ``|G|²``, the squared norm of the expected gradient.
        b_simple_se, trace_cov_se, grad_sq_norm_se: standard errors (jackknife over examples for
            ``method="exact"``, over draws for ``"two_batch"``); None where they cannot be formed.
        method: ``"exact"`` or ``"two_batch"``.
        examples: examples used (``exact``) or drawn (``two_batch``: draws x big batch).
        mean_grad_sq_norm: ``|ḡ|²`` of the data's mean gradient (biased upward by ``tr(Σ)/n``;
            ``exact`` only).
        batch_sizes: ``(small, big)`` for ``two_batch``; None for ``exact``.
    """

    b_simple: float
    trace_cov: float
    grad_sq_norm: float
    b_simple_se: float | None = None
    trace_cov_se: float | None = None
    grad_sq_norm_se: float | None = None
    method: str = "exact"
    examples: int = 0
    mean_grad_sq_norm: float | None = None
    batch_sizes: tuple[int, int] | None = None

    def as_dict(self) -> dict:
        """The fields as a JSON-friendly dict (non-finite values stay floats; pass the result
        through :func:`l2o.io.jsonable` before writing strict JSON)."""
        out = asdict(self)
        if self.batch_sizes is not None:
            out["batch_sizes"] = list(self.batch_sizes)
        return out

    def __str__(self) -> str:
        def pm(value, se):
            return f"{value:.4g}" + (f" ± {se:.2g}" if se is not None and math.isfinite(se) else "")

        return (f"B_simple = {pm(self.b_simple, self.b_simple_se)} (tr Σ = {pm(self.trace_cov, self.trace_cov_se)}, "
                f"|G|² = {pm(self.grad_sq_norm, self.grad_sq_norm_se)}; {self.method}, {self.examples} examples)")


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.inf


def _flat(grads: dict[str, Tensor] | tuple[Tensor, ...]) -> Tensor:
    """The gradients as one flat float64 vector."""
    values = grads.values() if isinstance(grads, dict) else grads
    return torch.cat([g.reshape(-1) for g in values]).double()


def _check_data(inputs: Tensor, targets: Tensor) -> int:
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise ValueError("inputs and targets must be tensors with the examples along their first dimension")
    if inputs.dim() == 0 or targets.dim() == 0 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets must have the same number of examples along dimension 0, "
                         f"got shapes {tuple(inputs.shape)} and {tuple(targets.shape)}")
    n = int(inputs.shape[0])
    if n < 2:
        raise ValueError(f"the gradient noise scale needs at least 2 examples (a batch of {n} has no spread "
                         "between per-example gradients to measure)")
    return n


def _scalar_loss(loss_of: LossOf, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    loss = loss_of(params, x, y)
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise ValueError(f"the loss must be a scalar, the mean over the batch; got {shape} "
                         "(use reduction='mean', not 'none')")
    return loss


def _batch_grad(loss_of: LossOf, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        loss = _scalar_loss(loss_of, leaves, x, y)
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return _flat(tuple(torch.zeros_like(p) if g is None else g for p, g in zip(leaves.values(), grads)))


def _check_mean(batch_grad: Tensor, mean_of_examples: Tensor, batch: int) -> None:
    """Refuse a loss whose batch gradient is not the mean of its per-example gradients."""
    scale = max(float(batch_grad.norm()), float(mean_of_examples.norm()))
    if scale == 0.0:
        return
    mismatch = float((batch_grad - mean_of_examples).norm()) / scale
    if mismatch > MEAN_CHECK_TOLERANCE:
        ratio = float(batch_grad @ mean_of_examples) / max(float(mean_of_examples @ mean_of_examples), 1e-300)
        hint = (f"; it is {ratio:.3g} times their mean, as for a sum over the {batch} examples: divide by the "
                "batch size (reduction='mean')" if abs(ratio - batch) < 0.05 * batch else "")
        raise ValueError(
            f"the loss's gradient on a batch of {batch} is not the mean of its per-example gradients (relative "
            f"mismatch {mismatch:.2g}){hint}. The loss must be the mean over independent examples (no sum, no "
            "batch normalization in training mode, no term that couples examples) and deterministic (no dropout: "
            "use model.eval())")


def exact_noise_scale(loss_of: LossOf, params: dict[str, Tensor], inputs: Tensor, targets: Tensor, *,
                      chunk_size: int | None = None) -> NoiseScale:
    """``B_simple`` from every example's own gradient (``vmap(grad)``), in chunks.

    Args:
        loss_of: ``loss_of(params, inputs, targets)``, the mean loss over the examples given.
        params: the parameters (a dict of tensors); gradients are taken with respect to all of them.
        inputs, targets: the examples, along dimension 0 (at least 2).
        chunk_size: examples per ``vmap`` call (default: as many as fit in about 16M gradient entries).

    Cost: one ordinary backward pass over the data plus one per-example pass (``vmap``), and two
    scalars per example; memory one chunk of per-example gradients.
    """
    n = _check_data(inputs, targets)
    params = {k: v.detach() for k, v in params.items()}
    size = sum(p.numel() for p in params.values())
    chunk = int(chunk_size) if chunk_size else max(2, min(n, (1 << 24) // max(size, 1)))
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    starts = range(0, n, chunk)

    # Pass 1: the data's mean gradient (ordinary backward, chunk by chunk, weighted by chunk size).
    mean_grad = torch.zeros(size, dtype=torch.float64)
    first_grad = None
    for s in starts:
        g = _batch_grad(loss_of, params, inputs[s:s + chunk], targets[s:s + chunk])
        first_grad = g if first_grad is None else first_grad
        mean_grad += g * (min(n, s + chunk) - s) / n

    # Pass 2: per-example gradients, reduced on the fly to |d_i|², d_i·ḡ and Σ d_i, d_i = g_i − ḡ.
    def one(p, x, y):
        return _scalar_loss(loss_of, p, x.unsqueeze(0), y.unsqueeze(0))

    per_example = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))
    names = list(params)
    offsets = [0]
    for k in names:
        offsets.append(offsets[-1] + params[k].numel())
    sq, dots = [], []
    dsum = torch.zeros(size, dtype=torch.float64)
    for s in starts:
        x, y = inputs[s:s + chunk], targets[s:s + chunk]
        m = x.shape[0]
        grads = per_example(params, x, y)
        if s == 0 and m >= 2:
            _check_mean(first_grad, torch.cat([grads[k].reshape(m, -1).mean(0) for k in names]).double(), m)
        # d_i = g_i − ḡ tensor by tensor in the parameters' dtype (centred: no cancellation), sums in float64
        sq_chunk = torch.zeros(m, dtype=torch.float64)
        dot_chunk = torch.zeros(m, dtype=torch.float64)
        for k, lo, hi in zip(names, offsets[:-1], offsets[1:]):
            g = grads[k].reshape(m, -1)
            c = mean_grad[lo:hi].to(g.dtype)
            d = g - c
            dsum[lo:hi] += d.sum(0).double()
            sq_chunk += torch.linalg.vector_norm(d, dim=1).double() ** 2
            dot_chunk += (d @ c).double()
        sq.append(sq_chunk)
        dots.append(dot_chunk)
    a, e = torch.cat(sq), torch.cat(dots)
    c2 = float(mean_grad @ mean_grad)
    big_a, d2, cd = float(a.sum()), float(dsum @ dsum), float(mean_grad @ dsum)

    ss = big_a - d2 / n                      # Σ|g_i − ḡ|², exact for any reference vector
    mean_sq = c2 + 2 * cd / n + d2 / n**2     # |ḡ|²
    trace = ss / (n - 1)
    g2 = mean_sq - trace / n
    b = _ratio(trace, g2)

    se_trace = se_g2 = se_b = None
    if n >= 3:  # jackknife (leave one example out); the terms in d_i·Σd (rounding size) are dropped
        m = n - 1
        ss_i = (big_a - a) - (d2 + a) / m
        tr_i = ss_i / (m - 1)
        msq_i = c2 + 2 * (cd - e) / m + (d2 + a) / m**2
        g2_i = msq_i - tr_i / m
        b_i = torch.where(g2_i > 0, tr_i / g2_i.clamp_min(1e-300), torch.full_like(g2_i, math.inf))

        def jack(values: Tensor) -> float:
            if not bool(torch.isfinite(values).all()):
                return math.inf
            return float(((values - values.mean()) ** 2).sum() * (n - 1) / n) ** 0.5

        se_trace, se_g2, se_b = jack(tr_i), jack(g2_i), jack(b_i)
    return NoiseScale(b_simple=b, trace_cov=trace, grad_sq_norm=g2, b_simple_se=se_b, trace_cov_se=se_trace,
                      grad_sq_norm_se=se_g2, method="exact", examples=n, mean_grad_sq_norm=mean_sq)


def two_batch_estimate(sq_norm_small, sq_norm_big, small_batch: int, big_batch: int):
    """McCandlish et al.'s unbiased estimates from ``|G_B|²`` at two batch sizes (their Appendix A.1).

    With ``E|G_B|² = |G|² + tr(Σ)/B`` (batches of B examples drawn independently, with replacement):

        |G|²  = (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)
        tr(Σ) = (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)

    Each is unbiased; their ratio is not (average many of each, then divide). Works on floats and
    on tensors/arrays of squared norms alike. Returns ``(trace_cov, grad_sq_norm)``.
    """
    small_batch, big_batch = int(small_batch), int(big_batch)
    if not 1 <= small_batch < big_batch:
        raise ValueError(f"need 1 <= small_batch < big_batch, got {small_batch} and {big_batch}")
    g2 = (big_batch * sq_norm_big - small_batch * sq_norm_small) / (big_batch - small_batch)
    trace = (sq_norm_small - sq_norm_big) / (1.0 / small_batch - 1.0 / big_batch)
    return trace, g2


def _ratio_se(num: Tensor, den: Tensor) -> tuple[float, float, float, float, float]:
    """Means of ``num`` and ``den`` over draws, their standard errors, and the delta-method standard
    error of the ratio of the means."""
    k = num.numel()
    mn, md = float(num.mean()), float(den.mean())
    if k < 2:
        return mn, md, math.nan, math.nan, math.nan
    vn, vd = float(num.var()) / k, float(den.var()) / k
    cov = float(((num - mn) * (den - md)).sum()) / (k - 1) / k
    if md <= 0:
        return mn, md, vn**0.5, vd**0.5, math.inf
    r = mn / md
    var_r = (vn - 2 * r * cov + r * r * vd) / md**2
    return mn, md, vn**0.5, vd**0.5, max(var_r, 0.0) ** 0.5


def two_batch_noise_scale(loss_of: LossOf, params: dict[str, Tensor], inputs: Tensor, targets: Tensor, *,
                          small_batch: int | None = None, big_batch: int | None = None, draws: int = 16,
                          generator: torch.Generator | None = None) -> NoiseScale:
    """``B_simple`` from batch gradients at two batch sizes, without per-example gradients.

    Each draw takes ``big_batch`` examples uniformly with replacement, its first ``small_batch`` of
    them the small batch; the gradients of the small batch and of the rest give both norms from one
    pass over the big batch. ``tr(Σ)`` and ``|G|²`` are averaged over the draws before dividing.

    Args:
        loss_of, params, inputs, targets: as for :func:`exact_noise_scale`.
        small_batch, big_batch: the two batch sizes (default: ``big = min(n, 512)``, ``small = big // 4``).
        draws: independent draws (at least 2 for standard errors).
        generator: the random source of the draws (a fixed seed by default).
    """
    n = _check_data(inputs, targets)
    big = int(big_batch) if big_batch is not None else min(n, 512)
    small = int(small_batch) if small_batch is not None else max(1, big // 4)
    two_batch_estimate(0.0, 0.0, small, big)  # validates the sizes
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    params = {k: v.detach() for k, v in params.items()}
    sq_small, sq_big = [], []
    for k in range(int(draws)):
        idx = torch.randint(0, n, (big,), generator=generator)
        g_small = _batch_grad(loss_of, params, inputs[idx[:small]], targets[idx[:small]])
        g_rest = _batch_grad(loss_of, params, inputs[idx[small:]], targets[idx[small:]])
        g_big = (small * g_small + (big - small) * g_rest) / big
        if k == 0:  # the big batch's own gradient must be the combination of its parts' means
            _check_mean(_batch_grad(loss_of, params, inputs[idx], targets[idx]), g_big, big)
        sq_small.append(float(g_small @ g_small))
        sq_big.append(float(g_big @ g_big))
    trace, g2 = two_batch_estimate(torch.tensor(sq_small, dtype=torch.float64),
                                   torch.tensor(sq_big, dtype=torch.float64), small, big)
    mt, mg, st, sg, sb = _ratio_se(trace, g2)
    nan_none = (lambda v: None if isinstance(v, float) and math.isnan(v) else v)
    return NoiseScale(b_simple=_ratio(mt, mg), trace_cov=mt, grad_sq_norm=mg, b_simple_se=nan_none(sb),
                      trace_cov_se=nan_none(st), grad_sq_norm_se=nan_none(sg), method="two_batch",
                      examples=int(draws) * big, batch_sizes=(small, big))


def noise_scale_functional(loss_of: LossOf, params: dict[str, Tensor], inputs: Tensor, targets: Tensor, *,
                           method: str = "exact", **options) -> NoiseScale:
    """Dispatch to :func:`exact_noise_scale` (``method="exact"``) or :func:`two_batch_noise_scale`."""
    if method == "exact":
        return exact_noise_scale(loss_of, params, inputs, targets, **options)
    if method == "two_batch":
        return two_batch_noise_scale(loss_of, params, inputs, targets, **options)
    raise ValueError(f"method must be 'exact' or 'two_batch', got {method!r}")


def module_loss(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[LossOf, dict[str, Tensor]]:
    """``(loss_of, params)`` for an ``nn.Module``: its trainable parameters, and the loss of
    ``loss_fn(model(inputs), targets)`` as a function of them through ``functional_call`` (buffers
    and frozen parameters held fixed)."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    if not params:
        raise ValueError("the model has no parameter that requires grad")
    fixed = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    fixed.update(dict(model.named_buffers()))

    def loss_of(p, x, y):
        return loss_fn(torch.func.functional_call(model, (p, fixed), (x,)), y)

    return loss_of, params


def gradient_noise_scale(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], inputs: Tensor,
                         targets: Tensor, *, method: str = "exact", **options) -> NoiseScale:
    """The gradient noise scale ``B_simple = tr(Σ)/|G|²`` of ``model`` on the given examples.

    Args:
        model: an ``nn.Module`` whose examples are independent (evaluation mode for batch norm).
        loss_fn: ``loss_fn(outputs, targets)``, the MEAN loss over the batch (refused otherwise).
        inputs, targets: the examples along dimension 0 (at least 2), e.g. the training set.
        method: ``"exact"`` (per-example gradients; options ``chunk_size``) or ``"two_batch"``
            (McCandlish's estimator; options ``small_batch``, ``big_batch``, ``draws``, ``generator``).

    Returns:
        a :class:`NoiseScale` with ``b_simple``, ``trace_cov``, ``grad_sq_norm`` and their standard errors.
    """
    loss_of, params = module_loss(model, loss_fn)
    return noise_scale_functional(loss_of, params, inputs, targets, method=method, **options)


def task_noise_scale(task, params: dict[str, Tensor], inputs: Tensor, targets: Tensor, *, method: str = "exact",
                     **options) -> NoiseScale:
    """:func:`gradient_noise_scale` for an :class:`l2o.tasks.Task` whose ``loss(params, (x, y))`` is the
    mean loss over the examples of ``(x, y)`` (every supervised task of l2o)."""
    return noise_scale_functional(lambda p, x, y: task.loss(p, (x, y)), params, inputs, targets,
                                  method=method, **options)


def final_b_simple(task, params: dict[str, Tensor], max_examples: int = 2048) -> float | None:
    """``B_simple`` (exact) of a task's parameters on (at most ``max_examples`` of) its training set,
    for the benchmark's optional column: None where the task has no ``x_train``/``y_train``, where
    the estimate is not finite, or where the measurement fails (a task whose loss does not allow
    per-example gradients); never raises."""
    x, y = getattr(task, "x_train", None), getattr(task, "y_train", None)
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape[0] < 2:
        return None
    try:
        result = task_noise_scale(task, {k: v.detach() for k, v in params.items()}, x[:max_examples], y[:max_examples])
    except (ValueError, RuntimeError):
        return None
    return result.b_simple if math.isfinite(result.b_simple) else None
