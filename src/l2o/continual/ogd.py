"""Orthogonal Gradient Descent (Farajtabar, Azizan, Mott & Li, AISTATS 2020).

After task t, the gradients ∇_w f(x; w) of the network's outputs at M stored examples of task t
are added to an orthonormal basis V (rows). Every later step uses the projected gradient
g̃ = g − Σ_v (g·v) v = g − Vᵀ(V g), which is orthogonal to every stored output gradient, so to
first order the step does not change the earlier tasks' outputs at those examples.

Variants (which outputs' gradients are stored per example):

- ``gtl``: the ground-truth logit f_y (1 vector per example);
- ``ave``: the mean of the logits (1 vector per example);
- ``all``: every logit (``classes`` vectors per example).

Per-example gradients come from ``torch.func`` (``vmap`` over ``grad`` or ``jacrev``), not a loop.

Momentum: inside a task every projected gradient lies in the orthogonal complement of span(V),
so a heavy-ball buffer built from them does too; the buffer from the previous task, however, is
not orthogonal to the vectors that task has just added. The runner makes a fresh optimizer per
task (as the paper's plain SGD needs no state), so with ``momentum > 0`` the steps stay orthogonal;
:func:`project_` can also project the optimizer's own update (``OGD(project="update")``) for
optimizers (Adam) whose per-coordinate scaling would otherwise leave the complement.
"""

from __future__ import annotations

import torch
from torch import Tensor

from l2o.continual.methods import Method, flat_grad, sample_indices, set_flat_grad

VARIANTS = ("gtl", "ave", "all")


class OrthonormalBasis:
    """Rows of an orthonormal basis in R^P, grown a block at a time.

    A new block is orthogonalised against the stored rows twice (classical block Gram–Schmidt
    with re-orthogonalisation, "twice is enough"), then orthonormalised within itself by an SVD
    that drops directions whose singular value is below ``rtol`` times the block's largest input
    norm (already in the span), and finally cleaned by one more Gram–Schmidt pass and a QR.
    """

    def __init__(self, dim: int, dtype: torch.dtype = torch.float32, rtol: float | None = None):
        self.dim, self.dtype = int(dim), dtype
        self.rtol = rtol if rtol is not None else (1e-10 if dtype == torch.float64 else 1e-5)
        self.rows = torch.zeros(0, self.dim, dtype=dtype)

    def __len__(self) -> int:
        return self.rows.shape[0]

    @property
    def nbytes(self) -> int:
        return self.rows.numel() * self.rows.element_size()

    def _remove_span(self, block: Tensor) -> Tensor:
        if len(self):
            block = block - (block @ self.rows.T) @ self.rows
        return block

    def add(self, vectors: Tensor) -> int:
        """Add the span of ``vectors`` [k, P]; returns how many new directions were kept."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape [k, {self.dim}], got {tuple(vectors.shape)}")
        v = vectors.to(self.dtype)
        scale = v.norm(dim=1).max() if v.numel() else torch.tensor(0.0)
        if not scale > 0:
            return 0
        v = self._remove_span(self._remove_span(v))
        _, s, vh = torch.linalg.svd(v, full_matrices=False)
        new = vh[s > self.rtol * scale]
        if not len(new):
            return 0
        new = self._remove_span(new)
        q, _ = torch.linalg.qr(new.T)
        self.rows = torch.cat([self.rows, q.T.contiguous()])
        return new.shape[0]

    def project(self, g: Tensor) -> Tensor:
        """``g − Vᵀ(V g)``: the component of ``g`` orthogonal to every stored row."""
        if not len(self):
            return g
        gd = g.to(self.dtype)
        return (gd - self.rows.T @ (self.rows @ gd)).to(g.dtype)


def output_gradients(model, x: Tensor, y: Tensor, t, variant: str) -> Tensor:
    """Per-example gradients of the model's outputs w.r.t. all its parameters, flattened:
    [N, P] for ``gtl`` (logit of the label ``y``) and ``ave`` (mean logit), [N*classes, P] for
    ``all`` (every logit; rows example-major). ``model(x, t)`` gives task ``t``'s logits."""
    from torch.func import functional_call, grad, jacrev, vmap

    if variant not in VARIANTS:
        raise ValueError(f"unknown OGD variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    params = {k: v.detach() for k, v in model.named_parameters()}

    def out(p, xi):
        return functional_call(model, p, (xi.unsqueeze(0), t))[0]

    if variant == "gtl":
        g = vmap(grad(lambda p, xi, yi: torch.gather(out(p, xi), 0, yi.reshape(1)).sum()), in_dims=(None, 0, 0))(params, x, y)
        return torch.cat([g[k].reshape(len(x), -1) for k in params], dim=1)
    if variant == "ave":
        g = vmap(grad(lambda p, xi: out(p, xi).mean()), in_dims=(None, 0))(params, x)
        return torch.cat([g[k].reshape(len(x), -1) for k in params], dim=1)
    jac = vmap(jacrev(out), in_dims=(None, 0))(params, x)  # each [N, C, *shape]
    n, c = len(x), next(iter(jac.values())).shape[1]
    return torch.cat([jac[k].reshape(n, c, -1) for k in params], dim=2).reshape(n * c, -1)


class OGD(Method):
    """OGD on the shared training loop: plain SGD whose gradient is projected before the step."""

    name = "ogd"

    def __init__(self, lr: float = 0.1, variant: str = "gtl", memory: int = 20, project: str = "gradient", **kw):
        super().__init__(lr, **kw)
        if variant not in VARIANTS:
            raise ValueError(f"unknown OGD variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        if memory < 1:
            raise ValueError(f"memory (examples per task) must be >= 1, got {memory}")
        if project not in ("gradient", "update"):
            raise ValueError(f"project must be 'gradient' or 'update', got {project!r}")
        self.variant, self.memory, self.project = variant, int(memory), project
        self.name = f"ogd-{variant}"

    def setup(self, stream, seed):
        super().setup(stream, seed)
        self.basis = OrthonormalBasis(sum(p.numel() for p in self.params()), self.dtype)

    def before_step(self, t):
        if self.project == "gradient" and len(self.basis):
            ps = self.params()
            set_flat_grad(ps, self.basis.project(flat_grad(ps)))
        elif self.project == "update":
            self._before = [p.detach().clone() for p in self.params()]

    def after_step(self, t):
        if self.project == "update" and len(self.basis):
            ps = self.params()
            delta = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(ps, self._before)])
            delta = self.basis.project(delta)
            with torch.no_grad():
                i = 0
                for p, b in zip(ps, self._before):
                    n = p.numel()
                    p.copy_(b + delta[i:i + n].view_as(p))
                    i += n

    def end_task(self, stream, t, generator):
        task = stream[t]
        idx = sample_indices(len(task.y_train), self.memory, generator)
        g = output_gradients(self.model, task.x_train[idx].to(self.dtype), task.y_train[idx], t, self.variant)
        self.basis.add(g)

    def extras(self):
        return {"basis_size": len(self.basis), "basis_bytes": self.basis.nbytes}
