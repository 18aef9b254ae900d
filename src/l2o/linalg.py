"""Linear algebra on tensors and tuples of tensors: conjugate gradient and Hessian-vector products.

Shared by the rooms that solve linear systems with a Hessian they never materialize:
Follow-the-Ridge (H_yy^-1 H_yx grad_x f), iMAML ((I + H/lambda)^-1 grad L_test) and the
reversible-learning hypergradients. torch has no CG solver and torch.func has no ``hvp``.

A "vector" here is a tensor or a tuple of tensors (one per parameter): the operations below
treat a tuple as the concatenation of its flattened parts, without copying it into one tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Vector = torch.Tensor | tuple[torch.Tensor, ...]


def _parts(v: Vector) -> tuple[torch.Tensor, ...]:
    return (v,) if isinstance(v, torch.Tensor) else tuple(v)


def _like(template: Vector, parts: Sequence[torch.Tensor]) -> Vector:
    return parts[0] if isinstance(template, torch.Tensor) else tuple(parts)


def vdot(a: Vector, b: Vector) -> torch.Tensor:
    """The inner product of two vectors (a 0-dim tensor)."""
    pa, pb = _parts(a), _parts(b)
    if len(pa) != len(pb):
        raise ValueError(f"vectors have {len(pa)} and {len(pb)} parts")
    total = None
    for x, y in zip(pa, pb):
        term = torch.sum(x * y)
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def _norm(v: Vector) -> float:
    """||v||, computed without overflow or underflow of its square (scaled by the largest entry)."""
    parts = [p.detach() for p in _parts(v)]
    largest = max((float(p.abs().max()) for p in parts if p.numel()), default=0.0)
    if largest == 0.0 or not math.isfinite(largest):
        return largest
    return largest * math.sqrt(sum(float(torch.sum((p.double() / largest) ** 2)) for p in parts))


def axpy(alpha, x: Vector, y: Vector) -> Vector:
    """``alpha * x + y``, out of place (``alpha`` a number or a 0-dim tensor)."""
    return _like(y, [b + alpha * a for a, b in zip(_parts(x), _parts(y))])


def scale(alpha, x: Vector) -> Vector:
    """``alpha * x``, out of place."""
    return _like(x, [alpha * a for a in _parts(x)])


@dataclass
class CGResult:
    """What :func:`conjugate_gradient` found: the solution and how far it got."""

    x: Vector
    iterations: int
    residual_norm: float
    converged: bool


def _safe_range(b: Vector) -> tuple[float, float]:
    """||b|| outside this range is scaled to 1 before solving, so that products of order ||b||^2
    stay normal floats of b's dtype (float32: about 1e-16 to 1e16; float64: 1e-151 to 1e151)."""
    info = torch.finfo(_parts(b)[0].dtype)
    return math.sqrt(info.tiny) * 1e3, math.sqrt(info.max) * 1e-3


def conjugate_gradient(matvec: Callable[[Vector], Vector], b: Vector, *, max_iter: int, tol: float = 0.0,
                       x0: Vector | None = None, semidefinite: bool = False) -> CGResult:
    """Solve ``A x = b`` for a symmetric positive-definite ``A`` given as ``matvec(v) = A v``.

    Args:
        matvec: the product with ``A`` (for a Hessian: a Hessian-vector product).
        b: the right-hand side, a tensor or a tuple of tensors.
        max_iter: at most this many iterations (products with ``A``), >= 1.
        tol: stop once ``||r|| <= tol * ||b||`` (0: run all ``max_iter`` iterations, as papers
            that fix the number of CG steps do).
        x0: the starting point (default zero, which needs no product with ``A``).
        semidefinite: ``A`` is positive semidefinite by construction (normal equations, a
            Gram matrix): a p^T A p <= 0 can only be rounding or the null space, so CG stops
            there with what it found instead of raising.

    Returns:
        A :class:`CGResult`; ``x`` has the structure of ``b``. The iterations are ordinary
        tensor operations: differentiable if ``matvec`` and ``b`` are, so callers that only want
        the solution run it under ``torch.no_grad()``.
    """
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a whole number >= 1, got {max_iter!r}")
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    b_norm = _norm(b)
    if not math.isfinite(b_norm):
        raise ValueError("conjugate_gradient: the right-hand side is not finite")
    low, high = _safe_range(b)
    if b_norm > 0 and not low <= b_norm <= high:
        # The solution is linear in b: solve for b / ||b|| and scale back, so that the inner
        # products (of order ||b||^2) neither underflow to 0 near a converged fixed point nor overflow.
        unit = conjugate_gradient(matvec, scale(1.0 / b_norm, b), max_iter=max_iter, tol=tol,
                                  x0=None if x0 is None else scale(1.0 / b_norm, x0))
        return CGResult(scale(b_norm, unit.x), unit.iterations, unit.residual_norm * b_norm, unit.converged)
    if x0 is None:
        x = scale(0.0, b)
        r = b
    else:
        x = x0
        r = axpy(-1.0, matvec(x0), b)
    p = r
    rr = vdot(r, r)
    iterations = 0
    threshold = tol * b_norm
    if float(torch.sqrt(rr)) <= threshold or b_norm == 0.0:
        return CGResult(x, 0, float(torch.sqrt(rr)), True)
    for iterations in range(1, int(max_iter) + 1):
        ap = matvec(p)
        pap = vdot(p, ap)
        if (semidefinite and not float(pap) > 0) or (float(pap) == 0.0 and float(vdot(ap, ap)) == 0.0):
            # A p vanished (or, for a semidefinite A, p^T A p <= 0 by rounding): p shrank to
            # rounding (b solved to working precision, or products that underflow), or p lies in
            # the null space of a singular A. CG cannot go further along p either way; what it
            # found so far is its answer.
            break
        if not float(pap) > 0:
            # A is not positive definite along p: CG's step is undefined.
            raise ValueError(f"conjugate_gradient: p^T A p = {float(pap):.3g} <= 0 at iteration {iterations}; "
                             "the matrix is not positive definite (damp it, or solve the normal equations)")
        alpha = rr / pap
        x = axpy(alpha, p, x)
        r = axpy(-alpha, ap, r)
        rr_new = vdot(r, r)
        if float(torch.sqrt(rr_new)) <= threshold:
            rr = rr_new
            break
        p = axpy(rr_new / rr, p, r)
        rr = rr_new
    residual = float(torch.sqrt(rr))
    return CGResult(x, iterations, residual, residual <= threshold)


def grad_dot(grads: Sequence[torch.Tensor | None], v: Sequence[torch.Tensor], wrt: Sequence[torch.Tensor], *,
             create_graph: bool = False) -> tuple[torch.Tensor, ...]:
    """``d/d wrt (sum_i grads_i . v_i)`` by one backward pass through ``grads`` (built with a graph).

    With ``grads = grad_w f`` this is a Hessian-vector product: ``H_ww v`` for ``wrt = w`` (see
    :func:`hvp`), the mixed ``H_{w'w} v`` for another set ``wrt = w'``. Gradients without a graph
    (``None``, or f linear in those tensors) contribute nothing; tensors of ``wrt`` that the product
    does not reach get zeros.
    """
    wrt = tuple(wrt)
    v = tuple(v)
    if len(v) != len(grads):
        raise ValueError(f"grad_dot: {len(v)} vectors for {len(grads)} gradients")
    pairs = [(g, u) for g, u in zip(grads, v) if g is not None and g.requires_grad]
    if not pairs:
        return tuple(torch.zeros_like(p) for p in wrt)
    dot = sum(torch.sum(g * u) for g, u in pairs)
    out = torch.autograd.grad(dot, wrt, retain_graph=True, create_graph=create_graph, allow_unused=True)
    return tuple(torch.zeros_like(p) if o is None else o for o, p in zip(out, wrt))


def hvp(loss: torch.Tensor, params: Sequence[torch.Tensor], v: Sequence[torch.Tensor], *,
        create_graph: bool = False, grads: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """The Hessian-vector product ``H v`` of ``loss`` with respect to ``params``, by double backward.

    Args:
        loss: a scalar built from ``params`` with a graph.
        params: the tensors to differentiate with respect to.
        v: one tensor per parameter, shaped like it.
        create_graph: keep the graph of the product (to differentiate through it).
        grads: ``torch.autograd.grad(loss, params, create_graph=True)`` if already computed
            (reused across several products to avoid a backward pass each).

    Parameters the loss does not depend on get zero rows.
    """
    params = tuple(params)
    v = tuple(v)
    if len(v) != len(params):
        raise ValueError(f"hvp: {len(v)} vectors for {len(params)} parameters")
    if grads is None:
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    return grad_dot(grads, v, params, create_graph=create_graph)
