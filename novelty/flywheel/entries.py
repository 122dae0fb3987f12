"""The records of a labelled dataset (:mod:`novelty.flywheel.dataset`): one labelled image (:class:`Entry`), two
labels for one image and how they were settled (:class:`LabelConflict`), what an add did (:class:`AddResult`),
and the rules that check them — an entry's fields, the class names, how conflicting labels are settled
(:data:`ON_CONFLICT`) — with the dataset's errors and its lock (shared with the embedding cache)."""

from __future__ import annotations

import os
import re
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from novelty.clock import parse_time, utc_now_iso
from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import ExclusiveFileLock
from novelty.flywheel.imagefiles import read_image_file

__all__ = [
    "LOCK_FILE",
    "LOCK_TIMEOUT_S",
    "MAX_LISTED",
    "ON_CONFLICT",
    "AddResult",
    "DatasetError",
    "DatasetIntegrityError",
    "DatasetLockedError",
    "Entry",
    "LabelConflict",
    "now_iso",
]

LOCK_FILE = ".lock"
#: how many offending items an error message lists before "and N more"
MAX_LISTED = 20
#: how :meth:`Dataset.add` settles two people's different labels for one image (see the module docstring)
ON_CONFLICT: tuple[str, ...] = ("fail", "latest", "skip")
#: how long :meth:`Dataset.add` waits for another writer's lock before giving up (seconds)
LOCK_TIMEOUT_S = 120.0
_SHA = re.compile(r"^[0-9a-f]{64}$")
_MAX_TEXT = 1024


class DatasetError(NoveltyError):
    """A dataset cannot be created, opened or written (the message names the directory and the reason)."""


class DatasetIntegrityError(DatasetError):
    """A dataset's files do not match what its versions recorded, or an image changed since it was labelled."""


class DatasetLockedError(DatasetError):
    """Another process kept the dataset's lock for longer than the timeout."""


def now_iso() -> str:
    """The current UTC time as ISO-8601 with a ``Z`` (seconds)."""
    return utc_now_iso()


_show = reprlib.Repr()
_show.maxstring = _show.maxother = 80
_show.maxlevel = 3


def _shown(value: Any) -> str:
    """``repr(value)``, bounded in length and depth (a deeply nested value must not raise RecursionError)."""
    try:
        return _show.repr(value)
    except ValueError:  # an int past Python's 4300 digits
        return f"<a {type(value).__name__} too large to show>"


def _listing(items: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; and {len(items) - limit} more" if len(items) > limit else "")


@dataclass(frozen=True)
class Entry:
    """One labelled image (one line of ``entries.jsonl``).

    ``time`` is ISO-8601 UTC (when it was labelled); ``version`` is the dataset version that added it (0 for an
    entry not yet added: :meth:`Dataset.add` sets it). ``labeller`` is ``"human:<name>"`` or
    ``"model:<version>"`` with ``auto=True`` for a label accepted from the model without a human.
    ``supersedes``: the id of the entry (same image) whose label this one replaces (set by :meth:`Dataset.add`;
    left out of the JSON line when ``None``).
    """

    id: str
    sha256: str
    path: str
    label: str
    source: str
    labeller: str
    time: str = field(default_factory=now_iso)
    version: int = 0
    group: str | None = None
    condition: str | None = None
    auto: bool = False
    supersedes: str | None = None

    @property
    def labelled_at(self) -> datetime:
        t = parse_time(self.time, f"entry {self.id}: time")
        if t is None:  # an empty time ("" reads as no time)
            raise InvalidInputError(f"entry {self.id}: time is empty, expected an ISO-8601 time")
        return t

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["supersedes"] is None:
            del d["supersedes"]  # lines without a replacement read as before
        return d

    @classmethod
    def from_json(cls, obj: Any, where: str = "entry") -> Entry:
        if not isinstance(obj, dict):
            raise InvalidInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        names = [f for f in cls.__dataclass_fields__]
        unknown = sorted(set(obj) - set(names))
        missing = [n for n in ("id", "sha256", "path", "label", "source", "labeller") if n not in obj]
        if unknown or missing:
            raise InvalidInputError(
                f"{where}: "
                + ", ".join(
                    x
                    for x in (
                        f"unknown field(s) {unknown}" if unknown else "",
                        f"missing field(s) {missing}" if missing else "",
                    )
                    if x
                )
            )
        return cls(**{k: obj[k] for k in names if k in obj})

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        label: str,
        *,
        source: str,
        labeller: str,
        id: str | None = None,
        sha256: str | None = None,
        group: str | None = None,
        condition: str | None = None,
        auto: bool = False,
        time: str | None = None,
    ) -> Entry:
        """An entry for an image file: reads it once, hashes it and decodes it (:func:`read_image_file`: a file
        that is not an image is refused, naming it); ``sha256``, when given, must be the file's. ``id`` defaults
        to the hash."""
        p = os.path.abspath(os.fspath(path))
        sha = read_image_file(p, sha256)
        if sha256 is not None and sha256 != sha:
            raise InvalidInputError(
                f"{p}: its sha256 is {sha[:12]}…, not the {str(sha256)[:12]}… given (the file changed)"
            )
        return cls(
            id=id or sha,
            sha256=sha,
            path=p,
            label=label,
            source=source,
            labeller=labeller,
            time=time or now_iso(),
            group=group,
            condition=condition,
            auto=auto,
        )


def _entry_problems(e: Any, classes: set[str]) -> list[str]:
    """What is wrong with one entry (empty when it is valid)."""
    if not isinstance(e, Entry):
        return [f"expected an Entry, got {type(e).__name__}"]
    out = []
    for name in ("id", "source", "labeller", "path", "label"):
        v = getattr(e, name)
        if not isinstance(v, str) or not v.strip():
            out.append(f"{name} must be a non-empty string, got {_shown(v)}")
        elif len(v) > _MAX_TEXT or any(ord(c) < 32 for c in v):
            out.append(f"{name} must be at most {_MAX_TEXT} printable characters")
    if not isinstance(e.sha256, str) or not _SHA.match(e.sha256):
        out.append(f"sha256 must be 64 lower-case hex digits, got {_shown(e.sha256)}")
    if isinstance(e.path, str) and e.path and not os.path.isabs(e.path):
        out.append(f"path must be absolute, got {_shown(e.path)}")
    if isinstance(e.label, str) and e.label and e.label not in classes:
        out.append(f"unknown class {_shown(e.label)} (classes: {', '.join(sorted(classes))})")
    for name in ("group", "condition"):
        v = getattr(e, name)
        if v is not None and (not isinstance(v, str) or len(v) > _MAX_TEXT):
            out.append(f"{name} must be null or a string, got {_shown(v)}")
    if not isinstance(e.auto, bool):
        out.append(f"auto must be true or false, got {_shown(e.auto)}")
    if e.supersedes is not None and (not isinstance(e.supersedes, str) or not e.supersedes.strip()):
        out.append(f"supersedes must be null or an entry id, got {_shown(e.supersedes)}")
    if not isinstance(e.version, int) or isinstance(e.version, bool) or e.version < 0:
        out.append(f"version must be an integer ≥ 0, got {_shown(e.version)}")
    if not isinstance(e.time, str):
        out.append(f"time must be an ISO-8601 string, got {type(e.time).__name__}")
    else:
        try:
            parse_time(e.time, "time")
        except InvalidInputError as err:
            out.append(str(err))
    return out


def _check_classes(classes: Iterable[str], what: str = "classes") -> list[str]:
    if isinstance(classes, str):
        raise InvalidInputError(f"{what} must be a list of names, got the string {classes!r}")
    out = list(classes)
    bad = [c for c in out if not isinstance(c, str) or not c.strip() or c != c.strip() or len(c) > 256]
    bad += [c for c in out if isinstance(c, str) and (any(ord(ch) < 32 for ch in c) or "," in c)]
    if bad:
        raise InvalidInputError(
            f"{what}: each name must be a non-empty string without commas, control characters or surrounding "
            f"spaces; got {_shown(bad[:MAX_LISTED])}"
        )
    dups = sorted({c for c in out if out.count(c) > 1})
    if dups:
        raise InvalidInputError(f"{what}: repeated name(s) {_shown(dups)}")
    if not out:
        raise InvalidInputError(f"{what}: give at least one class")
    return sorted(out)


def _who(e: Entry) -> str:
    return f"{e.label!r} by {e.labeller}" + (" (automatic)" if e.auto else "")


@dataclass(frozen=True)
class LabelConflict:
    """Two or more different labels for one image, and how they were settled.

    ``rule``: ``"human over auto"`` (a person's label against an automatic one: the person's stands),
    ``"latest"`` or ``"skip"`` (people disagreeing, settled by ``on_conflict``). ``kept``: the label that stands
    (``None`` when ``"skip"`` leaves an image unlabelled); ``dropped``: the labels that do not; ``replaced``:
    whether a label already in the dataset was replaced."""

    sha256: str
    path: str
    rule: str
    kept: Entry | None
    dropped: tuple[Entry, ...]
    replaced: bool = False

    def describe(self) -> str:
        kept = "left unlabelled" if self.kept is None else f"kept {_who(self.kept)}"
        lost = ", ".join(_who(e) for e in self.dropped)
        what = "replacing the dataset's" if self.replaced else "over"
        return f"image {self.sha256[:12]}… ({self.path}): {self.rule}: {kept}, {what} {lost}"

    def to_json(self) -> dict[str, Any]:
        def short(e: Entry) -> dict[str, Any]:
            return {"id": e.id, "label": e.label, "labeller": e.labeller, "auto": e.auto, "time": e.time}

        return {
            "sha256": self.sha256,
            "rule": self.rule,
            "kept": None if self.kept is None else short(self.kept),
            "dropped": [short(e) for e in self.dropped],
            "replaced": self.replaced,
        }


def _check_on_conflict(on_conflict: Any) -> str:
    if not isinstance(on_conflict, str) or on_conflict not in ON_CONFLICT:
        raise InvalidInputError(
            f"on_conflict must be one of {', '.join(ON_CONFLICT)} (how two people's different labels for one "
            f"image are settled), got {_shown(on_conflict)}"
        )
    return on_conflict


def _settle(cur: Entry, new: Entry, on_conflict: str) -> tuple[str, str]:
    """How two different labels for one image are settled: ``(rule, winner)``, winner ``"new"``, ``"old"``,
    ``"none"`` (skip) or ``"fail"``. A person's label wins over an automatic one whatever ``on_conflict``."""
    if cur.auto != new.auto:
        return "human over auto", "old" if new.auto else "new"
    if on_conflict == "latest":
        return "latest", "new" if new.labelled_at >= cur.labelled_at else "old"
    if on_conflict == "skip":
        return "skip", "none"
    return "fail", "fail"


def _standing(entries: Sequence[Entry]) -> list[Entry]:
    """The entries whose label stands, in file order: for each image the last of its lines (a later line of an
    image replaces its label: ``supersedes``)."""
    last = {e.sha256: i for i, e in enumerate(entries)}
    if len(last) == len(entries):
        return list(entries)
    return [e for i, e in enumerate(entries) if last[e.sha256] == i]


@dataclass(frozen=True)
class AddResult:
    """What :meth:`Dataset.add_entries` did: the version written (the latest one when nothing was new), the entries
    added, the ones skipped (the image already had that label, or its label lost a conflict) and the conflicts
    settled (:class:`LabelConflict`)."""

    version: int
    added: tuple[Entry, ...]
    skipped: tuple[Entry, ...]
    conflicts: tuple[LabelConflict, ...] = ()

    def counts(self) -> dict[str, int]:
        """Entries added per class."""
        out: dict[str, int] = {}
        for e in self.added:
            out[e.label] = out.get(e.label, 0) + 1
        return dict(sorted(out.items()))


class _Lock(ExclusiveFileLock):
    """An exclusive lock of ``DATASET/.lock`` (or of an embedding cache's), waited for up to ``timeout`` seconds."""

    def __init__(self, root: Path, timeout: float) -> None:
        super().__init__(
            root / LOCK_FILE,
            timeout=timeout,
            what=f"the dataset {root}",
            error=DatasetError,
            busy_error=DatasetLockedError,
            busy_message=(
                f"{root}: another process has been writing this dataset for over {timeout:g} s; "
                "wait for it to finish and try again"
            ),
        )
