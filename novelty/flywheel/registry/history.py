"""The history file of a local registry, ``history.jsonl``: one JSON object per event, appended with ``fsync``.

A crash while a line is written leaves a torn last line (no newline after it): reads skip it, and the next
append cuts it off first, so it never merges with the new line (the one policy of :func:`novelty.fileio.append_jsonl`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from novelty.clock import utc_now_iso
from novelty.fileio import JsonlLineError, append_jsonl, read_jsonl
from novelty.flywheel.registry.backend import Event
from novelty.flywheel.registry.errors import RegistryError

__all__ = ["append_event", "read_events"]

log = logging.getLogger("novelty.flywheel.registry.store")


def append_event(path: Path, event: str, data: dict[str, Any]) -> Event:
    """Append one event to the history file ``path`` (under the registry's lock) and fsync it. A torn last line
    left by a crash mid-write is cut off first (:func:`novelty.fileio.append_jsonl`)."""
    ev = Event(event=event, time=utc_now_iso(), data=data)
    try:
        append_jsonl(path, {"event": event, "time": ev.time, **data}, log=log)
    except OSError as e:
        raise RegistryError(f"cannot append to {path}: {e.strerror or e}") from e
    return ev


def read_events(path: Path) -> list[Event]:
    """Every event of the history file ``path``, oldest first (none when it is missing). A torn last line (a
    crash while it was written) is skipped; any other line that is no event object raises."""
    try:
        docs = read_jsonl(path, log=log)
    except JsonlLineError as e:
        raise RegistryError(
            f"{e.path}, line {e.line}: not a history event ({e.reason}); the file is damaged"
        ) from e
    except OSError as e:
        raise RegistryError(f"cannot read {path}: {e.strerror or e}") from e
    events = []
    for line, doc in docs:
        if not isinstance(doc.get("event"), str):
            raise RegistryError(
                f"{path}, line {line}: not a history event (not an event object); the file is damaged"
            )
        ev, t = doc.pop("event"), doc.pop("time", "")
        events.append(Event(event=ev, time=str(t), data=doc))
    return events
