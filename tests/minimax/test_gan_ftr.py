"""Follow-the-Ridge on a GAN: the correction H_yy⁻¹ H_yx Δx that the optimizer computes on a
small mixture-of-Gaussians GAN (float64, discriminator of 33 parameters) against the damped
system built from the full Hessian of the game's loss (torch.autograd.functional.hessian), for
the CG and the exact solver, and one whole step against its closed form."""

import pytest
import torch

from l2o.minimax import FollowTheRidge, gan_1d


def _tiny_gan():
    game = gan_1d(z_dim=2, g_hidden=3, d_hidden=4, batch_size=32, n_data=200)
    gen = torch.Generator().manual_seed(1)
    x0, y0 = game.init_params(gen)
    # non-zero biases, so every entry of the Hessian is exercised
    x = {k: (v + 0.1 * torch.randn(v.shape, generator=gen)).double().requires_grad_(True) for k, v in x0.items()}
    y = {k: (v + 0.3 * torch.randn(v.shape, generator=gen)).double().requires_grad_(True) for k, v in y0.items()}
    real, z = next(game.batches(gen))
    batch = (real.double(), z.double())
    return game, x, y, batch


def _flat_hessian(game, x, y, batch):
    """H_yy and H_yx of the game's loss, from the full Hessian of the flattened parameters."""
    xs, ys = list(x.values()), list(y.values())
    nx, ny = sum(p.numel() for p in xs), sum(p.numel() for p in ys)

    def unflat(vec, template):
        out, i = {}, 0
        for k, p in template.items():
            out[k] = vec[i:i + p.numel()].view_as(p)
            i += p.numel()
        return out

    def f(w):
        return game.loss(unflat(w[:nx], x), unflat(w[nx:], y), batch)

    w = torch.cat([p.detach().reshape(-1) for p in xs + ys])
    H = torch.autograd.functional.hessian(f, w)
    return H[nx:, nx:], H[nx:, :nx], nx, ny


@pytest.mark.parametrize("solver,damping", [("exact", 1e-3), ("cg", 1e-3), ("cg", 0.5)])
def test_gan_correction_matches_the_full_hessian(solver, damping):
    game, x, y, batch = _tiny_gan()
    Hyy, Hyx, nx, ny = _flat_hessian(game, x, y, batch)
    assert ny <= 64 and torch.allclose(Hyy, Hyy.T, atol=1e-10)
    assert torch.linalg.eigvalsh(Hyy).abs().min() > 1e-6  # weight decay keeps H_yy non-singular
    lr = 0.05
    opt = FollowTheRidge(list(x.values()), list(y.values()), lr_x=lr, lr_y=lr, solver=solver, damping=damping,
                         cg_iters=80, cg_tol=1e-12)
    loss = game.loss(x, y, batch)
    grads = torch.autograd.grad(loss, list(x.values()) + list(y.values()), create_graph=True)
    gx, gy = list(grads[:len(x)]), list(grads[len(x):])
    delta_x = [lr * g.detach() for g in gx]
    u, _ = opt.correction(gx, gy, delta_x)
    c = Hyx @ torch.cat([d.reshape(-1) for d in delta_x])
    expected = torch.linalg.solve(Hyy @ Hyy + damping * torch.eye(ny, dtype=Hyy.dtype), Hyy @ c)
    got = torch.cat([t.reshape(-1) for t in u])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-10)


def test_gan_ftr_step_is_the_papers_update():
    game, x, y, batch = _tiny_gan()
    Hyy, Hyx, nx, ny = _flat_hessian(game, x, y, batch)
    loss = game.loss(x, y, batch)
    g = torch.autograd.grad(loss, list(x.values()) + list(y.values()))
    gx = torch.cat([t.reshape(-1) for t in g[:len(x)]])
    gy = torch.cat([t.reshape(-1) for t in g[len(x):]])
    x0 = torch.cat([p.detach().reshape(-1) for p in x.values()])
    y0 = torch.cat([p.detach().reshape(-1) for p in y.values()])
    lr_x, lr_y = 0.05, 0.02
    opt = FollowTheRidge(list(x.values()), list(y.values()), lr_x=lr_x, lr_y=lr_y, solver="exact", damping=0.0)
    opt.step(lambda: game.loss(x, y, batch))
    x1 = torch.cat([p.detach().reshape(-1) for p in x.values()])
    y1 = torch.cat([p.detach().reshape(-1) for p in y.values()])
    torch.testing.assert_close(x1, x0 - lr_x * gx, rtol=0, atol=1e-12)
    # y <- y + lr_y grad_y f + lr_x H_yy^-1 H_yx grad_x f (the paper's Algorithm 1)
    torch.testing.assert_close(y1, y0 + lr_y * gy + lr_x * torch.linalg.solve(Hyy, Hyx @ gx), rtol=1e-7, atol=1e-9)
