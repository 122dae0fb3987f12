"""What machine a benchmark ran on: the CPU model and the flags that decide which runtime and kernels are fastest
(avx2, fma, AVX-512, AMX, VNNI). The reader is the library's own (:mod:`novelty.machine`), so a benchmark records
what ``runtime="auto"`` saw."""

from __future__ import annotations

from novelty.machine import SIMD_PREFIXES, cpu_flags, cpu_model

__all__ = ["SIMD_PREFIXES", "cpu_flags", "cpu_model"]
