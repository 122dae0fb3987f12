"""The lock of a results work directory: one writer per output, across processes and within one.

An :class:`~novelty.fileio.ExclusiveFileLock` of ``DIR/.lock``, tried once, keeps a second process out (a killed
process holds no lock). Within one process a newer lock of the same directory takes over from an older one (a
writer kept alive by a traceback or a notebook variable must not lock its output forever): the old one is marked
``superseded``.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

from novelty.batch.errors import ResultsError, ResultsLockedError
from novelty.fileio import ExclusiveFileLock

__all__ = ["LOCK_FILE", "WorkDirLock"]

LOCK_FILE = ".lock"
# the lock of this process that holds each work directory
_HOLDERS: dict[str, weakref.ref[WorkDirLock]] = {}


class WorkDirLock:
    """An exclusive lock of ``parts_dir`` (created if missing), held from construction to :meth:`release`
    (or until the object is dropped). ``superseded`` turns true when a newer lock of this process took over."""

    def __init__(self, parts_dir: Path, out_path: Path) -> None:
        self.superseded = False
        self._ident = os.path.realpath(parts_dir)
        holder = _HOLDERS.get(self._ident)
        old = holder() if holder is not None else None
        if old is not None and old.held:
            old.superseded = (
                True  # its owner's buffered rows are dropped, as by a crash; it refuses more work
            )
            old.release()
        lock = ExclusiveFileLock(
            parts_dir / LOCK_FILE,
            timeout=0,  # a second writer is refused at once, never queued
            what=f"the work directory {parts_dir}",
            error=ResultsError,
            busy_error=ResultsLockedError,
            busy_message=f"{out_path} is being written by another process; wait for it or use a different --out",
            make_parent=True,  # a finalize elsewhere may have renamed the directory away: it starts anew
        ).acquire()
        self._release: weakref.finalize | None = weakref.finalize(self, lock.release)  # dropped: freed too
        _HOLDERS[self._ident] = weakref.ref(self)

    @property
    def held(self) -> bool:
        return self._release is not None

    def release(self) -> None:
        if self._release is not None:
            self._release()  # releases the lock
            self._release = None
            holder = _HOLDERS.get(self._ident)
            if holder is not None and holder() is self:
                del _HOLDERS[self._ident]
