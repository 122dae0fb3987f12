"""What this machine offers the backbone: usable CPUs and the CPU's model and flags (avx2, fma, AVX-512, AMX,
VNNI). The one reader of ``/proc/cpuinfo`` for the library (``runtime="auto"``) and the benchmark scripts."""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from pathlib import Path

__all__ = [
    "BF16_FLAGS",
    "SIMD_PREFIXES",
    "OtherLoad",
    "cpu_flags",
    "cpu_model",
    "has_bf16",
    "machine_busy_seconds",
    "tune_glibc_malloc",
    "usable_cpus",
]

log = logging.getLogger(__name__)

#: the flags worth recording with a timing
SIMD_PREFIXES = ("avx2", "fma", "avx512", "amx", "avx_vnni")
#: any of these lets a CPU compute in bf16 natively (without them a bf16 engine emulates or falls back to fp32)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


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


def has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (one of :data:`BF16_FLAGS`)."""
    return bool(set(BF16_FLAGS) & set(cpu_flags()))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_busy_seconds() -> float | None:
    """CPU seconds spent by every process on the machine since boot (``/proc/stat``: user, nice, system, irq,
    softirq, steal); ``None`` where that is not readable."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        if fields[0] != b"cpu":
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
        return (user + nice + system + irq + softirq + steal) / float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class OtherLoad:
    """How many cores *other* processes kept busy over an interval: the machine's busy CPU time less this
    process's own, over the wall time. ``start()`` then ``stop()`` → cores (``None`` where ``/proc/stat`` is
    not readable). Resolution: the kernel's clock tick (10 ms), so measure intervals of ≥ 0.1 s."""

    def __init__(self) -> None:
        self._t0 = self._cpu0 = 0.0
        self._busy0: float | None = None

    def start(self) -> None:
        self._busy0 = machine_busy_seconds()
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self) -> float | None:
        busy = machine_busy_seconds()
        wall = time.perf_counter() - self._t0
        if busy is None or self._busy0 is None or wall <= 0:
            return None
        return max(0.0, (busy - self._busy0) - (time.process_time() - self._cpu0)) / wall


_MALLOC_TUNED = False


def tune_glibc_malloc() -> bool:
    """Keep freed memory in the heap instead of returning it to the OS after every forward pass.

    glibc serves PyTorch's large activation buffers with ``mmap`` and gives them back with ``munmap`` each
    time, so every batch pays for fresh page faults (on 2 cores, half the CPU went to the kernel; the
    speed-up is measured in benchmarks/RESULTS.md, "Core"). The cost is a process that keeps up to ~2 GB of
    freed memory for reuse. Applied once per process by
    :class:`Embedder` on CPU; set ``NOVELTY_MALLOC_TUNING=0`` to leave the allocator alone. Returns whether
    the settings were applied (only on Linux with glibc).
    """
    global _MALLOC_TUNED
    if (
        _MALLOC_TUNED
        or os.environ.get("NOVELTY_MALLOC_TUNING", "1") == "0"
        or not sys.platform.startswith("linux")
    ):
        return _MALLOC_TUNED
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (m_mmap_threshold, 1 << 30),
            (m_trim_threshold, (1 << 31) - 1),
            (m_top_pad, 1 << 30),
        )
    )
    _MALLOC_TUNED = ok
    log.debug("glibc malloc tuned for large tensors: %s", ok)
    return ok
