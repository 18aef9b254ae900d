"""Two-player optimizers: FR's correction against closed forms (float64), CG against the exact
solve, preconditioning, state_dict round trips, determinism and bad input."""

import math

import pytest
import torch

from l2o.minimax import GDA, ExtraGradient, FollowTheRidge, OptimisticGDA, create, gan_1d, play, toy

torch.set_default_dtype(torch.float32)


def _quadratic(n_x=3, n_y=4, seed=0, indefinite=False):
    """f = ½xᵀAx + xᵀBy − ½yᵀCy + aᵀx + cᵀy in float64, with C's eigenvalues bounded away from 0."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n_x, n_x, generator=g, dtype=torch.float64)
    A = A + A.T
    B = torch.randn(n_x, n_y, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(n_y, n_y, generator=g, dtype=torch.float64))
    eig = torch.linspace(0.5, 3.0, n_y, dtype=torch.float64)
    if indefinite:
        eig[::2] *= -1
    C = q @ torch.diag(eig) @ q.T
    a = torch.randn(n_x, generator=g, dtype=torch.float64)
    c = torch.randn(n_y, generator=g, dtype=torch.float64)
    x = torch.randn(n_x, generator=g, dtype=torch.float64).requires_grad_(True)
    y = torch.randn(n_y, generator=g, dtype=torch.float64).requires_grad_(True)

    def f():
        return 0.5 * x @ A @ x + x @ B @ y - 0.5 * y @ C @ y + a @ x + c @ y

    return (A, B, C, a, c), x, y, f


@pytest.mark.parametrize("indefinite", [False, True])
@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_ftr_step_matches_closed_form_on_quadratic_games(solver, indefinite):
    (A, B, C, a, c), x, y, f = _quadratic(indefinite=indefinite)
    lr_x, lr_y = 0.1, 0.2
    x0, y0 = x.detach().clone(), y.detach().clone()
    gx = A @ x0 + B @ y0 + a
    gy = B.T @ x0 - C @ y0 + c
    # H_yy = -C, H_yx = B^T: the correction is H_yy^-1 H_yx (lr_x gx) = -C^-1 B^T lr_x gx
    correction = -torch.linalg.solve(C, B.T @ (lr_x * gx))
    opt = FollowTheRidge([x], [y], lr_x=lr_x, lr_y=lr_y, solver=solver, cg_iters=4, damping=0.0)
    opt.step(f)
    torch.testing.assert_close(x.detach(), x0 - lr_x * gx, rtol=0, atol=1e-12)
    torch.testing.assert_close(y.detach(), y0 + lr_y * gy + correction, rtol=1e-9, atol=1e-9)
    assert opt.last_step["backward_passes"] == (2 if solver == "exact" else 1) + (4 if solver == "exact" else 1 + 1 + 2 * 4)


@pytest.mark.parametrize("solver", ["exact", "cg"])
def test_ftr_damped_correction_is_the_damped_normal_equations(solver):
    (A, B, C, a, c), x, y, f = _quadratic(seed=3)
    lam = 0.7
    x0, y0 = x.detach().clone(), y.detach().clone()
    gx = A @ x0 + B @ y0 + a
    H = -C
    expected = torch.linalg.solve(H @ H + lam * torch.eye(4, dtype=torch.float64), H @ (B.T @ (0.1 * gx)))
    opt = FollowTheRidge([x], [y], lr_x=0.1, lr_y=1e-3, solver=solver, cg_iters=4, damping=lam)
    gy = B.T @ x0 - C @ y0 + c
    opt.step(f)
    torch.testing.assert_close(y.detach(), y0 + 1e-3 * gy + expected, rtol=1e-9, atol=1e-9)


def _tiny_mlp_game(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_(True)]
    y = [torch.randn(4, 5, generator=g, dtype=torch.float64).requires_grad_(True),
         torch.randn(4, generator=g, dtype=torch.float64).requires_grad_(True)]
    data = torch.randn(16, 3, generator=g, dtype=torch.float64)

    def f():
        h = torch.tanh(data @ x[0].T)
        out = torch.tanh(h @ y[0].T + y[1])
        return out.pow(2).mean() + (h @ y[0].T).mean() - 0.05 * sum((p * p).sum() for p in y)

    return x, y, f


def test_cg_solution_matches_the_exact_solve_on_a_nonquadratic_game():
    x, y, f = _tiny_mlp_game()
    loss = f()
    gx, gy = torch.autograd.grad(loss, x + y, create_graph=True)[:1], torch.autograd.grad(loss, y, create_graph=True)
    for damping in (1e-3, 0.1):
        exact = FollowTheRidge(x, y, lr_x=0.1, lr_y=0.1, solver="exact", damping=damping)
        cg = FollowTheRidge(x, y, lr_x=0.1, lr_y=0.1, solver="cg", cg_iters=200, cg_tol=1e-13, damping=damping)
        delta = [0.1 * g.detach() for g in gx]
        u_exact, _ = exact.correction(list(gx), list(gy), delta)
        u_cg, info = cg.correction(list(gx), list(gy), delta)
        assert info["cg_iterations"] > 1
        for a, b in zip(u_cg, u_exact):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
        # and the exact solve is what it claims: (H^2 + lam I) u = H c with H materialized
        H = exact.hessian_yy(list(gy))
        assert torch.allclose(H, H.T, atol=1e-10)


def test_rmsprop_and_adam_first_step_are_sign_like():
    for pre in ("rmsprop", "adam"):
        x = torch.tensor([2.0, -0.5], dtype=torch.float64, requires_grad=True)
        y = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
        opt = GDA([x], [y], lr_x=0.1, lr_y=0.1, precondition=pre, eps=0.0)
        opt.step(lambda: (x * x).sum() + 3 * x[0] * y[0] - y[0] ** 2)
        # first step with bias correction: direction g / |g|
        torch.testing.assert_close(x.detach(), torch.tensor([1.9, -0.4], dtype=torch.float64))
        torch.testing.assert_close(y.detach(), torch.tensor([0.4], dtype=torch.float64))


def test_alternating_gda_takes_y_gradient_at_the_new_x():
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = GDA([x], [y], lr_x=0.5, lr_y=0.25, alternating=True)
    opt.step(lambda: (x * y).sum())
    # x <- 1 - 0.5*2 = 0; y <- 2 + 0.25 * x_new = 2
    assert float(x.detach()) == 0.0 and float(y.detach()) == 2.0
    assert opt.last_step["closure_calls"] == 2
    x2 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    y2 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    GDA([x2], [y2], lr_x=0.5, lr_y=0.25).step(lambda: (x2 * y2).sum())
    assert float(x2.detach()) == 0.0 and float(y2.detach()) == 2.25


def test_extragradient_and_ogda_one_step_closed_form():
    # f = x*y: EG: z½ = (x - h y, y + h x); z+ = (x - h y½, y + h x½)
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    h = 0.1
    ExtraGradient([x], [y], lr_x=h, lr_y=h).step(lambda: (x * y).sum())
    xh, yh = 1 - h * 2, 2 + h * 1
    torch.testing.assert_close(x.detach(), torch.tensor([1 - h * yh], dtype=torch.float64))
    torch.testing.assert_close(y.detach(), torch.tensor([2 + h * xh], dtype=torch.float64))
    # OGDA: first step plain GDA, second step with 2 g_t - g_{t-1}
    x = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    opt = OptimisticGDA([x], [y], lr_x=h, lr_y=h)
    opt.step(lambda: (x * y).sum())
    x1, y1 = 1 - h * 2, 2 + h * 1
    torch.testing.assert_close(x.detach(), torch.tensor([x1], dtype=torch.float64))
    opt.step(lambda: (x * y).sum())
    torch.testing.assert_close(x.detach(), torch.tensor([x1 - h * (2 * y1 - 2)], dtype=torch.float64))
    torch.testing.assert_close(y.detach(), torch.tensor([y1 + h * (2 * x1 - 1)], dtype=torch.float64))


OPTIMIZER_CASES = [
    ("gda", {"precondition": "adam"}),
    ("gda", {"alternating": True, "precondition": "rmsprop"}),
    ("extragradient", {"precondition": "rmsprop"}),
    ("ogda", {"precondition": "adam"}),
    ("ftr", {"precondition": "rmsprop", "damping": 1.0, "adaptive_damping": True, "cg_iters": 3}),
    ("ftr", {"solver": "exact", "damping": 0.0}),
    ("ftr", {"precondition": "adam", "alternating": True, "cg_iters": 2}),
]


@pytest.mark.parametrize("name,kwargs", OPTIMIZER_CASES)
def test_state_dict_round_trip_continues_identically(name, kwargs):
    x, y, f = _tiny_mlp_game(seed=1)
    opt = create(name, x, y, lr_x=0.05, lr_y=0.05, **kwargs)
    for _ in range(3):
        opt.step(f)
    state = opt.state_dict()
    saved = [p.detach().clone() for p in x + y]
    for _ in range(3):
        opt.step(f)
    after = [p.detach().clone() for p in x + y]
    with torch.no_grad():
        for p, s in zip(x + y, saved):
            p.copy_(s)
    fresh = create(name, x, y, lr_x=1.0, lr_y=1.0)  # hyperparameters come back from the state
    fresh.load_state_dict(state)
    for _ in range(3):
        fresh.step(f)
    for a, b in zip(after, [p.detach() for p in x + y]):
        assert torch.equal(a, b)
    assert fresh.state_dict()["steps"] == 6


def test_load_state_dict_refuses_another_optimizer():
    x, y, f = _tiny_mlp_game()
    gda = GDA(x, y, lr_x=0.1, lr_y=0.1)
    with pytest.raises(ValueError, match="cannot be loaded"):
        OptimisticGDA(x, y, lr_x=0.1, lr_y=0.1).load_state_dict(gda.state_dict())


def test_play_is_deterministic_under_a_seed():
    game = gan_1d(batch_size=32, g_hidden=8, d_hidden=8, z_dim=4, n_data=200)

    def make(xs, ys):
        return FollowTheRidge(xs, ys, lr_x=1e-3, lr_y=1e-3, precondition="rmsprop", cg_iters=2, damping=1.0,
                              adaptive_damping=True)

    a = play(game, make, steps=5, seed=7, record_every=5)
    b = play(game, make, steps=5, seed=7, record_every=5)
    c = play(game, make, steps=5, seed=8, record_every=5)
    assert a.metrics == b.metrics
    assert all(torch.equal(a.x[k], b.x[k]) for k in a.x)
    assert a.metrics[-1]["grad_norm"] != c.metrics[-1]["grad_norm"]


def test_bad_input_is_refused_clearly():
    x = torch.zeros(2, requires_grad=True)
    y = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="lr_x"):
        GDA([x], [y], lr_x=0.0, lr_y=0.1)
    with pytest.raises(ValueError, match="lr_y"):
        FollowTheRidge([x], [y], lr_x=0.1, lr_y=-1.0)
    with pytest.raises(ValueError, match="lr_x"):
        GDA([x], [y], lr_x=float("nan"), lr_y=0.1)
    with pytest.raises(ValueError, match="both"):
        GDA([x], [x], lr_x=0.1, lr_y=0.1)
    with pytest.raises(ValueError, match="empty"):
        GDA([], [y], lr_x=0.1, lr_y=0.1)
    with pytest.raises(ValueError, match="requires_grad"):
        GDA([torch.zeros(2)], [y], lr_x=0.1, lr_y=0.1)
    with pytest.raises(ValueError, match="precondition"):
        GDA([x], [y], lr_x=0.1, lr_y=0.1, precondition="sgd")
    with pytest.raises(ValueError, match="at most 64"):
        FollowTheRidge([x], [torch.zeros(65, requires_grad=True)], lr_x=0.1, lr_y=0.1, solver="exact")
    with pytest.raises(ValueError, match="cg_iters"):
        FollowTheRidge([x], [y], lr_x=0.1, lr_y=0.1, cg_iters=0)
    with pytest.raises(ValueError, match="damping"):
        FollowTheRidge([x], [y], lr_x=0.1, lr_y=0.1, damping=-1.0)
    with pytest.raises(ValueError, match="unknown two-player"):
        create("adam", [x], [y], lr_x=0.1, lr_y=0.1)
    for cls in (GDA, ExtraGradient, OptimisticGDA, FollowTheRidge):
        opt = cls([x], [y], lr_x=0.1, lr_y=0.1)
        with pytest.raises(ValueError, match="does not depend on player y"):
            opt.step(lambda: (x * x).sum())
        with pytest.raises(ValueError, match="does not depend on player x"):
            opt.step(lambda: (y * y).sum())
        with pytest.raises(ValueError, match="not finite"):
            opt.step(lambda: (x * x).sum() + y.sum() * float("inf"))
        with pytest.raises(ValueError, match="closure"):
            opt.step(None)


def test_adaptive_damping_shrinks_on_a_quadratic_where_the_model_is_exact():
    _, x, y, f = _quadratic(seed=5)
    opt = FollowTheRidge([x], [y], lr_x=0.05, lr_y=0.05, damping=1.0, adaptive_damping=True, cg_iters=4)
    opt.step(f)
    # on a quadratic the true change of grad_y equals the model's: the ratio is 1 -> lambda * 0.9
    assert opt.damping == pytest.approx(0.9)
    assert opt.last_step["closure_calls"] == 2


def test_mode_coverage_metric():
    game = gan_1d(n_data=600)
    full = game.mode_coverage(game.data)
    assert full["modes_covered"] == 3 and full["high_quality"] > 0.99
    one = game.mode_coverage(torch.full((300, 1), 4.0))
    assert one["modes_covered"] == 1 and one["high_quality"] == 1.0
    none = game.mode_coverage(torch.full((300, 1), 2.0))
    assert none["modes_covered"] == 0 and none["high_quality"] == 0.0


def test_alternating_ftr_takes_y_gradient_at_the_updated_point():
    (A, B, C, a, c), x, y, f = _quadratic(seed=2)
    lr = 0.1
    x0, y0 = x.detach().clone(), y.detach().clone()
    gx = A @ x0 + B @ y0 + a
    u = -torch.linalg.solve(C, B.T @ (lr * gx))
    x1, y_half = x0 - lr * gx, y0 + u
    gy_new = B.T @ x1 - C @ y_half + c
    opt = FollowTheRidge([x], [y], lr_x=lr, lr_y=lr, solver="exact", damping=0.0, alternating=True)
    opt.step(f)
    torch.testing.assert_close(x.detach(), x1, rtol=0, atol=1e-12)
    torch.testing.assert_close(y.detach(), y_half + lr * gy_new, rtol=1e-9, atol=1e-9)
    assert opt.last_step["closure_calls"] == 2
