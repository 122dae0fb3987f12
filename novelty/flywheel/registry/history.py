"""The history file of a local registry, ``history.jsonl``: one JSON object per event, appended with ``fsync``.

A crash while a line is written leaves a torn last line (no newline after it): reads skip it, and the next
append cuts it off first, so it never merges with the new line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from novelty.clock import utc_now_iso
from novelty.fileio import read_regular_file
from novelty.flywheel.registry.backend import Event
from novelty.flywheel.registry.errors import RegistryError

__all__ = ["append_event", "read_events"]

log = logging.getLogger("novelty.flywheel.registry.store")


def append_event(path: Path, event: str, data: dict[str, Any]) -> Event:
    """Append one event to the history file ``path`` (under the registry's lock) and fsync it. A torn last line
    left by a crash mid-write is cut off first."""
    ev = Event(event=event, time=utc_now_iso(), data=data)
    line = json.dumps({"event": event, "time": ev.time, **data}, sort_keys=False, allow_nan=False) + "\n"
    try:
        with open(path, "a+b") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    fh.seek(0)
                    content = fh.read()
                    keep = content.rfind(b"\n") + 1
                    log.warning("%s: cutting off a torn last line (%d bytes)", path, size - keep)
                    fh.truncate(keep)
            fh.seek(0, os.SEEK_END)
            fh.write(line.encode())
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as e:
        raise RegistryError(f"cannot append to {path}: {e.strerror or e}") from e
    return ev


def read_events(path: Path) -> list[Event]:
    """Every event of the history file ``path``, oldest first (none when it is missing). A torn last line (a
    crash while it was written) is skipped; any other line that is no event object raises."""
    try:
        data = read_regular_file(path)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise RegistryError(f"cannot read {path}: {e.strerror or e}") from e
    events = []
    lines = data.split(b"\n")
    if lines[-1]:  # no newline after it: torn by a crash (even if it parses), cut off by the next change
        log.warning("%s: skipping a torn last line", path)
    for i, raw in enumerate(lines[:-1]):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
                raise ValueError("not an event object")
        except (ValueError, UnicodeDecodeError) as e:
            raise RegistryError(
                f"{path}, line {i + 1}: not a history event ({e}); the file is damaged"
            ) from e
        ev, t = doc.pop("event"), doc.pop("time", "")
        events.append(Event(event=ev, time=str(t), data=doc))
    return events
