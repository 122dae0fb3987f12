"""The detector a service runs, its version, and the switch to a new one without dropping requests.

A request takes the current :class:`Loaded` once, when it starts, and uses it to the end; a reload builds the
new detector in a worker thread and then replaces the reference in one assignment. So requests in flight
finish on the detector they began with, new ones get the new detector, and no request ever waits for a load.
The version of a detector is the sha256 of its ``manifest.json``, read from the artifact's ``MANIFEST.sha256``
(that file changes whenever any file of the artifact does).

A version that fails to load is tried again with a growing delay (the watch interval, doubled after each
failure, at most :data:`MAX_BACKOFF_S`), :data:`RETRIES` times, then left alone until ``MANIFEST.sha256`` names
another version: a directory copied file by file (``cp -r``, not ``det.save()``) can be caught half-copied,
and is loaded once the copy is complete.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novelty.detector import NoveltyDetector
from novelty.errors import ArtifactError, NoveltyError

log = logging.getLogger("novelty.serve")

__all__ = ["MAX_BACKOFF_S", "RETRIES", "DetectorHolder", "Loaded", "read_version"]

#: how often the watcher tries a version that failed to load again, and the longest wait between tries
RETRIES, MAX_BACKOFF_S = 8, 300.0


def read_version(directory: str | Path) -> str | None:
    """The detector version named by ``DIR/MANIFEST.sha256`` (``None`` while the file is missing)."""
    try:
        words = (Path(directory) / "MANIFEST.sha256").read_text(errors="replace").split()
    except OSError:
        return None
    return words[0] if words and len(words[0]) == 64 else None


@dataclass(frozen=True)
class Loaded:
    """A loaded detector and its version (the sha256 of its manifest)."""

    detector: NoveltyDetector
    version: str


def _load(directory: Path, loader: Callable[[Path], NoveltyDetector], attempts: int = 3) -> Loaded:
    """Load the artifact and the version it was loaded at. If the directory is replaced while loading (the
    version before and after differ, or a checksum failed mid-swap), load again."""
    last: Exception | None = None
    for _ in range(attempts):
        before = read_version(directory)
        try:
            det = loader(directory)
        except ArtifactError as e:
            last = e
            if read_version(directory) != before:
                continue  # replaced under our feet: the new one is complete now
            raise
        if before is not None and read_version(directory) == before:
            return Loaded(det, before)
    raise ArtifactError(f"{directory} kept changing while it was loaded ({last or 'version changed'})")


class DetectorHolder:
    """Holds the current detector of a service; loads and reloads it off the event loop."""

    def __init__(
        self,
        directory: str | Path,
        *,
        loader: Callable[[Path], NoveltyDetector] | None = None,
        warmup: Callable[[Loaded], None] | None = None,
    ):
        self.directory = Path(directory)
        self._loader = loader or (lambda d: NoveltyDetector.load(d))
        self._warmup = warmup
        self._current: Loaded | None = None
        self._lock = asyncio.Lock()
        self._failed_version: str | None = None
        self._failures = 0  # failed loads of _failed_version in a row
        self._retry_at = 0.0  # time.monotonic() after which the watcher tries _failed_version again
        self._backoff_base_s: float | None = None  # the watch interval, once watch() runs
        self.last_error: str | None = None
        self.reloads = 0
        self.outcomes: dict[str, int] = {"switched": 0, "unchanged": 0, "failed": 0}  # of reload()
        self._thread_lock = threading.Lock()

    @property
    def current(self) -> Loaded | None:
        return self._current

    def load_blocking(self) -> Loaded:
        """Load the detector in the calling thread and make it current (used at start-up and in tests)."""
        with self._thread_lock:
            loaded = _load(self.directory, self._loader)
            if self._warmup is not None:
                self._warmup(loaded)
            self._current = loaded
            self.last_error = None
            return loaded

    def where(self) -> str:
        """The directory served, and what it points to when it is a link (a registry alias such as
        ``models/champion → versions/0003/detector``)."""
        try:
            target = self.directory.resolve()
        except OSError:
            return str(self.directory)
        if target == self.directory.absolute():
            return str(self.directory)
        try:
            shown = target.relative_to(self.directory.absolute().parent)
        except ValueError:
            shown = target
        return f"{self.directory} → {shown}"

    async def reload(
        self, *, only_if_changed: bool = False, trigger: str = "a direct call"
    ) -> tuple[Loaded, bool]:
        """Load the directory again in a worker thread and switch to it. ``(current, switched)``.

        With ``only_if_changed`` nothing is loaded while the version on disk is the current one. A failed
        load leaves the current detector serving and raises (:class:`~novelty.errors.NoveltyError`).
        ``trigger`` says in the log what asked for the reload (``POST /v1/admin/reload``, a changed
        ``MANIFEST.sha256``). Each reload is logged with the detector, the trigger and the time it took: at
        INFO when it loaded, at WARNING when it failed and the previous detector goes on serving, at ERROR when
        nothing is serving or the watcher gives this version up (its retries spent).
        """
        async with self._lock:
            cur = self._current
            on_disk = read_version(self.directory)
            if only_if_changed and cur is not None and on_disk == cur.version:
                return cur, False
            started = time.monotonic()
            try:
                loaded = await asyncio.to_thread(self.load_blocking)
            except (NoveltyError, OSError) as e:
                took = time.monotonic() - started
                self.outcomes["failed"] += 1
                self._failures = self._failures + 1 if on_disk == self._failed_version else 1
                self._failed_version = on_disk
                delay = self.backoff_s(self._failures)
                self._retry_at = time.monotonic() + delay
                self.last_error = f"{type(e).__name__}: {e}"
                if self._backoff_base_s is None:
                    again = "not watching the directory"
                elif self._failures <= RETRIES:
                    again = f"trying again in {delay:g} s (retry {self._failures} of {RETRIES})"
                else:
                    again = "not trying this version again until MANIFEST.sha256 changes"
                given_up = self._backoff_base_s is not None and self._failures > RETRIES
                log.log(
                    logging.ERROR if cur is None or given_up else logging.WARNING,
                    "reloading the detector %s from %s (trigger: %s) failed after %.2f s; still serving %s; %s: %s",
                    on_disk[:12] if on_disk else "(no MANIFEST.sha256)",
                    self.where(),
                    trigger,
                    took,
                    cur.version[:12] if cur else "nothing",
                    again,
                    e,
                )
                raise
            took = time.monotonic() - started
            self._failed_version, self._failures = None, 0
            switched = cur is None or loaded.version != cur.version
            self.outcomes["switched" if switched else "unchanged"] += 1
            if switched:
                self.reloads += 1
                log.info(
                    "reloaded %s (trigger: %s) in %.2f s: detector %s now serving (was %s)",
                    self.where(),
                    trigger,
                    took,
                    loaded.version[:12],
                    cur.version[:12] if cur else "none",
                )
            else:
                log.info(
                    "reloaded %s (trigger: %s) in %.2f s: unchanged, detector %s still serving",
                    self.where(),
                    trigger,
                    took,
                    loaded.version[:12],
                )
            return loaded, switched

    def backoff_s(self, failures: int) -> float:
        """The wait before the next try after ``failures`` failed loads of one version in a row."""
        base = self._backoff_base_s or 1.0
        return float(min(base * 2 ** min(failures - 1, 30), MAX_BACKOFF_S))

    def _due(self, on_disk: str | None) -> bool:
        """Whether the watcher should load the version ``on_disk`` now."""
        cur = self._current
        if on_disk is None or (cur is not None and on_disk == cur.version):
            return False
        if on_disk != self._failed_version:
            return True  # a new version
        return self._failures <= RETRIES and time.monotonic() >= self._retry_at

    async def watch(self, interval_s: float) -> None:
        """Poll ``MANIFEST.sha256`` every ``interval_s`` seconds and reload when it names a new version.
        A version that failed to load is tried again after ``interval_s``, then twice as long each time
        (at most :data:`MAX_BACKOFF_S`), :data:`RETRIES` times; then not until the file changes again."""
        self._backoff_base_s = interval_s
        while True:
            await asyncio.sleep(interval_s)
            on_disk = await asyncio.to_thread(read_version, self.directory)
            if not self._due(on_disk):
                continue
            try:
                await self.reload(only_if_changed=True, trigger="MANIFEST.sha256 changed")
            except (NoveltyError, OSError):
                pass  # logged by reload; the current detector keeps serving
            except Exception:  # never let the watcher die silently
                log.exception("unexpected error while reloading the detector")

    def describe(self) -> dict[str, Any]:
        cur = self._current
        return {
            "directory": str(self.directory),
            "version": cur.version if cur else None,
            "reloads": self.reloads,
            "last_error": self.last_error,
        }
