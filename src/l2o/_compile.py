"""Functions compiled with ``torch.compile`` on first use, with an eager path where that fails.

Used by the opt-in fused paths (``SGLD(noise="philox")``, ``LearnedOptimizer(fused=True)``):
the compiled function is built once for all shapes (``dynamic=True``); where compiling fails
(e.g. no C++ compiler) the caller's eager path takes over after one warning, with the same
numbers up to float rounding.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


class CompiledOnce:
    """``fn`` compiled on the first call; a call returns False where the caller must run its
    eager path instead (compiling failed, or the caller is itself being traced by
    ``torch.compile``, which then traces the eager path inline).

    A failure is remembered for calls of the same kind only (the dtype, device type and rank of
    each tensor argument), so that one shape the compiler cannot handle does not turn the fused
    path off for the others; the first failure warns, later ones do not.

    Args:
        fn: the function to compile (its return value is discarded: it writes its outputs).
        what: how the warning names the feature, e.g. ``"SGLD(noise='philox')"``.
    """

    def __init__(self, fn: Callable[..., object], what: str):
        self.fn, self.what = fn, what
        self._compiled: Callable[..., object] | None = None
        self._failed_kinds: set[tuple] = set()

    @property
    def failed(self) -> bool:
        """True once a call has fallen back to the eager path."""
        return bool(self._failed_kinds)

    def __call__(self, *args) -> bool:
        if torch.compiler.is_compiling():
            return False
        kind = tuple((a.dtype, a.device.type, a.dim()) for a in args if isinstance(a, torch.Tensor))
        if kind in self._failed_kinds:
            return False
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=True)
        try:
            self._compiled(*args)
        except Exception as error:  # e.g. no working compiler: the eager path gives the same numbers
            if not self._failed_kinds:
                warnings.warn(f"{self.what} could not compile its fused step ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200] if str(error) else ''}); running it eagerly, "
                              "which is slower", RuntimeWarning, stacklevel=3)
            self._failed_kinds.add(kind)
            return False
        return True
