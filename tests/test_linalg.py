"""l2o.linalg: conjugate gradient against a direct solve, Hessian-vector products against the Hessian."""

import pytest
import torch

from l2o.linalg import conjugate_gradient, hvp, vdot


def _spd(n, seed, cond=10.0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eig = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


def test_cg_matches_the_direct_solve_in_n_steps():
    a = _spd(12, 0)
    b = torch.randn(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    result = conjugate_gradient(lambda v: a @ v, b, max_iter=12)
    torch.testing.assert_close(result.x, torch.linalg.solve(a, b), rtol=1e-9, atol=1e-9)
    assert result.iterations <= 12


def test_cg_on_tuples_and_tolerance_stops_early():
    a = _spd(6, 2, cond=3.0)
    b = torch.randn(6, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def matvec(v):  # the same system split into a (2,) and a (2, 2) part
        flat = a @ torch.cat([v[0], v[1].reshape(-1)])
        return flat[:2], flat[2:].reshape(2, 2)

    result = conjugate_gradient(matvec, (b[:2], b[2:].reshape(2, 2)), max_iter=50, tol=1e-10)
    assert result.converged and result.iterations <= 6
    torch.testing.assert_close(torch.cat([result.x[0], result.x[1].reshape(-1)]), torch.linalg.solve(a, b))


def test_cg_refuses_an_indefinite_matrix_and_bad_arguments():
    a = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="not positive definite"):
        conjugate_gradient(lambda v: a @ v, b, max_iter=5)
    with pytest.raises(ValueError, match="max_iter"):
        conjugate_gradient(lambda v: v, b, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        conjugate_gradient(lambda v: v, b, max_iter=1, tol=-1)
    with pytest.raises(ValueError, match="not finite"):
        conjugate_gradient(lambda v: v, torch.tensor([float("nan")]), max_iter=1)


def test_hvp_matches_the_materialized_hessian():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    unused = torch.zeros(4, dtype=torch.float64, requires_grad=True)

    def f(x, y):
        return (x.sin() ** 2).sum() * y.sum() + (x[:2] * y).prod()

    v = (torch.randn(3, generator=gen, dtype=torch.float64), torch.randn(2, generator=gen, dtype=torch.float64),
         torch.ones(4, dtype=torch.float64))
    hx, hy, hu = hvp(f(x, y), (x, y, unused), v)
    full = torch.autograd.functional.hessian(lambda a, b: f(a, b), (x.detach(), y.detach()))
    torch.testing.assert_close(hx, full[0][0] @ v[0] + full[0][1] @ v[1])
    torch.testing.assert_close(hy, full[1][0] @ v[0] + full[1][1] @ v[1])
    assert torch.equal(hu, torch.zeros(4, dtype=torch.float64))
    assert float(vdot(v, v)) == pytest.approx(sum(float((t * t).sum()) for t in v))


@pytest.mark.parametrize("dtype, size", [(torch.float64, 1e-160), (torch.float64, 1e160), (torch.float32, 1e-25),
                                         (torch.float32, 1e25)])
def test_cg_solves_right_hand_sides_of_extreme_scale(dtype, size):
    """Inner products of order ||b||^2 under- or overflow the dtype at these scales; the solution,
    linear in b, must not (Follow-the-Ridge's right-hand side shrinks like this as it converges,
    and on a saturated GAN discriminator)."""
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=dtype)
    b = torch.tensor([1.0, -2.0], dtype=dtype) * size
    result = conjugate_gradient(lambda v: a @ v, b, max_iter=5)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(result.x, torch.linalg.solve(a.double(), b.double()).to(dtype), rtol=rtol, atol=0)
    assert result.residual_norm <= rtol * size


def test_cg_stops_when_the_system_is_solved_before_max_iter():
    """A 1-D system is solved by the first iteration; the next search direction vanishes, which is
    convergence, not a matrix that fails to be positive definite."""
    result = conjugate_gradient(lambda v: 3.0 * v, torch.tensor([0.7], dtype=torch.float64), max_iter=5)
    torch.testing.assert_close(result.x, torch.tensor([0.7 / 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="not positive definite"):
        conjugate_gradient(lambda v: -v, torch.tensor([1.0, 2.0], dtype=torch.float64), max_iter=3)
    # a singular A with b outside its range: CG stops where A p vanishes along p, not with an error
    singular = torch.diag(torch.tensor([2.0, 0.0], dtype=torch.float64))
    result = conjugate_gradient(lambda v: singular @ v, torch.tensor([1.0, 1.0], dtype=torch.float64), max_iter=4)
    assert torch.isfinite(result.x).all() and not result.converged
    # declared semidefinite, a p^T A p <= 0 (rounding, for such a matrix) ends CG instead of raising
    indefinite = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    result = conjugate_gradient(lambda v: indefinite @ v, torch.tensor([1.0, 1.0], dtype=torch.float64), max_iter=3,
                                semidefinite=True)
    assert result.iterations == 1 and torch.equal(result.x, torch.zeros(2, dtype=torch.float64))
