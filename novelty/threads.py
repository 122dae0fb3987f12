"""How many compute threads the backbone uses, batch by batch: measured, not assumed.

A backbone's engine (PyTorch's OpenMP pool, OpenVINO's) splits each forward pass over a fixed number of threads.
That is the fastest choice on an idle machine and the slowest when another CPU-bound process takes a core: every
step of the pass then waits for the thread that has no core (on 2 cores, PyTorch with 2 threads ran at 0.72 times
its 1-thread speed beside one busy process; measured in ``benchmarks/RESULTS.md``, "Runtimes").

:class:`AdaptiveThreads` (``Embedder(threads="auto")``) starts with every thread and keeps the count that embeds
fastest, from the model's own time per image:

- while no other process keeps a core busy (:class:`novelty.machine.OtherLoad`, at least :data:`CONTENDED`
  cores over the last batches) every thread is used and nothing is probed: an idle machine pays nothing;
- once one does, the other counts (all, half, one) are probed one batch at a time, at once and then at growing
  intervals (:data:`PROBE_FIRST` batches, doubling up to :data:`PROBE_MOST` while the current count keeps
  winning); when the other process is gone, all threads are probed again at once;
- each count's first batch is a warm-up and is not measured (OpenVINO compiles, OpenMP starts its pool);
- the decision is the best median of each count's last :data:`WINDOW` batches;
- where the machine's load cannot be read (no ``/proc/stat``), counts are probed on the schedule alone, and a
  count whose speed falls below :data:`SLOWDOWN` times its best is re-probed at once.

The choice never changes what is computed, only how fast: a batch gives the same embeddings with any count (to
float rounding of the engine's reductions).
"""

from __future__ import annotations

import math
import statistics
from collections import deque

from novelty.errors import InvalidInputError
from novelty.machine import OtherLoad
from novelty.params import check_int

__all__ = [
    "CONTENDED",
    "PROBE_FIRST",
    "PROBE_MOST",
    "SLOWDOWN",
    "WINDOW",
    "AdaptiveThreads",
    "check_threads",
    "thread_choices",
]

#: batches measured per count for its median
WINDOW = 3
#: batches before the first probe of another count, and the longest interval between probes
PROBE_FIRST = 2
PROBE_MOST = 64
#: a current count measured below this share of its best median is re-probed at once (load unknown)
SLOWDOWN = 0.75
#: other processes keeping at least this many cores busy (median of the last batches) make probing worth it
CONTENDED = 0.5


def check_threads(value: object) -> int | str | None:
    """An embedder's ``threads``: ``None``, a count ≥ 1, or ``"auto"``; else InvalidInputError."""
    if value is None or value == "auto":
        return value
    if isinstance(value, str):
        raise InvalidInputError(f"threads must be None, a count ≥ 1 or 'auto', got {value!r}")
    return check_int(value, "threads", minimum=1)


def thread_choices(most: int) -> tuple[int, ...]:
    """The counts tried with ``most`` threads available: all of them, half, one (largest first)."""
    most = check_int(most, "threads", minimum=1)
    return tuple(sorted({most, max(1, most // 2), 1}, reverse=True))


class AdaptiveThreads:
    """The thread count for each batch (:meth:`pick`), learnt from the measured time of each (:meth:`record`).
    See the module docstring."""

    def __init__(self, most: int):
        self.choices = thread_choices(most)
        self.current = self.choices[0]
        self._rates: dict[int, deque[float]] = {c: deque(maxlen=WINDOW) for c in self.choices}
        self._best: dict[int, float] = {}
        self._warm: set[int] = set()
        self._others: deque[float] = deque(maxlen=WINDOW)
        self._load_known = False
        self._contended = False
        self._interval = PROBE_FIRST
        self._since_probe = 0
        self._probe_at = 0  # which other count the next probe tries
        self._pending: int | None = None  # a count under probe until it has one measured batch
        self.probes = 0
        self.load = OtherLoad()  # what the caller measures each batch's ``others`` with

    @property
    def most(self) -> int:
        return self.choices[0]

    @property
    def contended(self) -> bool:
        """Whether other processes keep a core busy (always true where the load cannot be read)."""
        return self._contended or not self._load_known

    def pick(self) -> int:
        """The thread count for the next batch."""
        if len(self.choices) == 1:
            return self.current
        if self._pending is not None:
            return self._pending
        if self._since_probe >= self._interval:
            if not self.contended and self.current == self.most:
                self._since_probe = 0  # an idle machine: every thread, nothing to learn
                return self.current
            others = [c for c in self.choices if c != self.current]
            if not self.contended:  # the other process is gone: back to every thread, if it is faster again
                self._pending = self.most
            else:
                self._pending = others[self._probe_at % len(others)]
                self._probe_at += 1
            self.probes += 1
            return self._pending
        return self.current

    def record(self, threads: int, images: int, seconds: float, others: float | None = None) -> None:
        """The batch just run with ``threads`` threads embedded ``images`` in ``seconds`` (model time), while
        other processes kept ``others`` cores busy (``None``: unknown)."""
        if threads not in self._rates or images <= 0 or not seconds > 0 or not math.isfinite(seconds):
            return
        if others is not None and math.isfinite(others):
            self._load_known = True
            self._others.append(others)
            contended = statistics.median(self._others) >= CONTENDED
            if contended != self._contended:  # a process started or ended beside this one: look again now
                self._contended = contended
                self._interval = PROBE_FIRST
                self._since_probe = self._interval
        if threads not in self._warm:  # the first batch of a count: warm-up, not measured
            self._warm.add(threads)
            return
        rate = images / seconds
        self._rates[threads].append(rate)
        med = statistics.median(self._rates[threads])
        if len(self._rates[threads]) == WINDOW:
            self._best[threads] = max(self._best.get(threads, 0.0), med)
        if threads == self._pending:
            self._pending = None
            self._decide()
            return
        if threads != self.current:
            return
        self._since_probe += 1
        best = self._best.get(threads)
        if not self._load_known and best is not None and med < SLOWDOWN * best:
            self._best[threads] = med  # slower than it was: something else took the cores
            self._interval = PROBE_FIRST
            self._since_probe = self._interval

    def _decide(self) -> None:
        medians = {c: statistics.median(r) for c, r in self._rates.items() if r}
        winner = max(medians, key=lambda c: (medians[c], c))
        if winner == self.current:
            self._interval = min(PROBE_MOST, 2 * self._interval)
        else:
            self.current = winner
            self._interval = PROBE_FIRST
        self._since_probe = 0

    def state(self) -> dict[str, object]:
        """What has been learnt (for logs and benchmarks): the current count, each count's median img/s, the
        probes run and whether other processes were seen keeping a core busy."""
        return {
            "current": self.current,
            "img_s": {c: round(statistics.median(r), 1) for c, r in self._rates.items() if r},
            "probes": self.probes,
            "contended": self.contended,
        }
