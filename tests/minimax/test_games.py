"""Games: the toy functions' values, seeded GAN games, the protocol's metrics."""

import math

import pytest
import torch

from l2o.minimax import BilinearGame, game_metrics, gan_1d, gan_ring, get, toy, wgan_1d


def test_toy_functions_are_the_papers():
    x, y = torch.tensor(1.5, dtype=torch.float64), torch.tensor(-0.5, dtype=torch.float64)
    assert float(toy("f1").value(x, y)) == pytest.approx(-3 * 2.25 - 0.25 + 4 * 1.5 * -0.5)
    assert float(toy("f2").value(x, y)) == pytest.approx(3 * 2.25 + 0.25 + 4 * 1.5 * -0.5)
    expected = (0.4 * 2.25 - 0.1 * (-0.5 - 4.5 + 0.05 * 3.375) ** 2 - 0.01 * 0.0625) * math.exp(-0.01 * 2.5)
    assert float(toy("f3").value(x, y)) == pytest.approx(expected)
    assert toy("f1").init_params()[0]["x"].item() == 5.0 and toy("f1").init_params()[1]["y"].item() == 7.0
    assert toy("f2").equilibrium is None and toy("f3").equilibrium is not None


def test_metrics_at_the_equilibrium_are_zero():
    game = toy("f1")
    ex, ey = game.equilibrium
    m = game_metrics(game, ex, ey, None)
    assert m["grad_norm"] == 0.0 and m["distance"] == 0.0
    b = BilinearGame(dim=3)
    assert b.evaluate(*b.equilibrium)["grad_norm"] == 0.0


@pytest.mark.parametrize("make", [gan_1d, gan_ring, wgan_1d])
def test_gan_games_are_seeded_and_differentiable(make):
    game = make(batch_size=16, g_hidden=8, d_hidden=8, z_dim=4, n_data=100)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    (x1, y1), (x2, y2) = game.init_params(g1), game.init_params(g2)
    assert all(torch.equal(x1[k], x2[k]) for k in x1) and all(torch.equal(y1[k], y2[k]) for k in y1)
    b1, b2 = next(game.batches(g1)), next(game.batches(g2))
    assert torch.equal(b1[0], b2[0]) and torch.equal(b1[1], b2[1])
    assert b1[0].shape == (16, game.dim)
    m = game.evaluate(x1, y1)
    assert m["grad_x_norm"] > 0 and m["grad_y_norm"] > 0 and 0 <= m["modes_covered"] <= m["modes"]


def test_fixed_batch_game_plays_one_batch():
    game = gan_1d(batch_size=8, fixed_batch=True, n_data=50)
    it = game.batches(torch.Generator().manual_seed(0))
    a, b = next(it), next(it)
    assert a[0] is b[0] and game.eval_batch()[1] is a[1]


def test_unknown_game_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown game"):
        get("chess")
    with pytest.raises(ValueError, match="loss"):
        gan_1d(loss="hinge")
    with pytest.raises(ValueError, match="dim"):
        BilinearGame(dim=0)
