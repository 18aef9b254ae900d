"""Compressors for distributed SGD: what a worker or the server puts on the wire.

Every compressor maps a flat tensor to a **packed** ``uint8`` payload of a size fixed by the
number of elements (so ranks can ``gather`` it without exchanging sizes) and back:

* :class:`Identity` - the raw bytes (32 bits per float32 element, ω = 0);
* :class:`QSGD` - unbiased stochastic quantization to ``s`` levels per block (Alistarh et al.
  2017), with the 2-norm (QSGD) or the ∞-norm as the block's scale; the signed level of each
  element is bit-packed (2 bits for ``s = 1``, 4 bits for ``s <= 7``, 8 bits up to ``s = 127``)
  and each block adds one scale;
* :class:`ScaledSign` - ``‖x_b‖₁/|b| · sign(x)`` per block, 1 bit per element plus a scale
  (biased, contractive);
* :class:`TopK` - the ``k`` largest magnitudes, values and int32 indices (biased, contractive);
* :class:`RandomK` - ``k`` coordinates drawn uniformly, scaled by ``d/k`` (unbiased).

``omega(numel)`` is the variance bound ω of ``E‖C(x) − x‖² ≤ ω‖x‖²`` (for the biased
compressors this is the contraction bound, ω < 1); ``bits_per_element(numel)`` is measured from
the payload's actual size, scales, indices and padding included.

Randomness comes from a ``torch.Generator`` the caller seeds, so the in-process simulator and
real processes draw the same numbers (see :func:`l2o.distributed.algorithms.generator_for`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["Compressor", "Identity", "QSGD", "ScaledSign", "TopK", "RandomK", "create", "pack_bits", "unpack_bits"]


def _as_bytes(t: Tensor) -> Tensor:
    return t.contiguous().view(torch.uint8).reshape(-1)


def _from_bytes(b: Tensor, dtype: torch.dtype) -> Tensor:
    b = b.contiguous()
    if b.storage_offset() % torch.empty((), dtype=dtype).element_size():
        b = b.clone()  # a slice of a message at an odd offset: realign before reinterpreting
    return b.view(dtype)


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack unsigned integer ``codes`` (< 2**bits, bits in 1, 2, 4, 8) into a uint8 tensor."""
    if bits not in (1, 2, 4, 8):
        raise ValueError(f"bits must be 1, 2, 4 or 8, got {bits}")
    codes = codes.to(torch.uint8).reshape(-1)
    if bits == 8:
        return codes.clone()
    per = 8 // bits
    pad = (-codes.numel()) % per
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad)])
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    return (codes.view(-1, per) << shifts).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` codes, as uint8."""
    if bits == 8:
        return packed[:count].clone()
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    mask = (1 << bits) - 1
    return ((packed.unsqueeze(1) >> shifts) & mask).reshape(-1)[:count]


class Compressor:
    """Base class; subclasses implement ``nbytes``, ``omega``, ``compress`` and ``decompress``."""

    name = "compressor"
    unbiased = True

    def nbytes(self, numel: int, dtype: torch.dtype = torch.float32) -> int:
        raise NotImplementedError

    def omega(self, numel: int) -> float:
        raise NotImplementedError

    def bits_per_element(self, numel: int, dtype: torch.dtype = torch.float32) -> float:
        """Bits on the wire per element for a tensor of ``numel`` elements (all overheads in)."""
        if numel < 1:
            raise ValueError(f"numel must be >= 1, got {numel}")
        return 8.0 * self.nbytes(numel, dtype) / numel

    def compress(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError

    def decompress(self, payload: Tensor, numel: int, dtype: torch.dtype) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``decompress(compress(x))``: the value the receiver sees."""
        flat = x.reshape(-1)
        return self.decompress(self.compress(flat, generator), flat.numel(), flat.dtype).view_as(x)

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class Identity(Compressor):
    name = "identity"

    def nbytes(self, numel, dtype=torch.float32):
        return numel * torch.empty((), dtype=dtype).element_size()

    def omega(self, numel):
        return 0.0

    def compress(self, x, generator=None):
        return _as_bytes(x.reshape(-1)).clone()

    def decompress(self, payload, numel, dtype):
        return _from_bytes(payload, dtype).clone()


def _check_block(block: int) -> int:
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive integer, got {block!r}")
    return block


class QSGD(Compressor):
    """Unbiased stochastic quantization with ``levels`` (s) levels per sign, block by block.

    Within a block ``b`` with scale ``N`` (its 2-norm, or its largest magnitude for
    ``norm="inf"``) an element becomes ``N/s · sign(x) · ℓ`` where ``ℓ`` is ``s|x|/N`` rounded
    down or up at random with the probabilities that make it unbiased. Variance bound per block
    of size ``b``: ``min(b/(4s²), √b/s)`` for the 2-norm, ``min(b/(4s²), √b/s²)`` for the ∞-norm.
    """

    name = "qsgd"

    def __init__(self, levels: int = 1, block: int = 256, norm: str = "2"):
        if not isinstance(levels, int) or not 1 <= levels <= 127:
            raise ValueError(f"levels must be an integer in [1, 127], got {levels!r}")
        if str(norm) not in ("2", "inf"):
            raise ValueError(f"norm must be '2' or 'inf', got {norm!r}")
        self.levels = levels
        self.block = _check_block(block)
        self.norm = str(norm)
        needed = math.ceil(math.log2(2 * levels + 1))
        self.bits = next(b for b in (1, 2, 4, 8) if b >= needed)

    def describe(self):
        return f"s={self.levels}, block={self.block}, norm={self.norm}"

    def _blocks(self, numel):
        return math.ceil(numel / self.block)

    def nbytes(self, numel, dtype=torch.float32):
        scale = torch.empty((), dtype=dtype).element_size()
        return self._blocks(numel) * scale + math.ceil(numel * self.bits / 8)

    def omega(self, numel):
        b = min(self.block, numel)
        s = self.levels
        if self.norm == "2":
            return min(b / (4 * s * s), math.sqrt(b) / s)
        return min(b / (4 * s * s), math.sqrt(b) / (s * s))

    def compress(self, x, generator=None):
        x = x.reshape(-1)
        n, nb = x.numel(), self._blocks(x.numel())
        padded = torch.zeros(nb * self.block, dtype=x.dtype)
        padded[:n] = x
        xb = padded.view(nb, self.block)
        scale = xb.norm(dim=1) if self.norm == "2" else xb.abs().amax(dim=1)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        level = xb.abs() / safe.unsqueeze(1) * self.levels
        low = level.floor()
        u = torch.rand(level.shape, generator=generator, dtype=x.dtype)
        ell = (low + (u < (level - low)).to(x.dtype)).clamp_(max=self.levels)
        signed = torch.where(xb < 0, -ell, ell).reshape(-1)[:n]
        codes = (signed + self.levels).to(torch.uint8)
        return torch.cat([_as_bytes(scale), pack_bits(codes, self.bits)])

    def decompress(self, payload, numel, dtype):
        nb = self._blocks(numel)
        size = torch.empty((), dtype=dtype).element_size()
        scale = _from_bytes(payload[: nb * size], dtype)
        codes = unpack_bits(payload[nb * size:], self.bits, numel).to(dtype) - self.levels
        step = (scale / self.levels).repeat_interleave(self.block)[:numel]
        return codes * step


class ScaledSign(Compressor):
    """``‖x_b‖₁/|b| · sign(x)`` per block (zeros sent as +): biased, with
    ``‖C(x) − x‖² = ‖x‖² − ‖x_b‖₁²/|b| ≤ (1 − 1/b)‖x‖²``."""

    name = "sign"
    unbiased = False

    def __init__(self, block: int = 256):
        self.block = _check_block(block)

    def describe(self):
        return f"block={self.block}"

    def nbytes(self, numel, dtype=torch.float32):
        scale = torch.empty((), dtype=dtype).element_size()
        return math.ceil(numel / self.block) * scale + math.ceil(numel / 8)

    def omega(self, numel):
        return 1.0 - 1.0 / min(self.block, numel)

    def _counts(self, numel, dtype):
        nb = math.ceil(numel / self.block)
        counts = torch.full((nb,), float(self.block), dtype=dtype)
        counts[-1] = numel - (nb - 1) * self.block
        return counts

    def compress(self, x, generator=None):
        x = x.reshape(-1)
        n = x.numel()
        nb = math.ceil(n / self.block)
        padded = torch.zeros(nb * self.block, dtype=x.dtype)
        padded[:n] = x
        scale = padded.view(nb, self.block).abs().sum(dim=1) / self._counts(n, x.dtype)
        return torch.cat([_as_bytes(scale), pack_bits((x >= 0).to(torch.uint8), 1)])

    def decompress(self, payload, numel, dtype):
        nb = math.ceil(numel / self.block)
        size = torch.empty((), dtype=dtype).element_size()
        scale = _from_bytes(payload[: nb * size], dtype)
        signs = unpack_bits(payload[nb * size:], 1, numel).to(dtype) * 2 - 1
        return signs * scale.repeat_interleave(self.block)[:numel]


class _Sparse(Compressor):
    def __init__(self, ratio: float = 0.01):
        if not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        self.ratio = float(ratio)

    def describe(self):
        return f"ratio={self.ratio:g}"

    def k(self, numel):
        return max(1, min(numel, round(self.ratio * numel)))

    def nbytes(self, numel, dtype=torch.float32):
        return self.k(numel) * (torch.empty((), dtype=dtype).element_size() + 4)

    def _pack(self, values, index):
        return torch.cat([_as_bytes(values), _as_bytes(index.to(torch.int32))])

    def decompress(self, payload, numel, dtype):
        k = self.k(numel)
        size = torch.empty((), dtype=dtype).element_size()
        values = _from_bytes(payload[: k * size], dtype)
        index = _from_bytes(payload[k * size:], torch.int32).long()
        out = torch.zeros(numel, dtype=dtype)
        out[index] = values
        return out


class TopK(_Sparse):
    """The ``k = round(ratio·d)`` largest magnitudes (biased; ``‖C(x) − x‖² ≤ (1 − k/d)‖x‖²``)."""

    name = "topk"
    unbiased = False

    def omega(self, numel):
        return 1.0 - self.k(numel) / numel

    def compress(self, x, generator=None):
        x = x.reshape(-1)
        index = x.abs().topk(self.k(x.numel()), sorted=False).indices
        return self._pack(x[index], index)


class RandomK(_Sparse):
    """``k`` coordinates drawn without replacement, scaled by ``d/k`` (unbiased, ω = d/k − 1)."""

    name = "randk"

    def omega(self, numel):
        return numel / self.k(numel) - 1.0

    def compress(self, x, generator=None):
        x = x.reshape(-1)
        n, k = x.numel(), self.k(x.numel())
        index = torch.randperm(n, generator=generator)[:k]
        return self._pack(x[index] * (n / k), index)


def create(spec: str | Compressor | None) -> Compressor:
    """A compressor from a spec: ``"identity"``, ``"qsgd:s=1,block=256,norm=inf"``,
    ``"sign:block=256"``, ``"topk:ratio=0.01"``, ``"randk:ratio=0.1"`` (or a compressor)."""
    if spec is None:
        return Identity()
    if isinstance(spec, Compressor):
        return spec
    name, _, rest = str(spec).partition(":")
    kwargs = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"compressor option {item!r} in {spec!r} is not key=value")
        kwargs[key.strip()] = value.strip()
    classes = {"identity": Identity, "qsgd": QSGD, "sign": ScaledSign, "topk": TopK, "randk": RandomK}
    if name not in classes:
        raise ValueError(f"unknown compressor {name!r}; choose from {', '.join(classes)}")
    conv = {"s": ("levels", int), "levels": ("levels", int), "block": ("block", int), "norm": ("norm", str),
            "ratio": ("ratio", float)}
    args = {}
    for key, value in kwargs.items():
        if key not in conv:
            raise ValueError(f"unknown option {key!r} for compressor {name!r}")
        target, cast = conv[key]
        try:
            args[target] = cast(value)
        except ValueError:
            raise ValueError(f"option {key}={value!r} of compressor {name!r} is not a {cast.__name__}") from None
    try:
        return classes[name](**args)
    except TypeError as exc:
        raise ValueError(f"compressor {name!r} does not take {', '.join(kwargs)}: {exc}") from None
