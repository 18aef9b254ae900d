"""Exact fixed-point arithmetic for reversible learning (Maclaurin, Duvenaud & Adams 2015, §2.3).

A real vector is held as integers ``round(x * 2**radix_bits)`` in int64, so adding a float vector
and subtracting the same float vector again restores it bit for bit. Multiplying by a momentum
``gamma`` is where information is lost: it is done as an exact rational multiplication by
``n / d`` (``d = 2**denominator_bits``), and the remainder that the integer division discards is
pushed into an :class:`InfoBuffer`, a per-element arbitrary-precision integer used as a stack of
mixed-radix digits. Dividing by ``gamma`` pops those digits back, so the reverse pass recovers every
iterate exactly. On average each multiplication adds ``log2(1 / gamma)`` bits per element to the
buffer, instead of the 64 bits per element a stored float64 iterate costs.
"""

from __future__ import annotations

import sys

import numpy as np
import torch


class FixedPointOverflowError(OverflowError, ValueError):
    """A value left the range that the fixed-point representation can hold."""


def rational(value: float, denominator_bits: int) -> tuple[int, int]:
    """``value`` in (0, 1] rounded to ``n / 2**denominator_bits`` with ``n >= 1``: ``(n, d)``."""
    d = 1 << int(denominator_bits)
    n = int(round(float(value) * d))
    if not 1 <= n <= d:
        raise ValueError(f"a momentum of {value!r} is not in (0, 1] at {denominator_bits}-bit precision")
    return n, d


class InfoBuffer:
    """The information buffer of one tensor: one unbounded integer per element.

    ``push(r, m)`` appends a digit ``0 <= r < m`` (``store = store * m + r``), ``pop(m)`` removes the
    last digit pushed with radix ``m``. Python integers keep every element exact however long the
    run; each multiplication by ``gamma`` changes an element's size by about ``log2(1/gamma)`` bits.
    """

    def __init__(self, numel: int):
        self.store = np.zeros(int(numel), dtype=object)
        self.store[:] = 0

    def push(self, digits: np.ndarray, radix) -> None:
        self.store = self.store * radix + digits.astype(object)

    def pop(self, radix) -> np.ndarray:
        digits = self.store % radix
        self.store = self.store // radix
        return digits.astype(np.int64)

    def bits(self) -> int:
        """The information held: the sum of the elements' bit lengths."""
        return int(sum(int(x).bit_length() for x in self.store))

    def nbytes(self) -> int:
        """The memory these Python integers take here (object array plus the integers)."""
        return int(self.store.nbytes + sum(sys.getsizeof(int(x)) for x in self.store))


class ExactTensor:
    """A float64 tensor held exactly as fixed-point integers (radix ``2**radix_bits``).

    Args:
        value: the initial value (any float tensor).
        radix_bits: fractional bits (the paper's code: 52). Values must stay below
            ``2**(62 - radix_bits)`` (1024 at 52 bits), which leaves int64 room for a sum.
        denominator_bits: bits of the denominator of the rational momentum (16, as in the
            paper's code: gamma is rounded to a multiple of 2**-16). A multiplication by ``n / d``
            is exact on the integers it produces, but differs from the real product by up to
            ``n`` units of the last place (``2**(denominator_bits - radix_bits)``), so more
            denominator bits round gamma more finely and the product more coarsely.
        name: used in error messages.
    """

    def __init__(self, value: torch.Tensor, *, radix_bits: int = 52, denominator_bits: int = 16, name: str = "x"):
        if not 1 <= radix_bits <= 60:
            raise ValueError(f"radix_bits must be in [1, 60], got {radix_bits}")
        if not 1 <= denominator_bits <= 62 - radix_bits + 31:
            raise ValueError(f"denominator_bits must be in [1, {93 - radix_bits}], got {denominator_bits}")
        self.radix_bits = int(radix_bits)
        self.denominator_bits = int(denominator_bits)
        self.name = name
        self.shape = tuple(value.shape)
        # |x| < limit keeps x * 2**radix_bits and the sum of two such numbers inside int64.
        self.limit = 2.0 ** (62 - self.radix_bits)
        self.intrep = self._to_int(value)
        self.buffer = InfoBuffer(self.intrep.numel())

    def _to_int(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().to(torch.float64).reshape(self.shape)
        if not bool(torch.isfinite(value).all()):
            raise FixedPointOverflowError(f"{self.name}: a non-finite value cannot be held in fixed point")
        big = float(value.abs().max()) if value.numel() else 0.0
        if big >= self.limit:
            raise FixedPointOverflowError(
                f"{self.name}: |value| reached {big:.4g}, beyond the fixed-point range {self.limit:g} "
                f"(radix 2**{self.radix_bits}); lower the learning rate or initial scale, or use fewer radix bits")
        return torch.round(value * 2.0**self.radix_bits).to(torch.int64)

    @property
    def val(self) -> torch.Tensor:
        """The value as float64 (exactly ``intrep * 2**-radix_bits``)."""
        return self.intrep.to(torch.float64) * 2.0**-self.radix_bits

    def _check(self, result: torch.Tensor) -> torch.Tensor:
        big = float(result.abs().max()) if result.numel() else 0
        if big >= 2**62:
            raise FixedPointOverflowError(
                f"{self.name}: |value| reached {big * 2.0**-self.radix_bits:.4g}, beyond the fixed-point range "
                f"{self.limit:g} (radix 2**{self.radix_bits}); lower the learning rate or initial scale")
        return result

    def add(self, delta: torch.Tensor) -> ExactTensor:
        self.intrep = self._check(self.intrep + self._to_int(delta))
        return self

    def sub(self, delta: torch.Tensor) -> ExactTensor:
        self.intrep = self._check(self.intrep - self._to_int(delta))
        return self

    def _rational_mul(self, n, d) -> None:
        """Multiply by ``n / d`` exactly (``n``, ``d``: ints, or int64 tensors broadcast over elements)."""
        flat = self.intrep.reshape(-1)
        n_t = torch.as_tensor(n, dtype=torch.int64).reshape(-1) if not isinstance(n, int) else n
        d_t = torch.as_tensor(d, dtype=torch.int64).reshape(-1) if not isinstance(d, int) else d
        remainder = torch.remainder(flat, d_t)
        self.buffer.push(remainder.numpy(), d if isinstance(d, int) else d_t.numpy().astype(object))
        quotient = torch.div(flat - remainder, d_t, rounding_mode="floor")
        big = float(quotient.abs().max()) if quotient.numel() else 0.0
        n_max = n if isinstance(n, int) else int(n_t.max())
        if big * n_max >= 2.0**62:
            raise FixedPointOverflowError(f"{self.name}: multiplying by a rational overflowed int64; "
                                          "use fewer denominator bits")
        out = quotient * n_t
        carried = self.buffer.pop(n if isinstance(n, int) else n_t.numpy().astype(object))
        self.intrep = self._check(out + torch.from_numpy(carried)).reshape(self.shape)

    def mul(self, n, d) -> ExactTensor:
        """Multiply by the rational ``n / d`` (from :func:`rational`), saving the discarded bits."""
        self._rational_mul(n, d)
        return self

    def div(self, n, d) -> ExactTensor:
        """Undo :meth:`mul` with the same ``n, d``."""
        self._rational_mul(d, n)
        return self
