"""Two-player optimizers for min_x max_y f(x, y), with one interface.

Every optimizer here is built from the two players' parameter lists and step sizes and steps
with a closure that returns f(x, y)::

    opt = FollowTheRidge(x_params, y_params, lr_x=0.05, lr_y=0.05)
    for batch in batches:
        opt.step(lambda: game_loss(batch))

x descends f and y ascends it. The closure may be called more than once per step (extragradient,
alternating GDA, adaptive damping), so it must compute f on the same batch each time, as
``torch.optim.LBFGS``'s closure does. Gradients are taken with ``torch.autograd.grad``; ``.grad``
fields are never read or written, so no ``zero_grad`` is needed.

Each optimizer can precondition both players' gradients by RMSprop or Adam statistics
(``precondition="rmsprop"`` or ``"adam"``), kept per player: the direction g becomes
g / (sqrt(v̂) + eps) (RMSprop) or m̂ / (sqrt(v̂) + eps) (Adam), with bias-corrected averages.

- :class:`GDA`: simultaneous gradient descent-ascent, or alternating (``alternating=True``: x
  steps first, y's gradient is taken at the new x).
- :class:`ExtraGradient`: a step from z to z½, then from z with the gradient at z½.
- :class:`OptimisticGDA`: z ← z ∓ η (2 d_t − d_{t−1}).
- :class:`FollowTheRidge`: x ← x − η_x ∇ₓf; y ← y + η_y ∇ᵧf + η_x H_yy⁻¹ H_yx ∇ₓf (Wang, Zhang
  & Ba, ICLR 2020), the correction by Hessian-vector products and conjugate gradient on the
  damped normal equations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from l2o.linalg import conjugate_gradient, grad_dot

Closure = Callable[[], Tensor]
PRECONDITIONERS = (None, "rmsprop", "adam")


def _flat_norm(ts) -> float:
    return math.sqrt(sum(float(torch.sum(t.detach().double() ** 2)) for t in ts))


class TwoPlayerOptimizer:
    """The shared part: validation, gradients of both players, preconditioning, state_dict.

    Args:
        x_params: the minimizing player's tensors (leaf tensors with ``requires_grad``).
        y_params: the maximizing player's tensors.
        lr_x, lr_y: step sizes, > 0.
        precondition: None, ``"rmsprop"`` or ``"adam"``.
        betas: Adam's (beta1, beta2); RMSprop uses beta2 for its average of squares.
        eps: added to the root of the second moment.
    """

    def __init__(self, x_params: Iterable[Tensor], y_params: Iterable[Tensor], *, lr_x: float, lr_y: float,
                 precondition: str | None = None, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.x_params = self._check_params(x_params, "x_params")
        self.y_params = self._check_params(y_params, "y_params")
        ids = {id(p) for p in self.x_params}
        if any(id(p) in ids for p in self.y_params):
            raise ValueError("a tensor appears in both x_params and y_params")
        for name, lr in (("lr_x", lr_x), ("lr_y", lr_y)):
            if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {lr!r}")
        if precondition not in PRECONDITIONERS:
            raise ValueError(f"precondition must be one of {PRECONDITIONERS}, got {precondition!r}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.lr_x, self.lr_y = float(lr_x), float(lr_y)
        self.precondition, self.betas, self.eps = precondition, tuple(betas), float(eps)
        self.steps = 0
        self.moments: dict[str, dict[str, list[Tensor]]] = {"x": {}, "y": {}}
        self.moment_steps = 0
        #: what the last step did: closure calls, backward passes, and method-specific counts
        self.last_step: dict[str, float] = {}
        self._backward = 0

    @staticmethod
    def _check_params(params, name: str) -> list[Tensor]:
        if isinstance(params, Tensor):
            raise ValueError(f"{name} must be an iterable of tensors, not one tensor")
        params = list(params)
        if not params:
            raise ValueError(f"{name} is empty")
        for p in params:
            if not isinstance(p, Tensor):
                raise ValueError(f"{name} must hold tensors, got {type(p).__name__}")
            if not p.is_leaf or not p.requires_grad:
                raise ValueError(f"{name} must hold leaf tensors with requires_grad=True")
            if not torch.is_floating_point(p):
                raise ValueError(f"{name} must hold floating-point tensors, got {p.dtype}")
        return params

    # -- gradients ---------------------------------------------------------------------------

    def _evaluate(self, closure: Closure) -> Tensor:
        if closure is None or not callable(closure):
            raise ValueError("step() needs a closure that returns f(x, y)")
        with torch.enable_grad():
            loss = closure()
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("the closure must return f(x, y) as a scalar tensor")
        if not torch.isfinite(loss):
            raise ValueError(f"f(x, y) is not finite ({float(loss.detach())}) at step {self.steps}")
        if not loss.requires_grad:
            raise ValueError("f(x, y) does not depend on either player (no graph)")
        return loss

    def _grads(self, loss: Tensor, create_graph: bool = False) -> tuple[list[Tensor], list[Tensor]]:
        params = self.x_params + self.y_params
        grads = torch.autograd.grad(loss, params, create_graph=create_graph, retain_graph=create_graph,
                                    allow_unused=True)
        self._backward += 1
        gx, gy = list(grads[: len(self.x_params)]), list(grads[len(self.x_params):])
        for name, gs in (("x", gx), ("y", gy)):
            if all(g is None for g in gs):
                raise ValueError(f"f(x, y) does not depend on player {name}: its gradient is None for every tensor")
        gx = [torch.zeros_like(p) if g is None else g for g, p in zip(gx, self.x_params)]
        gy = [torch.zeros_like(p) if g is None else g for g, p in zip(gy, self.y_params)]
        for name, gs in (("x", gx), ("y", gy)):
            if not all(bool(torch.isfinite(g).all()) for g in gs):
                raise ValueError(f"the gradient of f with respect to {name} is not finite at step {self.steps}")
        return gx, gy

    def _loss_and_grads(self, closure: Closure) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        loss = self._evaluate(closure)
        gx, gy = self._grads(loss)
        return loss.detach(), gx, gy

    # -- preconditioning ---------------------------------------------------------------------

    def _direction(self, player: str, grads: list[Tensor], update: bool = True) -> list[Tensor]:
        """The preconditioned direction of ``grads``; ``update`` folds them into the statistics
        first (call :meth:`_tick` once per step before updating)."""
        grads = [g.detach() for g in grads]
        if self.precondition is None:
            return grads
        beta1, beta2 = self.betas
        m = self.moments[player]
        if "v" not in m:
            m["v"] = [torch.zeros_like(g) for g in grads]
            if self.precondition == "adam":
                m["m"] = [torch.zeros_like(g) for g in grads]
        t = max(self.moment_steps, 1)
        if update:
            for v, g in zip(m["v"], grads):
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            if self.precondition == "adam":
                for mm, g in zip(m["m"], grads):
                    mm.mul_(beta1).add_(g, alpha=1 - beta1)
        c2 = 1 - beta2 ** t
        out = []
        for i, g in enumerate(grads):
            denom = (m["v"][i] / c2).sqrt_().add_(self.eps)
            if self.precondition == "adam":
                num = m["m"][i] / (1 - beta1 ** t) if update else g
                out.append(num / denom)
            else:
                out.append(g / denom)
        return out

    def _tick(self) -> None:
        if self.precondition is not None:
            self.moment_steps += 1

    # -- updates -----------------------------------------------------------------------------

    @torch.no_grad()
    def _apply(self, params: list[Tensor], direction: list[Tensor], alpha: float) -> None:
        for p, d in zip(params, direction):
            p.add_(d.to(p.dtype), alpha=alpha)

    def _begin(self) -> None:
        self._backward = 0
        self.last_step = {}

    def _end(self, closure_calls: int, **extra) -> None:
        self.steps += 1
        self.last_step = {"closure_calls": closure_calls, "backward_passes": self._backward, **extra}

    def step(self, closure: Closure) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- state -------------------------------------------------------------------------------

    def _extra_state(self) -> dict:
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        """Hyperparameters, step counts and per-player statistics (tensors cloned)."""
        return {
            "type": type(self).__name__,
            "hyper": {"lr_x": self.lr_x, "lr_y": self.lr_y, "precondition": self.precondition,
                      "betas": list(self.betas), "eps": self.eps, **self._hyper()},
            "steps": self.steps,
            "moment_steps": self.moment_steps,
            "moments": {pl: {k: [t.clone() for t in ts] for k, ts in m.items()} for pl, m in self.moments.items()},
            "extra": self._extra_state(),
        }

    def _hyper(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output (of the same optimizer type on same-shaped params)."""
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            got = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state of a {got} cannot be loaded into a {type(self).__name__}")
        for pl, params in (("x", self.x_params), ("y", self.y_params)):
            for k, ts in state["moments"].get(pl, {}).items():
                if len(ts) != len(params) or any(t.shape != p.shape for t, p in zip(ts, params)):
                    raise ValueError(f"saved {k} statistics of player {pl} do not match its parameters' shapes")
        hyper = state["hyper"]
        self.lr_x, self.lr_y = float(hyper["lr_x"]), float(hyper["lr_y"])
        self.precondition, self.betas, self.eps = hyper["precondition"], tuple(hyper["betas"]), float(hyper["eps"])
        self.steps, self.moment_steps = int(state["steps"]), int(state["moment_steps"])
        self.moments = {pl: {k: [t.clone() for t in ts] for k, ts in m.items()} for pl, m in state["moments"].items()}
        self._load_hyper(hyper)
        self._load_extra_state(state["extra"])

    def _load_hyper(self, hyper: dict) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr_x={self.lr_x}, lr_y={self.lr_y}, precondition={self.precondition!r})"


class GDA(TwoPlayerOptimizer):
    """Gradient descent-ascent: x ← x − η_x d_x, y ← y + η_y d_y.

    Simultaneous by default (both gradients at (x_t, y_t), one closure call); with
    ``alternating=True`` x steps first and y's gradient is taken at (x_{t+1}, y_t).
    """

    def __init__(self, x_params, y_params, *, lr_x: float, lr_y: float, alternating: bool = False, **kwargs):
        super().__init__(x_params, y_params, lr_x=lr_x, lr_y=lr_y, **kwargs)
        self.alternating = bool(alternating)

    def _hyper(self) -> dict:
        return {"alternating": self.alternating}

    def _load_hyper(self, hyper: dict) -> None:
        self.alternating = bool(hyper.get("alternating", False))

    def step(self, closure: Closure) -> Tensor:
        self._begin()
        loss, gx, gy = self._loss_and_grads(closure)
        self._tick()
        dx = self._direction("x", gx)
        if self.alternating:
            self._apply(self.x_params, dx, -self.lr_x)
            _, _, gy = self._loss_and_grads(closure)
            self._apply(self.y_params, self._direction("y", gy), self.lr_y)
            self._end(2)
        else:
            dy = self._direction("y", gy)
            self._apply(self.x_params, dx, -self.lr_x)
            self._apply(self.y_params, dy, self.lr_y)
            self._end(1)
        return loss


class ExtraGradient(TwoPlayerOptimizer):
    """Extragradient: z½ = z ∓ η d(z), then z ← z ∓ η d(z½) (two closure calls per step).

    With preconditioning the statistics are updated with the gradient at z only; the gradient
    at z½ is scaled by the same statistics.
    """

    def step(self, closure: Closure) -> Tensor:
        self._begin()
        loss, gx, gy = self._loss_and_grads(closure)
        self._tick()
        dx, dy = self._direction("x", gx), self._direction("y", gy)
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.x_params + self.y_params]
        self._apply(self.x_params, dx, -self.lr_x)
        self._apply(self.y_params, dy, self.lr_y)
        _, gx2, gy2 = self._loss_and_grads(closure)
        with torch.no_grad():
            for p, s in zip(self.x_params + self.y_params, saved):
                p.copy_(s)
        self._apply(self.x_params, self._direction("x", gx2, update=False), -self.lr_x)
        self._apply(self.y_params, self._direction("y", gy2, update=False), self.lr_y)
        self._end(2)
        return loss


class OptimisticGDA(TwoPlayerOptimizer):
    """Optimistic GDA: z ← z ∓ η (2 d_t − d_{t−1}); the first step is a plain GDA step
    (d_{−1} = d_0). One closure call per step; the previous directions are kept in the state."""

    def __init__(self, x_params, y_params, *, lr_x: float, lr_y: float, **kwargs):
        super().__init__(x_params, y_params, lr_x=lr_x, lr_y=lr_y, **kwargs)
        self.previous: dict[str, list[Tensor]] = {}

    def _extra_state(self) -> dict:
        return {"previous": {k: [t.clone() for t in v] for k, v in self.previous.items()}}

    def _load_extra_state(self, state: dict) -> None:
        self.previous = {k: [t.clone() for t in v] for k, v in state.get("previous", {}).items()}

    def step(self, closure: Closure) -> Tensor:
        self._begin()
        loss, gx, gy = self._loss_and_grads(closure)
        self._tick()
        for pl, params, g, sign, lr in (("x", self.x_params, gx, -1.0, self.lr_x),
                                        ("y", self.y_params, gy, 1.0, self.lr_y)):
            d = self._direction(pl, g)
            prev = self.previous.get(pl, d)
            self._apply(params, [2 * a - b for a, b in zip(d, prev)], sign * lr)
            self.previous[pl] = [a.clone() for a in d]
        self._end(1)
        return loss


class FollowTheRidge(TwoPlayerOptimizer):
    """Follow-the-Ridge (Wang, Zhang & Ba, ICLR 2020).

    x ← x − Δx with Δx = η_x d_x (d_x the preconditioned ∇ₓf);
    y ← y + η_y d_y + H_yy⁻¹ H_yx Δx.

    The correction is computed without forming a Hessian: c = H_yx Δx is one Hessian-vector
    product (the derivative in y of ∇ₓf·Δx); u = H_yy⁻¹ c is found by conjugate gradient on the
    damped normal equations (H_yy² + λI) u = H_yy c, which are positive definite even where H_yy
    is indefinite or singular away from the ridge (two products with H_yy per CG iteration).

    Args:
        solver: ``"cg"`` (default) or ``"exact"``: the same damped normal equations solved
            directly from the materialized H_yy (y with at most 64 coordinates; with
            ``damping=0`` the pseudo-inverse, pinv(H_yy) c, as the reference code's toys do).
        cg_iters: conjugate-gradient iterations (the paper's GAN runs: 5).
        damping: λ (with ``adaptive_damping``, its starting value and upper bound).
        adaptive_damping: the paper's Levenberg-Marquardt-style rule: after solving, compare the
            predicted change of ∇ᵧf along the correction (H_yy u) and the true one
            (∇ᵧf(x, y + u) − ∇ᵧf(x, y), one more closure call and backward pass) with c. If the
            true change does not reduce ||c||² or disagrees with the model, the correction is
            dropped for this step and λ doubles; if the agreement ratio is < 0.5, λ grows by
            1.1; if > 0.95, λ shrinks by 0.9 (not below 1e-8); λ never exceeds its start.
        cg_tol: stop CG early once its residual falls below this fraction of the right-hand side.
        alternating: take y's gradient step at the updated point (x − Δx, y + u) instead of at
            (x, y), one more closure call and backward pass; this is what the reference code's GAN
            runs do (its GDA baseline likewise takes the discriminator's gradient after the
            generator's step, i.e. ``GDA(alternating=True)``).
    """

    MAX_EXACT = 64

    def __init__(self, x_params, y_params, *, lr_x: float, lr_y: float, solver: str = "cg", cg_iters: int = 5,
                 damping: float = 1e-6, adaptive_damping: bool = False, cg_tol: float = 0.0,
                 alternating: bool = False, **kwargs):
        super().__init__(x_params, y_params, lr_x=lr_x, lr_y=lr_y, **kwargs)
        if solver not in ("cg", "exact"):
            raise ValueError(f"solver must be 'cg' or 'exact', got {solver!r}")
        if int(cg_iters) != cg_iters or cg_iters < 1:
            raise ValueError(f"cg_iters must be a whole number >= 1, got {cg_iters!r}")
        if not math.isfinite(damping) or damping < 0:
            raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
        if adaptive_damping and damping == 0:
            raise ValueError("adaptive_damping needs a starting damping > 0")
        if cg_tol < 0:
            raise ValueError(f"cg_tol must be >= 0, got {cg_tol!r}")
        n_y = sum(p.numel() for p in self.y_params)
        if solver == "exact" and n_y > self.MAX_EXACT:
            raise ValueError(f"solver='exact' materializes H_yy and is for y with at most {self.MAX_EXACT} "
                             f"coordinates; y has {n_y} (use solver='cg')")
        self.solver, self.cg_iters, self.cg_tol = solver, int(cg_iters), float(cg_tol)
        self.initial_damping = float(damping)
        self.damping = float(damping)
        self.adaptive_damping = bool(adaptive_damping)
        self.alternating = bool(alternating)

    def _hyper(self) -> dict:
        return {"solver": self.solver, "cg_iters": self.cg_iters, "cg_tol": self.cg_tol,
                "initial_damping": self.initial_damping, "adaptive_damping": self.adaptive_damping,
                "alternating": self.alternating}

    def _load_hyper(self, hyper: dict) -> None:
        self.solver, self.cg_iters, self.cg_tol = hyper["solver"], int(hyper["cg_iters"]), float(hyper["cg_tol"])
        self.initial_damping = float(hyper["initial_damping"])
        self.adaptive_damping = bool(hyper["adaptive_damping"])
        self.alternating = bool(hyper.get("alternating", False))

    def _extra_state(self) -> dict:
        return {"damping": self.damping}

    def _load_extra_state(self, state: dict) -> None:
        self.damping = float(state["damping"])

    # -- Hessian products --------------------------------------------------------------------

    def _hyy(self, gy: list[Tensor], v: list[Tensor]) -> list[Tensor]:
        """H_yy v by double backward through ∇ᵧf (zero where ∇ᵧf has no graph, e.g. f linear in y)."""
        return self._d_dy(gy, v)

    def _hyx(self, gx: list[Tensor], v: list[Tensor]) -> list[Tensor]:
        """H_yx v = ∂/∂y (∇ₓf · v)."""
        return self._d_dy(gx, v)

    def _d_dy(self, grads: list[Tensor], v: list[Tensor]) -> list[Tensor]:
        """∂/∂y (grads · v): one backward pass, counted (l2o.linalg.grad_dot)."""
        reached = any(g.requires_grad for g in grads)
        out = grad_dot(grads, v, self.y_params)
        self._backward += int(reached)
        return [o.detach() for o in out]

    def hessian_yy(self, gy: list[Tensor]) -> Tensor:
        """H_yy materialized (n_y × n_y) from n_y Hessian-vector products (solver='exact')."""
        n = sum(p.numel() for p in self.y_params)
        dtype = self.y_params[0].dtype
        rows = []
        for i in range(n):
            e = torch.zeros(n, dtype=dtype)
            e[i] = 1.0
            rows.append(torch.cat([h.reshape(-1) for h in self._hyy(gy, self._unflatten(e))]))
        return torch.stack(rows)

    def _unflatten(self, flat: Tensor) -> list[Tensor]:
        out, i = [], 0
        for p in self.y_params:
            out.append(flat[i:i + p.numel()].view_as(p).to(p.dtype))
            i += p.numel()
        return out

    def solve(self, gy: list[Tensor], c: list[Tensor]) -> tuple[list[Tensor], dict]:
        """u ≈ H_yy⁻¹ c through the damped normal equations (H_yy² + λI) u = H_yy c."""
        lam = self.damping
        if self.solver == "exact":
            H = self.hessian_yy(gy).double()
            cf = torch.cat([t.reshape(-1) for t in c]).double()
            if lam > 0:
                A = H @ H + lam * torch.eye(H.shape[0], dtype=H.dtype)
                u = torch.linalg.solve(A, H @ cf)
            else:
                u = torch.linalg.pinv(H) @ cf
            return self._unflatten(u), {"cg_iterations": 0}
        b = tuple(self._hyy(gy, c))

        def matvec(v):
            hv = self._hyy(gy, list(v))
            hhv = self._hyy(gy, hv)
            return tuple(a + lam * w for a, w in zip(hhv, v))

        # (H_yy^2 + lam I) is positive semidefinite: a p^T A p <= 0 is rounding, where CG stops
        result = conjugate_gradient(matvec, b, max_iter=self.cg_iters, tol=self.cg_tol, semidefinite=True)
        return list(result.x), {"cg_iterations": result.iterations, "cg_residual": result.residual_norm}

    def correction(self, gx: list[Tensor], gy: list[Tensor], delta_x: list[Tensor]) -> tuple[list[Tensor], dict]:
        """The y correction H_yy⁻¹ H_yx Δx, from gradients built with ``create_graph=True``."""
        c = self._hyx(gx, delta_x)
        u, info = self.solve(gy, c)
        if not all(bool(torch.isfinite(t).all()) for t in u):
            u = [torch.zeros_like(t) for t in u]
            info["dropped"] = True
        return u, {**info, "_c": c}

    def step(self, closure: Closure) -> Tensor:
        self._begin()
        loss = self._evaluate(closure)
        gx, gy = self._grads(loss, create_graph=True)
        self._tick()
        dx = self._direction("x", gx)
        dy = None if self.alternating else self._direction("y", gy)
        delta_x = [self.lr_x * d for d in dx]
        u, info = self.correction(gx, gy, delta_x)
        c = info.pop("_c")
        calls = 1
        if self.adaptive_damping:
            calls += 1
            u = self._adapt(closure, gy, u, c)
        del gx, gy
        self._apply(self.x_params, delta_x, -1.0)
        self._apply(self.y_params, u, 1.0)
        if self.alternating:
            calls += 1
            _, _, gy_new = self._loss_and_grads(closure)
            dy = self._direction("y", gy_new)
        self._apply(self.y_params, dy, self.lr_y)
        self._end(calls, damping=self.damping, correction_norm=_flat_norm(u), **info)
        return loss.detach()

    def _adapt(self, closure: Closure, gy: list[Tensor], u: list[Tensor], c: list[Tensor]) -> list[Tensor]:
        """The paper's adaptive damping (see the class docstring); returns the correction to use."""
        ref = _flat_norm(c) ** 2 + 1e-16
        hu = self._hyy(gy, u)
        q_ratio = (ref - _flat_norm([a - b for a, b in zip(hu, c)]) ** 2) / ref
        with torch.no_grad():
            for p, d in zip(self.y_params, u):
                p.add_(d)
        try:
            loss2 = self._evaluate(closure)
            _, gy2 = self._grads(loss2)
        finally:
            with torch.no_grad():
                for p, d in zip(self.y_params, u):
                    p.sub_(d)
        true_change = [a - b.detach() for a, b in zip(gy2, gy)]
        true_ratio = (ref - _flat_norm([a - b for a, b in zip(true_change, c)]) ** 2) / ref
        rel = true_ratio / (q_ratio + 1e-16)
        if rel < 0 or true_ratio < 0:
            u = [torch.zeros_like(t) for t in u]
            self.damping *= 2.0
        elif rel < 0.5:
            self.damping *= 1.1
        elif rel > 0.95:
            self.damping = max(1e-8, self.damping * 0.9)
        self.damping = min(self.damping, self.initial_damping)
        return u


#: name -> class, for building two-player optimizers by name
OPTIMIZERS: dict[str, type[TwoPlayerOptimizer]] = {
    "gda": GDA,
    "extragradient": ExtraGradient,
    "ogda": OptimisticGDA,
    "ftr": FollowTheRidge,
}


def create(name: str, x_params, y_params, **kwargs) -> TwoPlayerOptimizer:
    """A two-player optimizer by name: ``gda`` (``alternating=True`` for the alternating form),
    ``extragradient``, ``ogda``, ``ftr``."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown two-player optimizer {name!r}; choose from {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](x_params, y_params, **kwargs)
