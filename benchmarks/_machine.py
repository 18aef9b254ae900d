"""What machine a benchmark ran on, recorded beside its timings: a compiled kernel's speed
changes with the CPU's vector extensions (AVX-512, AVX2, ...)."""

from __future__ import annotations

import os
import platform

VECTOR_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512_bf16", "amx_tile", "avx2", "fma", "avx", "sse4_2",
                "asimd", "sve")


def cpu_info() -> dict:
    """The CPU's model name and the vector extensions among its flags (Linux ``/proc/cpuinfo``)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
    except OSError:
        pass
    extensions = [flag for flag in VECTOR_FLAGS if flag in flags]
    widest = ("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "avx" if "avx" in flags
              else "neon" if "asimd" in flags else "sse/none")
    return {"model": model, "cores": os.cpu_count(), "vector_extensions": extensions, "widest": widest}
