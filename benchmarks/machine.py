"""What machine a benchmark ran on: the CPU model and the flags that decide which runtime and kernels are fastest
(avx2, fma, AVX-512, AMX, VNNI). One reader of ``/proc/cpuinfo`` for every benchmark script."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["SIMD_PREFIXES", "cpu_flags", "cpu_model"]

#: the flags worth recording with a timing
SIMD_PREFIXES = ("avx2", "fma", "avx512", "amx", "avx_vnni")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_model() -> str:
    """The CPU's model name (``platform.processor()`` where ``/proc/cpuinfo`` is not readable)."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags(simd_only: bool = True) -> list[str]:
    """The CPU's flags, sorted: only the SIMD ones of :data:`SIMD_PREFIXES` unless ``simd_only`` is false."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            flags = line.split(":", 1)[1].split()
            return sorted(f for f in flags if not simd_only or f.startswith(SIMD_PREFIXES))
    return []
