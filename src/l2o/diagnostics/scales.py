"""SGD's noise scale (Smith & Le, 2018), Park et al.'s (2019) normalized noise scale, and advice on
batch size and learning rate from a measured ``B_simple`` (McCandlish et al., 2018)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


def _check(lr: float, dataset_size: int, batch_size: int, momentum: float) -> None:
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"the learning rate must be a positive number, got {lr!r}")
    if int(dataset_size) < 1:
        raise ValueError(f"dataset_size must be >= 1, got {dataset_size}")
    if not 1 <= int(batch_size) <= int(dataset_size):
        raise ValueError(f"batch_size must be between 1 and the training set's size {dataset_size}, got {batch_size}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")


def smith_le_noise_scale(lr: float, dataset_size: int, batch_size: int, momentum: float = 0.0, *,
                         approximate: bool = False) -> float:
    """Smith & Le's SGD noise scale ``g = ε (N/B − 1) / (1 − m)``.

    ``g = ε(N/B − 1)`` for plain SGD (their eq. 6, batches drawn without replacement); with momentum
    coefficient ``m`` the effective learning rate is ``ε/(1 − m)`` (their section 5). With
    ``approximate=True``: ``g ≈ εN/(B(1 − m))``, the form for ``B ≪ N``. ``ε`` is the learning rate
    of the mean loss over the batch (``torch.optim.SGD``'s ``lr`` with ``dampening=0``).
    """
    _check(lr, dataset_size, batch_size, momentum)
    n, b = int(dataset_size), int(batch_size)
    ratio = n / b if approximate else n / b - 1.0
    return lr * ratio / (1.0 - momentum)


def ntk_learning_rate(lr: float, fan_in: int, sigma_w: float = 1.0) -> float:
    """The NTK-parameterization learning rate equivalent to a standard-parameterization one for a
    layer of ``fan_in`` inputs whose weights start as ``N(0, σ_w²/fan_in)``: the NTK layer computes
    ``(σ_w/√fan_in)·W·x`` with unit-variance ``W``, so SGD with rate ``ε_NTK`` on ``W`` is SGD with
    rate ``ε_NTK·σ_w²/fan_in`` on the standard weights."""
    if lr <= 0 or fan_in < 1 or sigma_w <= 0:
        raise ValueError(f"need lr > 0, fan_in >= 1, sigma_w > 0; got {lr}, {fan_in}, {sigma_w}")
    return lr * fan_in / sigma_w**2


def normalized_noise_scale(lr: float, dataset_size: int, batch_size: int, momentum: float = 0.0, *,
                           parameterization: str = "ntk", fan_in: int | None = None, sigma_w: float = 1.0) -> float:
    """Park et al.'s normalized noise scale: Smith & Le's ``g`` (with momentum) computed with the
    learning rate of the NTK parameterization, in which it is comparable across widths.

    ``parameterization="ntk"``: ``lr`` already is the NTK rate, ``ĝ = ε(N/B − 1)/(1 − m)``.
    ``parameterization="standard"``: ``lr`` is converted by :func:`ntk_learning_rate` with the
    ``fan_in`` and ``σ_w`` of the layer it is taken for (one layer's view; a network trained in the
    standard parameterization with one rate has a different normalized rate in every layer of a
    different fan-in).
    """
    if parameterization == "standard":
        if fan_in is None:
            raise ValueError("parameterization='standard' needs the layer's fan_in")
        lr = ntk_learning_rate(lr, fan_in, sigma_w)
    elif parameterization != "ntk":
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    return smith_le_noise_scale(lr, dataset_size, batch_size, momentum)


@dataclass
class Advice:
    """Batch size and learning rate predicted from a measured ``B_simple`` and one run at ``(ε, B)``.

    Attributes:
        b_simple: the measured noise scale, taken as the critical batch size ``B_crit``.
        batch_size, lr: the run the advice starts from.
        recommended_batch_size: ``B_crit`` rounded, within ``[1, N]`` (McCandlish: the batch size
            that balances steps against examples, ``S = 2 S_min``, ``E = 2 E_min``).
        lr_mccandlish: SGD's rate at the recommended batch from ``ε_opt(B) = ε_max/(1 + B_noise/B)``,
            with ``ε_max`` solved from the given run.
        lr_smith_le: the rate that keeps Smith & Le's noise scale ``g`` of the given run at the
            recommended batch size.
        steps_factor, examples_factor: ``S/S_min = 1 + B_noise/B`` and ``E/E_min = 1 + B/B_noise``
            at the given batch size (how far it is from the fewest steps and the fewest examples).
        assumptions: what the predictions rest on.
    """

    b_simple: float
    batch_size: int
    lr: float
    dataset_size: int
    momentum: float
    recommended_batch_size: int
    lr_mccandlish: float
    lr_smith_le: float
    steps_factor: float
    examples_factor: float
    assumptions: list[str] = field(default_factory=list)

    def lr_for(self, batch_size: int) -> dict[str, float]:
        """Both models' learning rate at another batch size."""
        _check(self.lr, self.dataset_size, batch_size, self.momentum)
        eps_max = self.lr * (1.0 + self.b_simple / self.batch_size)
        g = smith_le_noise_scale(self.lr, self.dataset_size, self.batch_size, self.momentum)
        return {"mccandlish": eps_max / (1.0 + self.b_simple / batch_size),
                "smith_le": _lr_for_g(g, self.dataset_size, batch_size, self.momentum)}

    def text(self) -> str:
        lines = [
            f"measured B_simple = {self.b_simple:.4g}; your run: lr {self.lr:.4g}, batch {self.batch_size}, "
            f"N = {self.dataset_size}" + (f", momentum {self.momentum:g}" if self.momentum else ""),
            f"at batch {self.batch_size}: {self.steps_factor:.2f}x the fewest steps, "
            f"{self.examples_factor:.2f}x the fewest examples (McCandlish)",
            f"recommended batch size {self.recommended_batch_size} (the critical batch size)",
            f"  learning rate there: {self.lr_mccandlish:.4g} (McCandlish, from eps_opt(B) = eps_max/(1 + B_noise/B)); "
            f"{self.lr_smith_le:.4g} (Smith & Le, the same noise scale g)",
            "assumptions:",
        ]
        lines += [f"  - {a}" for a in self.assumptions]
        return "\n".join(lines)

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def _lr_for_g(g: float, dataset_size: int, batch_size: int, momentum: float) -> float:
    ratio = dataset_size / batch_size - 1.0
    return math.inf if ratio <= 0 else g * (1.0 - momentum) / ratio


ASSUMPTIONS = [
    "B_simple stands in for the critical batch size B_noise; McCandlish et al. find B_crit ~ B_simple "
    "within about an order of magnitude (exact only for a quadratic loss whose Hessian is a multiple of the identity)",
    "the given learning rate was tuned (the best) for the given batch size, for plain SGD; "
    "McCandlish's eps_opt(B) = eps_max/(1 + B_noise/B) is derived for SGD on a locally quadratic loss",
    "Smith & Le: the best test accuracy sits at a fixed noise scale g = eps(N/B - 1)/(1 - m), so the learning rate "
    "scales with the batch size (B << N, learning rate below the largest stable one, no learning-rate decay "
    "in the comparison); it speaks to generalization, McCandlish to training speed",
    "B_simple changes during training (it usually grows as the loss falls): measure it where the advice applies",
]


def advise(b_simple: float, lr: float, batch_size: int, dataset_size: int, momentum: float = 0.0) -> Advice:
    """The batch size and learning rates that McCandlish et al.'s and Smith & Le's models predict from a
    measured ``B_simple`` and one run at learning rate ``lr`` with ``batch_size`` on ``dataset_size``
    examples (its assumptions are in :attr:`Advice.assumptions`)."""
    _check(lr, dataset_size, batch_size, momentum)
    if not (math.isfinite(b_simple) and b_simple > 0):
        raise ValueError(f"b_simple must be a positive finite number, got {b_simple!r} (an infinite value means the "
                         "gradient was not distinguishable from its noise: measure over more examples)")
    recommended = int(min(max(round(b_simple), 1), int(dataset_size)))
    eps_max = lr * (1.0 + b_simple / batch_size)
    g = smith_le_noise_scale(lr, dataset_size, batch_size, momentum)
    return Advice(b_simple=float(b_simple), batch_size=int(batch_size), lr=float(lr), dataset_size=int(dataset_size),
                  momentum=float(momentum), recommended_batch_size=recommended,
                  lr_mccandlish=eps_max / (1.0 + b_simple / recommended),
                  lr_smith_le=_lr_for_g(g, dataset_size, recommended, momentum),
                  steps_factor=1.0 + b_simple / batch_size, examples_factor=1.0 + batch_size / b_simple,
                  assumptions=list(ASSUMPTIONS))
