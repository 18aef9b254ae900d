"""Philox4x32-10 standard normal noise in tensor operations, for SGLD's ``noise="philox"``.

Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel Random Numbers: As Easy as 1, 2, 3",
SC 2011) is a counter-based generator: four 32-bit output words are a pure function of a 128-bit
counter and a 64-bit key, so noise for any tensor, step and coordinate can be computed directly,
in parallel, and inside one fused loop together with the update that consumes it. It passes the
TestU01 BigCrush battery and is the generator of cuRAND, JAX and TensorFlow. The implementation
is checked against the Random123 known-answer vectors (``tests/optim/test_sgld.py``).

Words are held in int64 tensors (values in [0, 2^32)): a 32 x 32-bit product then fits in 64
bits (its wrap-around modulo 2^64 keeps the low 64 bits exact), and its high and low halves are
read with a shift and a mask. Each counter yields four words, turned into four standard normals
by the Box-Muller transform on 24-bit uniforms, as ``torch.Tensor.normal_`` does on the CPU.
"""

from __future__ import annotations

import math

import torch

_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)  # key increments between rounds
_MASK = 0xFFFFFFFF
ROUNDS = 10


def philox4x32(c0, c1, c2, c3, k0, k1, rounds: int = ROUNDS):
    """The four output words of Philox4x32-``rounds`` for counter ``(c0, c1, c2, c3)`` and key
    ``(k0, k1)``: int64 tensors (or Python ints) holding unsigned 32-bit values; broadcasts."""
    for _ in range(rounds):
        product0 = c0 * _MULTIPLIERS[0]
        product1 = c2 * _MULTIPLIERS[1]
        c0, c1, c2, c3 = (((product1 >> 32) & _MASK) ^ c1 ^ k0, product1 & _MASK,
                          ((product0 >> 32) & _MASK) ^ c3 ^ k1, product0 & _MASK)
        k0, k1 = (k0 + _WEYL[0]) & _MASK, (k1 + _WEYL[1]) & _MASK
    return c0, c1, c2, c3


def _uniform(word: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A uniform number in (0, 1) from the top 24 bits of a word (never 0: ``log`` stays finite)."""
    return ((word >> 8).to(dtype) + 0.5) * (1.0 / 16777216.0)


def block_counter(numel: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The first counter word of each block of four numbers: ``0, 1, ..., ceil(numel / 4) - 1``
    (int32: one byte of memory per number; widened where it is used)."""
    blocks = (numel + 3) // 4
    if blocks > 2 ** 31:
        raise ValueError(f"a tensor of {numel} elements is too large for one Philox stream")
    return torch.arange(blocks, dtype=torch.int32, device=device)


def philox_normal(numel: int, stream: torch.Tensor, step: torch.Tensor, key: torch.Tensor,
                  dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                  counter: torch.Tensor | None = None) -> torch.Tensor:
    """``numel`` standard normal numbers, a pure function of ``(stream, step, key)``.

    Counter ``i`` (for ``i < ceil(numel / 4)``) is ``(i, stream, step mod 2^32, step >> 32)``:
    coordinates, tensors (streams) and steps never share a counter. ``stream`` and ``step`` are
    0-dim int64 tensors and ``key`` an int64 tensor of two 32-bit words, so that a compiled caller
    does not specialize on their values. ``counter`` (:func:`block_counter`, at least that long)
    may be passed in: compiled for CUDA, a counter made inside the function becomes index
    arithmetic that Triton evaluates in 32 bits, which the 32-bit multipliers overflow.
    """
    blocks = (numel + 3) // 4
    index = (block_counter(numel, device) if counter is None else counter[:blocks]).to(torch.int64)
    words = philox4x32(index, stream & _MASK, step & _MASK, (step >> 32) & _MASK, key[0], key[1])
    u = [_uniform(w, dtype) for w in words]
    radius0 = torch.sqrt(-2.0 * torch.log(u[0]))
    radius1 = torch.sqrt(-2.0 * torch.log(u[2]))
    angle0, angle1 = (2.0 * math.pi) * u[1], (2.0 * math.pi) * u[3]
    normals = torch.stack([radius0 * torch.cos(angle0), radius0 * torch.sin(angle0),
                           radius1 * torch.cos(angle1), radius1 * torch.sin(angle1)], dim=1)
    return normals.reshape(-1)[:numel]


def langevin_update_(param: torch.Tensor, grad: torch.Tensor, drift: torch.Tensor, scale: torch.Tensor,
                     stream: torch.Tensor, step: torch.Tensor, key: torch.Tensor, counter: torch.Tensor) -> None:
    """In place: ``param += drift * grad + scale * xi`` with ``xi`` from :func:`philox_normal`.

    ``drift`` and ``scale`` are 0-dim tensors of :func:`working_dtype` (no recompilation when the
    step size changes); ``counter`` is a :func:`block_counter` at least as long as ``param`` needs.
    Compiled, this is one pass over ``param`` and ``grad``, the noise generated in registers.
    """
    work = working_dtype(param.dtype)
    noise = philox_normal(param.numel(), stream, step, key, dtype=work, device=param.device, counter=counter)
    param.add_((grad.to(work) * drift + noise.view_as(param) * scale).to(param.dtype))


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the noise and the update are computed in: the parameter's, or float32 for
    half-precision parameters (24-bit uniforms and Box-Muller need float32's precision)."""
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32
