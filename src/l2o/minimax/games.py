"""Two-player games f(x, y): x (the minimizer) and y (the maximizer), in functional form.

A :class:`Game` is the two-player twin of :class:`l2o.tasks.Task`: it creates both players'
initial parameters from a ``torch.Generator`` (two dicts of tensors), yields seeded batches, and
computes ``loss(x, y, batch) = f(x, y)`` as a pure function of the two dicts, so the same game
serves the imperative two-player optimizers of :mod:`l2o.minimax.optim` and a functional loop.

The games:

- :func:`toy` ``"f1"``, ``"f2"``, ``"f3"``: the three two-dimensional functions of Wang, Zhang & Ba
  (ICLR 2020), exactly as written there, from the paper's starting points.
- :class:`BilinearGame`: ``f = x^T A y`` (its only equilibrium, the origin, is a local minimax
  point only in the degenerate sense: H_yy = 0).
- :class:`MixtureGAN`: a GAN on a mixture of Gaussians (:func:`mog_1d`: modes -4, 0, 4 with
  std 0.1 as in the paper; :func:`ring_2d`: eight modes on a circle) with small tanh MLPs, the
  saturating minimax loss and weight decay on the discriminator; with ``loss="wasserstein"`` a
  small WGAN-style game (critic with weight decay in place of a Lipschitz constraint).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

Params = dict[str, Tensor]


class Game(ABC):
    """A two-player zero-sum game: x minimizes ``loss(x, y, batch)``, y maximizes it.

    Attributes:
        name: short identifier used in reports.
        steps: the default number of optimizer steps.
        lr: the default step size of both players (the paper's, where it gives one).
        equilibrium: the known local minimax point ``(x*, y*)`` as two dicts, or None.
    """

    name: str = "game"
    steps: int = 100
    lr: float = 0.05
    equilibrium: tuple[Params, Params] | None = None

    @abstractmethod
    def init_params(self, generator: torch.Generator) -> tuple[Params, Params]:
        """Initial parameters of x and of y (plain tensors, not requiring grad)."""

    @abstractmethod
    def loss(self, x: Params, y: Params, batch: Any) -> Tensor:
        """f(x, y) on ``batch``, differentiable in both players."""

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        """An endless stream of batches; deterministic games yield ``None``."""
        while True:
            yield None

    def eval_batch(self) -> Any:
        """The fixed batch on which :meth:`evaluate` measures (None for deterministic games)."""
        return None

    def evaluate(self, x: Params, y: Params) -> dict[str, float]:
        """Game metrics at (x, y): f, both players' gradient norms and their sum, and the distance
        to the known equilibrium where there is one."""
        return game_metrics(self, x, y, self.eval_batch())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "steps": self.steps, "lr": self.lr}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


def game_metrics(game: Game, x: Params, y: Params, batch: Any) -> dict[str, float]:
    """f, ``grad_x_norm`` = ||∇ₓf||, ``grad_y_norm`` = ||∇ᵧf||, ``grad_norm`` (their sum) and,
    where the game knows its equilibrium, ``distance`` = ||(x, y) - (x*, y*)||."""
    xs = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
    ys = {k: v.detach().clone().requires_grad_(True) for k, v in y.items()}
    with torch.enable_grad():
        f = game.loss(xs, ys, batch)
        grads = torch.autograd.grad(f, [*xs.values(), *ys.values()], allow_unused=True)
    gx = grads[: len(xs)]
    gy = grads[len(xs):]

    def norm(gs):
        return math.sqrt(sum(float(torch.sum(g.double() ** 2)) for g in gs if g is not None))

    out = {"f": float(f.detach()), "grad_x_norm": norm(gx), "grad_y_norm": norm(gy)}
    out["grad_norm"] = out["grad_x_norm"] + out["grad_y_norm"]
    if game.equilibrium is not None:
        ex, ey = game.equilibrium
        sq = sum(float(torch.sum((x[k].detach().double() - ex[k].double()) ** 2)) for k in ex)
        sq += sum(float(torch.sum((y[k].detach().double() - ey[k].double()) ** 2)) for k in ey)
        out["distance"] = math.sqrt(sq)
    return out


# ---------------------------------------------------------------------------------------------
# The paper's three toy functions


def _f1(x: Tensor, y: Tensor) -> Tensor:
    return -3 * x * x - y * y + 4 * x * y


def _f2(x: Tensor, y: Tensor) -> Tensor:
    return 3 * x * x + y * y + 4 * x * y


def _f3(x: Tensor, y: Tensor) -> Tensor:
    return (0.4 * x * x - 0.1 * (y - 3 * x + 0.05 * x ** 3) ** 2 - 0.01 * y ** 4) * torch.exp(-0.01 * (x * x + y * y))


#: name -> (function, start (x0, y0), whether (0, 0) is a local minimax point, plot half-width)
TOYS: dict[str, tuple[Callable[[Tensor, Tensor], Tensor], tuple[float, float], bool, float]] = {
    "f1": (_f1, (5.0, 7.0), True, 12.0),
    "f2": (_f2, (6.0, 5.0), False, 12.0),
    "f3": (_f3, (7.0, 5.0), True, 8.0),
}


class ToyGame(Game):
    """A scalar game ``f(x, y)`` from a fixed start (float64 by default).

    ``equilibrium`` is (0, 0) for the functions whose origin is a local minimax point (f1, f3);
    for f2 the origin is a stationary point but not a local minimax point, so none is given.
    """

    steps = 1000
    lr = 0.05

    def __init__(self, name: str, dtype: torch.dtype = torch.float64):
        if name not in TOYS:
            raise ValueError(f"unknown toy function {name!r}; choose from {sorted(TOYS)}")
        self.name = name
        self.fn, self.start, minimax, self.plot_width = TOYS[name]
        self.dtype = dtype
        zero = {"x": torch.zeros(1, dtype=dtype)}, {"y": torch.zeros(1, dtype=dtype)}
        self.equilibrium = zero if minimax else None

    def init_params(self, generator: torch.Generator | None = None) -> tuple[Params, Params]:
        x0, y0 = self.start
        return {"x": torch.tensor([x0], dtype=self.dtype)}, {"y": torch.tensor([y0], dtype=self.dtype)}

    def loss(self, x: Params, y: Params, batch: Any = None) -> Tensor:
        return self.fn(x["x"], y["y"]).sum()

    def value(self, x: Tensor, y: Tensor) -> Tensor:
        """f on plain tensors (a grid, for contour plots)."""
        return self.fn(x, y)


def toy(name: str, dtype: torch.dtype = torch.float64) -> ToyGame:
    """The paper's toy function ``"f1"``, ``"f2"`` or ``"f3"``."""
    return ToyGame(name, dtype)


class BilinearGame(Game):
    """``f(x, y) = x^T A y`` with ``A`` a seeded random ``dim x dim`` matrix whose singular values
    lie in [1, 2]; starts drawn from N(0, I). GDA spirals out, extragradient and optimistic GDA
    converge to the origin; H_yy = 0, so Follow-the-Ridge's correction vanishes (with damping)."""

    name = "bilinear"
    steps = 500
    lr = 0.05

    def __init__(self, dim: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim, self.dtype = dim, dtype
        g = torch.Generator().manual_seed(seed)
        q1, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        q2, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        s = torch.linspace(1.0, 2.0, dim, dtype=torch.float64)
        self.A = (q1 @ torch.diag(s) @ q2.T).to(dtype)
        self.equilibrium = {"x": torch.zeros(dim, dtype=dtype)}, {"y": torch.zeros(dim, dtype=dtype)}

    def init_params(self, generator: torch.Generator) -> tuple[Params, Params]:
        x = torch.randn(self.dim, generator=generator, dtype=torch.float64).to(self.dtype)
        y = torch.randn(self.dim, generator=generator, dtype=torch.float64).to(self.dtype)
        return {"x": x}, {"y": y}

    def loss(self, x: Params, y: Params, batch: Any = None) -> Tensor:
        return x["x"] @ self.A @ y["y"]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dim": self.dim}


# ---------------------------------------------------------------------------------------------
# GANs on mixtures of Gaussians


def mog_1d() -> Tensor:
    """The paper's 1-D mixture: modes at -4, 0, 4."""
    return torch.tensor([[-4.0], [0.0], [4.0]])


def ring_2d(modes: int = 8, radius: float = 2.0) -> Tensor:
    """``modes`` centres evenly spaced on a circle of ``radius``."""
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], dim=1).float()


def _xavier_mlp(sizes: list[int], generator: torch.Generator, prefix: str) -> Params:
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        std = math.sqrt(2.0 / (fan_in + fan_out))
        params[f"{prefix}{i}.weight"] = torch.randn(fan_out, fan_in, generator=generator) * std
        params[f"{prefix}{i}.bias"] = torch.zeros(fan_out)
    return params


def _mlp(params: Params, prefix: str, layers: int, h: Tensor) -> Tensor:
    for i in range(layers):
        h = h @ params[f"{prefix}{i}.weight"].T + params[f"{prefix}{i}.bias"]
        if i < layers - 1:
            h = torch.tanh(h)
    return h


class MixtureGAN(Game):
    """A GAN on a mixture of isotropic Gaussians; x are the generator's weights, y the
    discriminator's.

    ``loss="minimax"`` (the paper's saturating objective):
    f = E log D(data) + E log(1 - D(G(z))) - wd ||y||², with D = sigmoid(logit); the generator
    minimizes f, the discriminator maximizes it (so its weight decay enters with a minus sign,
    as the paper's discriminator loss adds wd ||y||²). ``loss="wasserstein"``: f = E D(data) -
    E D(G(z)) - wd ||y||² with an unbounded critic kept in check by the weight decay only.

    Args:
        centres: ``(modes, dim)`` mode centres; each mode has weight 1/modes.
        std: the modes' standard deviation.
        z_dim, g_hidden, g_layers, d_hidden, d_layers: the tanh MLPs (paper: 16, 64, 2, 64, 2).
        batch_size: data points and latent draws per step.
        n_data: the fixed data set's size (paper: 5000), drawn once from ``data_seed``.
        weight_decay: on the discriminator (paper: 1e-4), which keeps H_yy non-singular.
        fixed_batch: draw one batch (data points and latents) from ``data_seed`` and play on it
            at every step: a deterministic game whose local minimax points have zero gradients
            (its gradient norms are then measured on that batch; mode coverage always on 2000
            fresh latents).
    """

    steps = 2000
    lr = 2e-4

    def __init__(self, centres: Tensor, std: float = 0.1, *, name: str = "mog", loss: str = "minimax",
                 z_dim: int = 16, g_hidden: int = 64, g_layers: int = 2, d_hidden: int = 64, d_layers: int = 2,
                 batch_size: int = 512, n_data: int = 5000, weight_decay: float = 1e-4, data_seed: int = 2020,
                 fixed_batch: bool = False):
        if loss not in ("minimax", "wasserstein"):
            raise ValueError(f"loss must be 'minimax' or 'wasserstein', got {loss!r}")
        if std <= 0 or batch_size < 1 or n_data < 1 or weight_decay < 0:
            raise ValueError("std and batch_size, n_data must be positive and weight_decay >= 0")
        self.centres = centres.float()
        self.dim = self.centres.shape[1]
        self.std, self.name, self.kind = std, name, loss
        self.z_dim, self.batch_size, self.n_data, self.weight_decay = z_dim, batch_size, n_data, weight_decay
        self.fixed_batch = bool(fixed_batch)
        self.g_sizes = [z_dim] + [g_hidden] * g_layers + [self.dim]
        self.d_sizes = [self.dim] + [d_hidden] * d_layers + [1]
        g = torch.Generator().manual_seed(data_seed)
        which = torch.randint(0, len(self.centres), (n_data,), generator=g)
        self.data = self.centres[which] + std * torch.randn(n_data, self.dim, generator=g)
        self._eval = (self.data[:min(n_data, 2000)], torch.randn(min(n_data, 2000), z_dim, generator=g))
        if self.fixed_batch:
            idx = torch.randint(0, n_data, (batch_size,), generator=g)
            self._fixed = (self.data[idx], torch.randn(batch_size, z_dim, generator=g))

    def init_params(self, generator: torch.Generator) -> tuple[Params, Params]:
        return _xavier_mlp(self.g_sizes, generator, "g"), _xavier_mlp(self.d_sizes, generator, "d")

    def generate(self, x: Params, z: Tensor) -> Tensor:
        return _mlp(x, "g", len(self.g_sizes) - 1, z)

    def critic(self, y: Params, data: Tensor) -> Tensor:
        return _mlp(y, "d", len(self.d_sizes) - 1, data).squeeze(-1)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        if self.fixed_batch:
            while True:
                yield self._fixed
        while True:
            idx = torch.randint(0, self.n_data, (self.batch_size,), generator=generator)
            yield self.data[idx], torch.randn(self.batch_size, self.z_dim, generator=generator)

    def eval_batch(self) -> tuple[Tensor, Tensor]:
        """2000 held data points and latents (with ``fixed_batch``: the game's one batch)."""
        return self._fixed if self.fixed_batch else self._eval

    def loss(self, x: Params, y: Params, batch: tuple[Tensor, Tensor] | None) -> Tensor:
        real, z = batch if batch is not None else self._eval
        d_real = self.critic(y, real)
        d_fake = self.critic(y, self.generate(x, z))
        if self.kind == "minimax":
            f = torch.nn.functional.logsigmoid(d_real).mean() + torch.nn.functional.logsigmoid(-d_fake).mean()
        else:
            f = d_real.mean() - d_fake.mean()
        if self.weight_decay:
            f = f - self.weight_decay * sum(torch.sum(v * v) for v in y.values())
        return f

    def evaluate(self, x: Params, y: Params) -> dict[str, float]:
        out = game_metrics(self, x, y, self.eval_batch())
        with torch.no_grad():
            out.update(self.mode_coverage(self.generate(x, self._eval[1])))
        return out

    def mode_coverage(self, samples: Tensor) -> dict[str, float]:
        """``high_quality``: the fraction of samples within 3 std of their nearest mode;
        ``modes_covered``: the modes that get at least a quarter of their fair share
        (samples/modes) of high-quality samples."""
        d = torch.cdist(samples.float(), self.centres)
        nearest = d.argmin(dim=1)
        good = d.gather(1, nearest[:, None]).squeeze(1) <= 3 * self.std
        counts = torch.bincount(nearest[good], minlength=len(self.centres))
        share = samples.shape[0] / len(self.centres)
        return {"high_quality": float(good.float().mean()), "modes_covered": int((counts >= share / 4).sum()),
                "modes": len(self.centres)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "loss": self.kind, "std": self.std, "batch_size": self.batch_size,
                "generator": self.g_sizes, "discriminator": self.d_sizes, "weight_decay": self.weight_decay,
                "fixed_batch": self.fixed_batch}


def gan_1d(**kwargs) -> MixtureGAN:
    """The paper's 1-D mixture-of-Gaussians GAN (modes -4, 0, 4, std 0.1)."""
    return MixtureGAN(mog_1d(), kwargs.pop("std", 0.1), name=kwargs.pop("name", "mog1d"), **kwargs)


def gan_ring(**kwargs) -> MixtureGAN:
    """A GAN on a 2-D ring of eight Gaussians (radius 2, std 0.05)."""
    return MixtureGAN(ring_2d(), kwargs.pop("std", 0.05), name=kwargs.pop("name", "ring8"), **kwargs)


def wgan_1d(**kwargs) -> MixtureGAN:
    """A small WGAN-style game on the 1-D mixture: linear critic output, weight decay 1e-2."""
    kwargs.setdefault("weight_decay", 1e-2)
    return MixtureGAN(mog_1d(), kwargs.pop("std", 0.1), name=kwargs.pop("name", "wgan1d"), loss="wasserstein", **kwargs)


#: name -> factory, for ``l2o.minimax.get``
GAMES: dict[str, Callable[..., Game]] = {
    "f1": lambda **kw: toy("f1", **kw),
    "f2": lambda **kw: toy("f2", **kw),
    "f3": lambda **kw: toy("f3", **kw),
    "bilinear": BilinearGame,
    "mog1d": gan_1d,
    "ring8": gan_ring,
    "wgan1d": wgan_1d,
}


def get(name: str, **kwargs) -> Game:
    """A game by name (see :data:`GAMES`)."""
    if name not in GAMES:
        raise ValueError(f"unknown game {name!r}; choose from {sorted(GAMES)}")
    return GAMES[name](**kwargs)
