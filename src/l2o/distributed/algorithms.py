"""Compressed data-parallel SGD as a worker side and a server side, tensor by tensor.

One object runs in both settings: the simulator (:mod:`l2o.distributed.simulator`) calls the
K workers and the server in a loop; the DDP hook (:mod:`l2o.distributed.hook`) calls the worker
side on every rank and the server side on rank 0, with the payloads travelling through
``gather`` and ``broadcast``. Payloads are packed ``uint8`` tensors (:mod:`.compressors`).

Every algorithm works in **gradient units**: the worker decodes the server's message into a
direction ``d`` and the model takes ``x ← x − γ d`` with an ordinary ``torch.optim.SGD(lr=γ)``
(the same call in the simulator and in DDP, so both give the same numbers). For DORE this is
the paper's Algorithm 1 with the model residual and its error divided by −γ (identical in exact
arithmetic for a constant γ and positively homogeneous, odd compressors, which all here are):

worker i::

    Δᵢ = gᵢ − hᵢ;   Δ̂ᵢ = Q(Δᵢ);   hᵢ ← hᵢ + α Δ̂ᵢ;   send Δ̂ᵢ

server::

    Δ̂ = mean Δ̂ᵢ;   ĝ = h + Δ̂;   h ← h + α Δ̂
    q = ĝ + η e;    q̂ = Qₘ(q);    e ← q − q̂;      send q̂

worker i::

    d = β q̂          (x̂ ← x̂ − γ d, i.e. x̂ ← x̂ + β·(−γ q̂))

Baselines: full precision (mean of the gradients), QSGD (mean of compressed gradients),
MEM-SGD (worker error feedback), DIANA (worker gradient residuals, uncompressed downlink) and
DoubleSqueeze (error feedback on both sides).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .compressors import Compressor, Identity, create

__all__ = ["Algorithm", "FullPrecision", "CompressedSGD", "MemSGD", "DIANA", "DoubleSqueeze", "DORE",
           "make_algorithm", "generator_for", "ALGORITHMS", "SERVER_ROLE"]

#: the role number the server's random draws use in :func:`generator_for`
SERVER_ROLE = 1_000_003


def generator_for(seed: int, step: int, role: int, index: int) -> torch.Generator:
    """The generator of one compression: seeded by (run seed, step, worker or server, tensor),
    so the draws do not depend on the order tensors are visited in (DDP buckets) or on process."""
    mixed = (int(seed) * 0x9E3779B1 + int(step) * 0x85EBCA77 + int(role) * 0xC2B2AE3D + int(index) * 0x27D4EB2F)
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


@dataclass
class Wire:
    """Bytes sent so far, per direction (summed over workers)."""

    up: int = 0
    down: int = 0

    @property
    def total(self) -> int:
        return self.up + self.down


class Algorithm:
    """A worker side and a server side; states are per tensor index.

    ``uplink`` compresses what a worker sends; ``downlink`` what the server sends back
    (:class:`Identity` for the algorithms that compress one direction only).
    """

    name = "algorithm"

    def __init__(self, uplink: Compressor | str | None = None, downlink: Compressor | str | None = None):
        self.uplink = create(uplink)
        self.downlink = create(downlink)

    # -- state -------------------------------------------------------------------------------
    def init_worker(self, numel: int, dtype: torch.dtype) -> dict:
        return {}

    def init_server(self, numel: int, dtype: torch.dtype) -> dict:
        return {}

    # -- the three halves of a step ------------------------------------------------------------
    def worker_encode(self, state: dict, grad: Tensor, gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    def server_step(self, state: dict, payloads: list[Tensor], numel: int, dtype: torch.dtype,
                    gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    def worker_decode(self, state: dict, payload: Tensor, numel: int, dtype: torch.dtype) -> Tensor:
        return self.downlink.decompress(payload, numel, dtype)

    # -- helpers -------------------------------------------------------------------------------
    def _mean(self, payloads, numel, dtype):
        """Mean of the decoded uplink messages, summed in worker order (one fixed order)."""
        acc = self.uplink.decompress(payloads[0], numel, dtype)
        for p in payloads[1:]:
            acc = acc + self.uplink.decompress(p, numel, dtype)
        return acc / len(payloads)

    def bytes_per_step(self, numels: list[int], workers: int, dtype=torch.float32) -> Wire:
        """Bytes one step sends with ``workers`` workers: each worker's upload and the server's
        message to each worker."""
        up = sum(self.uplink.nbytes(n, dtype) for n in numels if n > 0)
        down = sum(self.downlink.nbytes(n, dtype) for n in numels if n > 0)
        return Wire(up=workers * up, down=workers * down)

    def describe(self) -> str:
        return f"{self.name} (up: {self.uplink!r}, down: {self.downlink!r})"


class CompressedSGD(Algorithm):
    """QSGD-style: each worker sends Q(gᵢ); the server averages and sends the mean uncompressed.
    With the identity compressor this is plain all-reduce SGD."""

    name = "qsgd"

    def __init__(self, uplink="qsgd:s=1,block=256,norm=inf"):
        super().__init__(uplink, Identity())

    def worker_encode(self, state, grad, gen):
        return self.uplink.compress(grad, gen)

    def server_step(self, state, payloads, numel, dtype, gen):
        return self.downlink.compress(self._mean(payloads, numel, dtype), gen)


class FullPrecision(CompressedSGD):
    """Plain all-reduce SGD (32 bits each way)."""

    name = "full"

    def __init__(self):
        super().__init__(Identity())


class MemSGD(Algorithm):
    """Error feedback on the workers (Stich et al. 2018): pᵢ = gᵢ + mᵢ, send C(pᵢ), mᵢ = pᵢ − C(pᵢ)."""

    name = "memsgd"

    def __init__(self, uplink="qsgd:s=1,block=256,norm=inf"):
        super().__init__(uplink, Identity())

    def init_worker(self, numel, dtype):
        return {"m": torch.zeros(numel, dtype=dtype)}

    def worker_encode(self, state, grad, gen):
        p = grad + state["m"]
        payload = self.uplink.compress(p, gen)
        state["m"] = p - self.uplink.decompress(payload, p.numel(), p.dtype)
        return payload

    def server_step(self, state, payloads, numel, dtype, gen):
        return self.downlink.compress(self._mean(payloads, numel, dtype), gen)


def _check_rate(name, value, low_open=True):
    value = float(value)
    if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


class DIANA(Algorithm):
    """Gradient-residual compression (Mishchenko et al. 2019): the DORE worker side with an
    uncompressed downlink."""

    name = "diana"

    def __init__(self, uplink="qsgd:s=1,block=256,norm=inf", alpha: float = 0.1):
        super().__init__(uplink, Identity())
        self.alpha = _check_rate("alpha", alpha)

    def init_worker(self, numel, dtype):
        return {"h": torch.zeros(numel, dtype=dtype)}

    init_server = init_worker

    def worker_encode(self, state, grad, gen):
        payload = self.uplink.compress(grad - state["h"], gen)
        state["h"] = state["h"] + self.alpha * self.uplink.decompress(payload, grad.numel(), grad.dtype)
        return payload

    def _gradient_estimate(self, state, payloads, numel, dtype):
        delta = self._mean(payloads, numel, dtype)
        g_hat = state["h"] + delta
        state["h"] = state["h"] + self.alpha * delta
        return g_hat

    def server_step(self, state, payloads, numel, dtype, gen):
        return self.downlink.compress(self._gradient_estimate(state, payloads, numel, dtype), gen)


class DoubleSqueeze(Algorithm):
    """Error-compensated compression on both sides (Tang et al. 2019)."""

    name = "doublesqueeze"

    def __init__(self, uplink="qsgd:s=1,block=256,norm=inf", downlink="qsgd:s=1,block=256,norm=inf"):
        super().__init__(uplink, downlink)

    def init_worker(self, numel, dtype):
        return {"delta": torch.zeros(numel, dtype=dtype)}

    init_server = init_worker

    def worker_encode(self, state, grad, gen):
        v = grad + state["delta"]
        payload = self.uplink.compress(v, gen)
        state["delta"] = v - self.uplink.decompress(payload, v.numel(), v.dtype)
        return payload

    def server_step(self, state, payloads, numel, dtype, gen):
        v = self._mean(payloads, numel, dtype) + state["delta"]
        state["last_residual_norm"] = float(v.norm())
        payload = self.downlink.compress(v, gen)
        state["delta"] = v - self.downlink.decompress(payload, numel, dtype)
        return payload


class DORE(DIANA):
    """DORE, Algorithm 1 of Liu, Li, Tang & Yan (2019), in gradient units (see the module).

    Defaults are the paper's experimental ones: α = 0.1, β = 1, η = 1 and a 2-bit ∞-norm
    quantizer with blocks of 256 on both sides.

    Checked at construction (``ValueError``): α, β in (0, 1], η in [0, 1]; and the settings
    under which a residual recursion expands in expectation for a compressor at its variance
    bound ω: ``α(1 + ω_w) ≥ 2`` (the worker states hᵢ then drift away from the gradients:
    E‖g − h⁺‖² = (1 − 2α + α²(1 + ω))‖g − h‖²) and, for the model residual, ``β(1 + ω_m) ≥ 2``
    without error compensation (η = 0) or ``η²ω_m ≥ 1`` with it (the error e⁺ = q − Q(q) of
    q = u + ηe then grows by η²ω_m per step). Settings inside these limits but outside the
    paper's sufficient conditions (α ≤ 1/(1 + ω_w), β ≤ 1/(1 + ω_m)) are run with a warning
    when ``warn=True``; the paper's own experiments use such settings.
    """

    name = "dore"

    def __init__(self, uplink="qsgd:s=1,block=256,norm=inf", downlink="qsgd:s=1,block=256,norm=inf",
                 alpha: float = 0.1, beta: float = 1.0, eta: float = 1.0, *, reference_numel: int = 256,
                 warn: bool = False):
        Algorithm.__init__(self, uplink, downlink)
        self.alpha = _check_rate("alpha", alpha)
        self.beta = _check_rate("beta", beta)
        self.eta = _check_rate("eta", eta, low_open=False)
        self.check_stability(reference_numel, warn=warn)

    def check_stability(self, numel: int, warn: bool = False) -> None:
        """Raise ``ValueError`` for settings that diverge (see the class); ``numel`` fixes ω for
        compressors whose bound depends on the tensor size (the block size caps it)."""
        w_up, w_down = self.worker_omega(numel), self.server_omega(numel)
        if self.alpha * (1 + w_up) >= 2:
            raise ValueError(
                f"DORE diverges with alpha={self.alpha:g} for the uplink compressor {self.uplink!r} "
                f"(variance bound omega={w_up:.3g}): the worker states h_i expand unless "
                f"alpha < 2/(1+omega) = {2 / (1 + w_up):.3g}; the paper's theory takes alpha <= 1/(1+omega) "
                f"= {1 / (1 + w_up):.3g}")
        if self.eta == 0 and self.beta * (1 + w_down) >= 2:
            raise ValueError(
                f"DORE diverges with beta={self.beta:g} and no error compensation (eta=0) for the downlink "
                f"compressor {self.downlink!r} (omega={w_down:.3g}): the model residual expands unless "
                f"beta < 2/(1+omega) = {2 / (1 + w_down):.3g}")
        if self.eta > 0 and self.eta**2 * w_down >= 1 and self.downlink.unbiased and _attains_bound(self.downlink):
            raise ValueError(
                f"DORE diverges with eta={self.eta:g} for the downlink compressor {self.downlink!r} "
                f"(omega={w_down:.3g}, attained): the compression error e grows by eta^2*omega = "
                f"{self.eta**2 * w_down:.3g} >= 1 per step; take eta < {w_down ** -0.5:.3g}")
        if warn and (self.alpha > 1 / (1 + w_up) or self.beta > 1 / (1 + w_down)):
            warnings.warn(
                f"DORE with alpha={self.alpha:g}, beta={self.beta:g} is outside the paper's sufficient "
                f"conditions alpha <= {1 / (1 + w_up):.3g}, beta <= {1 / (1 + w_down):.3g} "
                f"(worst-case omega {w_up:.3g} / {w_down:.3g}); the paper's experiments run such settings",
                stacklevel=2)

    def worker_omega(self, numel):
        return self.uplink.omega(numel)

    def server_omega(self, numel):
        return self.downlink.omega(numel)

    def init_server(self, numel, dtype):
        return {"h": torch.zeros(numel, dtype=dtype), "e": torch.zeros(numel, dtype=dtype)}

    def server_step(self, state, payloads, numel, dtype, gen):
        g_hat = self._gradient_estimate(state, payloads, numel, dtype)
        q = g_hat + self.eta * state["e"] if self.eta else g_hat
        payload = self.downlink.compress(q, gen)
        q_hat = self.downlink.decompress(payload, numel, dtype)
        state["e"] = q - q_hat
        state["last_residual_norm"] = float(q.norm())
        return payload

    def worker_decode(self, state, payload, numel, dtype):
        q_hat = self.downlink.decompress(payload, numel, dtype)
        return q_hat if self.beta == 1.0 else self.beta * q_hat


def _attains_bound(compressor) -> bool:
    """Whether the compressor's variance bound holds with equality for every input (random-k)."""
    from .compressors import RandomK

    return isinstance(compressor, RandomK)


ALGORITHMS = {"full": FullPrecision, "qsgd": CompressedSGD, "memsgd": MemSGD, "diana": DIANA,
              "doublesqueeze": DoubleSqueeze, "dore": DORE}


def make_algorithm(name: str, compressor: str | Compressor | None = None, **kwargs) -> Algorithm:
    """An algorithm by name; ``compressor`` (when given) is used on every compressed link."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    cls = ALGORITHMS[name]
    if name == "full":
        if compressor is not None or kwargs:
            raise ValueError("the full-precision algorithm takes no compressor or options")
        return cls()
    if compressor is not None:
        kwargs.setdefault("uplink", compressor)
        if name in ("doublesqueeze", "dore"):
            kwargs.setdefault("downlink", compressor)
    return cls(**kwargs)
