"""Minimax: two-player games f(x, y) and the optimizers that solve min_x max_y f.

- :mod:`l2o.minimax.games`: the :class:`Game` protocol (seeded, functional, like ``Task``) and
  the games: the three toy functions of Wang, Zhang & Ba (2020), a bilinear game, GANs on a 1-D
  mixture and a 2-D ring of Gaussians, and a small WGAN-style game.
- :mod:`l2o.minimax.optim`: :class:`GDA`, :class:`ExtraGradient`, :class:`OptimisticGDA` and
  :class:`FollowTheRidge`, one interface: ``opt = Cls(x_params, y_params, lr_x=..., lr_y=...)``,
  ``opt.step(closure)``; each optionally preconditioned by RMSprop or Adam statistics.
- :mod:`l2o.minimax.loop`: :func:`play`, the seeded loop that runs a game with an optimizer.
"""

from l2o.minimax.games import (GAMES, BilinearGame, Game, MixtureGAN, ToyGame, game_metrics, gan_1d, gan_ring,
                               get, toy, wgan_1d)
from l2o.minimax.loop import PlayResult, play
from l2o.minimax.optim import (GDA, OPTIMIZERS, ExtraGradient, FollowTheRidge, OptimisticGDA, TwoPlayerOptimizer,
                               create)

__all__ = [
    "GAMES", "BilinearGame", "Game", "MixtureGAN", "ToyGame", "game_metrics", "gan_1d", "gan_ring", "get", "toy",
    "wgan_1d", "PlayResult", "play", "GDA", "OPTIMIZERS", "ExtraGradient", "FollowTheRidge", "OptimisticGDA",
    "TwoPlayerOptimizer", "create",
]
