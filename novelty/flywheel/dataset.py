"""The labelled dataset of the flywheel: a directory, versioned and append-only.

::

    DATASET/
      dataset.json    {"format": "novelty-dataset", "format_version": 1, "classes": [...],
                       "versions": [{"version", "created", "source", "note", "n_added", "entries_sha256"}, ...]}
      entries.jsonl   one labelled image per line, in version order (see :class:`Entry`)
      embeddings/     cache: <embedder key>.npz with arrays ``sha256`` and ``embeddings`` (float32)

Every version appends lines to ``entries.jsonl``; its record holds the sha256 of the whole file after it, so
reading verifies each version and any later change of a labelled entry is found. Writes are atomic
(:mod:`novelty.fileio`): ``entries.jsonl`` first, then ``dataset.json``; a reader that sees the old
``dataset.json`` reads only the lines it records, so a crash between the two writes leaves the previous
version intact. A lock file (``DATASET/.lock``) keeps two concurrent imports from interleaving.

Rules of :meth:`Dataset.add` (all checked before anything is written; a failure writes nothing and names every
offending item, up to :data:`MAX_LISTED`):

- every label is one of the classes fixed at :meth:`Dataset.create` (new classes: :meth:`Dataset.add_classes`);
- an id is unique: the same id twice in one call, or an id already in the dataset for another image or label;
- one image (its sha256) has one label, and an image labelled again with the label it already has is skipped
  and counted, never stored twice;
- two different labels for one image (in one call, or one in the call and the one it has in the dataset) are
  settled by who gave them: **a person's label always wins over an automatic one** (``auto=True``, labeller
  ``model:…``): it replaces the automatic label, and an automatic label never replaces a person's;
- two people's labels that differ are a *conflict*, settled by ``on_conflict`` (:data:`ON_CONFLICT`):
  ``"fail"`` (default) refuses the whole call, listing every conflict; ``"latest"`` keeps the label given last
  (by its ``time``; on a tie, the one added last); ``"skip"`` leaves the image as it was (its label in the
  dataset, or unlabelled) and takes none of the new labels for it.

A label that replaces another is a new line with ``supersedes`` naming the entry it replaces: the file stays
append-only (the replaced line is kept, for the record), and :meth:`Dataset.entries` gives the label that
stands, one per image. Every settled conflict is logged, returned (:attr:`AddResult.conflicts`) and recorded
in its version's record (``"conflicts"`` in ``dataset.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import reprlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from novelty.clock import parse_time, utc_now_iso
from novelty.errors import ImageError, InvalidInputError, NoveltyError
from novelty.fileio import (
    ExclusiveFileLock,
    atomic_open,
    atomic_write_bytes,
    read_regular_file,
    sha256_bytes,
    sha256_file,
)
from novelty.images import load_image

__all__ = [
    "DATASET_FILE",
    "ENTRIES_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_LISTED",
    "ON_CONFLICT",
    "AddResult",
    "Dataset",
    "DatasetError",
    "DatasetIntegrityError",
    "DatasetLockedError",
    "Entry",
    "LabelConflict",
    "add_to_cache",
    "cached_embeddings",
    "embed_entries",
    "embedder_key",
    "hash_image_file",
    "labelled_hashes",
    "now_iso",
    "read_image_file",
]

log = logging.getLogger(__name__)

FORMAT = "novelty-dataset"
FORMAT_VERSION = 1
DATASET_FILE = "dataset.json"
ENTRIES_FILE = "entries.jsonl"
EMBEDDINGS_DIR = "embeddings"
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


def hash_image_file(path: str | os.PathLike[str]) -> str:
    """The sha256 of a regular file, or :class:`InvalidInputError` naming it when it cannot be read."""
    try:
        return sha256_file(_regular(path))
    except (OSError, ValueError) as e:
        raise InvalidInputError(
            f"{os.fspath(path)}: cannot read the image file ({getattr(e, 'strerror', None) or e})"
        ) from None


def read_image_file(path: str | os.PathLike[str], sha256: str | None = None) -> str:
    """The sha256 of an image file, read once and decoded with :func:`novelty.images.load_image` (at reduced
    scale where the format allows): a file that is not an image the package can read — a text file, a
    truncated JPEG, a decompression bomb — raises :class:`InvalidInputError` naming the path and the reason,
    so that it never becomes a labelled entry. With ``sha256`` (what the file should hold), a file whose hash
    differs is not decoded: its hash is returned for the caller to report the change."""
    p = os.fspath(path)
    try:
        data = read_regular_file(_regular(p))
    except (OSError, ValueError) as e:
        raise InvalidInputError(
            f"{p}: cannot read the image file ({getattr(e, 'strerror', None) or e})"
        ) from None
    sha = sha256_bytes(data)
    if sha256 is not None and sha != sha256:
        return sha
    try:
        load_image(_NamedBytes(p, data), min_size=1)
    except ImageError as e:
        raise InvalidInputError(f"{p}: not an image ({e.reason})") from None
    return sha


class _NamedBytes(bytes):
    """Bytes already read, named by their file: still ``bytes`` to whoever wants bytes, and a
    :class:`~novelty.images.ByteSource` to the decoder, so that a decoding error names the path, not
    ``<1294 bytes>``."""

    key: str

    def __new__(cls, key: str, data: bytes) -> _NamedBytes:
        out = super().__new__(cls, data)
        out.key = key
        return out

    def read_bytes(self) -> bytes:
        return bytes(self)

    def __reduce__(self) -> tuple[type[_NamedBytes], tuple[str, bytes]]:  # to decoding worker processes
        return (type(self), (self.key, bytes(self)))


def _regular(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(2, "no such regular file", p)
    return p


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
        assert t is not None  # validated on construction by Dataset.add / on reading
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


class Dataset:
    """A labelled dataset directory (see the module docstring). Open with :meth:`open`, make with :meth:`create`."""

    def __init__(self, path: Path, meta: dict[str, Any], entries: list[Entry]) -> None:
        self.path = path
        self._meta = meta
        self._entries = entries

    # --- creating and reading ---------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], classes: Iterable[str]) -> Dataset:
        """A new, empty dataset (version 0) with these classes. ``path`` must not exist or be an empty directory."""
        root = Path(path)
        names = _check_classes(classes)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise DatasetError(
                f"{root} already exists and is not an empty directory; open it with Dataset.open or choose a new path"
            )
        root.mkdir(parents=True, exist_ok=True)
        with _Lock(root, LOCK_TIMEOUT_S):
            if (root / DATASET_FILE).exists():
                raise DatasetError(f"{root}: another process created a dataset here at the same time")
            atomic_write_bytes(root / ENTRIES_FILE, b"")
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "classes": names, "versions": []}
            atomic_write_bytes(root / DATASET_FILE, _dump_meta(meta))
        return cls(root, meta, [])

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Dataset:
        """Read a dataset, verifying its format and every version's ``entries_sha256``."""
        root = Path(path)
        meta, entries = _read(root)
        return cls(root, meta, entries)

    def reload(self) -> Dataset:
        """Read the directory again (another process may have added versions)."""
        self._meta, self._entries = _read(self.path)
        return self

    def __repr__(self) -> str:
        return (
            f"Dataset({str(self.path)!r}, classes={self.classes}, version={self.latest_version}, "
            f"n={len(self._entries)})"
        )

    def __len__(self) -> int:
        """The labelled images (one label per image: a replaced label does not count)."""
        return len(_standing(self._entries))

    # --- properties ---------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self._meta["classes"])

    @property
    def versions(self) -> list[dict[str, Any]]:
        """The version records (copies), oldest first."""
        return [dict(v) for v in self._meta["versions"]]

    @property
    def latest_version(self) -> int:
        """The newest version (0 for a dataset that has none yet)."""
        vs = self._meta["versions"]
        return int(vs[-1]["version"]) if vs else 0

    @property
    def embeddings_dir(self) -> Path:
        """Where :func:`embed_entries` keeps this dataset's embedding cache."""
        return self.path / EMBEDDINGS_DIR

    def classes_at(self, version: int | None = None) -> list[str]:
        """The classes that existed at ``version`` (classes added later by :meth:`add_classes` excluded)."""
        v = self._check_version(version)
        later = {c for r in self._meta["versions"] if r["version"] > v for c in r.get("classes_added", [])}
        return [c for c in self.classes if c not in later]

    def _check_version(self, version: int | None) -> int:
        if version is None:
            return self.latest_version
        if (
            not isinstance(version, int)
            or isinstance(version, bool)
            or not 0 <= version <= self.latest_version
        ):
            raise InvalidInputError(
                f"{self.path}: version {version!r} does not exist (versions 1..{self.latest_version})"
            )
        return version

    def entries(
        self,
        version: int | None = None,
        *,
        since: datetime | str | None = None,
        versions: Iterable[int] | None = None,
    ) -> list[Entry]:
        """The entries of ``version`` (every entry added at or before it; default the latest) that stand — one per
        image: a label replaced at or before ``version`` (see the module docstring) is left out — optionally only
        those labelled at or after ``since`` (a datetime or ISO-8601 string; naive = UTC) and only those added
        by the given ``versions`` ("new data only")."""
        v = self._check_version(version)
        t0 = parse_time(since, "since")
        wanted = None if versions is None else {self._check_version(x) for x in versions}
        out = _standing([e for e in self._entries if e.version <= v])
        if wanted is not None:
            out = [e for e in out if e.version in wanted]
        if t0 is not None:
            out = [e for e in out if e.labelled_at >= t0]
        return out

    def identity(self, version: int | None = None) -> str:
        """A sha256 naming exactly the data of ``version``: its classes and the bytes of its entries."""
        v = self._check_version(version)
        entries_sha = (
            self._meta["versions"][v - 1]["entries_sha256"] if v > 0 else sha256_bytes(b"")
        )  # versions are numbered 1, 2, … without gaps (checked on reading)
        text = json.dumps({"classes": self.classes_at(v), "entries_sha256": entries_sha}, sort_keys=True)
        return sha256_bytes(f"{FORMAT}\n{text}".encode())

    def history(self) -> list[Entry]:
        """Every line of the dataset in order, replaced labels included (:meth:`entries` gives those that stand)."""
        return list(self._entries)

    # --- writing ------------------------------------------------------------------------------------
    def add(self, entries: Iterable[Entry], *, source: str, note: str = "", on_conflict: str = "fail") -> int:
        """Validate all ``entries`` and add the new ones as one version; returns that version (the latest one,
        unchanged, when every entry was already there). Nothing is written when any entry is invalid.
        Different labels for one image: a person's wins over an automatic one; two people's are settled by
        ``on_conflict`` (:data:`ON_CONFLICT`; see the module docstring)."""
        return self.add_entries(entries, source=source, note=note, on_conflict=on_conflict).version

    def add_entries(
        self, entries: Iterable[Entry], *, source: str, note: str = "", on_conflict: str = "fail"
    ) -> AddResult:
        """:meth:`add`, returning what was added, what was skipped and the conflicts settled."""
        if isinstance(entries, (str, bytes, Entry)) or not isinstance(entries, Iterable):
            raise InvalidInputError(f"entries must be an iterable of Entry, got {type(entries).__name__}")
        on_conflict = _check_on_conflict(on_conflict)
        batch = list(entries)
        for name, value in (("source", source), ("note", note)):
            if not isinstance(value, str) or len(value) > 4096 or (name == "source" and not value.strip()):
                raise InvalidInputError(f"the version's {name} must be a string (non-empty for source)")
        with _Lock(self.path, LOCK_TIMEOUT_S):
            self.reload()  # another process may have added a version since this one was read
            added, skipped, conflicts = self._plan(batch, on_conflict)
            for c in conflicts:
                log.info("%s: %s", self.path, c.describe())
            if not added:
                return AddResult(self.latest_version, (), tuple(skipped), tuple(conflicts))
            version = self.latest_version + 1
            added = [replace(e, version=version) for e in added]
            record: dict[str, Any] = {"source": source, "note": note, "n_added": len(added)}
            if conflicts:
                record["conflicts"] = [c.to_json() for c in conflicts]
            self._write(added, record)
            return AddResult(version, tuple(added), tuple(skipped), tuple(conflicts))

    def add_classes(self, classes: Iterable[str], *, note: str = "") -> int:
        """Add new classes (a new version with no entries); returns that version."""
        new = _check_classes(classes, "new classes")
        with _Lock(self.path, LOCK_TIMEOUT_S):
            self.reload()
            existing = [c for c in new if c in self.classes]
            if existing:
                raise InvalidInputError(f"{self.path}: class(es) {existing} exist already")
            self._meta["classes"] = sorted(self.classes + new)
            self._write(
                [],
                {"source": "classes", "note": note or f"added classes {', '.join(new)}", "n_added": 0},
                classes_added=new,
            )
        return self.latest_version

    def problems(self, entries: Iterable[Entry], *, on_conflict: str = "fail") -> list[str]:
        """Everything :meth:`add` would refuse in ``entries`` (empty when they can be added); writes nothing."""
        return self._classify(list(entries), _check_on_conflict(on_conflict))[2]

    def _plan(
        self, batch: list[Entry], on_conflict: str
    ) -> tuple[list[Entry], list[Entry], list[LabelConflict]]:
        """Split ``batch`` into (new, skipped, conflicts settled) or raise naming every offending entry."""
        added, skipped, errors, conflicts = self._classify(batch, on_conflict)
        if errors:
            raise InvalidInputError(f"{len(errors)} problem(s), nothing added: {_listing(errors)}")
        return added, skipped, conflicts

    def _classify(
        self, batch: list[Entry], on_conflict: str = "fail"
    ) -> tuple[list[Entry], list[Entry], list[str], list[LabelConflict]]:
        classes = set(self.classes)
        by_id = {e.id: e for e in self._entries}  # an id names one image (its lines may share it)
        label_of = {e.sha256: e for e in _standing(self._entries)}
        seen_ids: dict[str, Entry] = {}
        pending: dict[str, Entry] = {}  # image → the label of the batch that stands so far
        left: set[str] = set()  # images "skip" leaves as they were
        errors: list[str] = []
        skipped: list[Entry] = []
        conflicts: list[LabelConflict] = []
        for i, e in enumerate(batch):
            problems = _entry_problems(e, classes)
            if problems:
                errors += [f"entry #{i} ({getattr(e, 'id', '?')!s:.80}): {p}" for p in problems]
                if not isinstance(e, Entry) or not all(
                    isinstance(getattr(e, k), str) for k in ("id", "sha256", "label", "path")
                ):
                    continue
            twin = seen_ids.get(e.id)
            if twin is not None and (
                twin.sha256 != e.sha256 or (on_conflict == "fail" and twin.auto == e.auto)
            ):
                errors.append(f"duplicate id {e.id} (entries {twin.path} and {e.path})")
                continue
            seen_ids.setdefault(e.id, e)
            old = by_id.get(e.id)
            if old is not None and old.sha256 != e.sha256:
                errors.append(
                    f"id already used: {e.id} names image {old.sha256[:12]}… ({old.path}) in version "
                    f"{old.version}, given for {e.sha256[:12]}… ({e.path})"
                )
                continue
            if problems:
                continue
            sha = e.sha256
            prior = label_of.get(sha)
            if sha in left:
                skipped.append(e)
                conflicts.append(LabelConflict(sha, e.path, "skip", prior, (e,)))
                continue
            in_batch = sha in pending
            cur = pending[sha] if in_batch else prior
            if cur is None:
                pending[sha] = e
                continue
            if cur.label == e.label:
                skipped.append(e)  # labelled so already
                continue
            rule, winner = _settle(cur, e, on_conflict)
            if winner == "fail":
                errors.append(
                    (
                        f"conflicting labels: image {sha[:12]}… given {cur.label!r} as {cur.id} ({cur.path}) "
                        f"and {e.label!r} as {e.id} ({e.path})"
                        if in_batch
                        else f"conflicting labels: image {sha[:12]}… ({e.path}) given {e.label!r} as {e.id} "
                        f"but labelled {cur.label!r} as {cur.id} in version {cur.version}"
                    )
                    + f" ({_who(cur)} against {_who(e)}: settle with on_conflict 'latest' or 'skip')"
                )
                continue
            if winner == "new":
                pending[sha] = e
                if in_batch:
                    skipped.append(cur)
                conflicts.append(LabelConflict(sha, e.path, rule, e, (cur,), replaced=not in_batch))
            elif winner == "old":
                skipped.append(e)
                conflicts.append(LabelConflict(sha, e.path, rule, cur, (e,)))
            else:  # "skip": no label of the batch for this image
                if in_batch:
                    del pending[sha]
                    skipped.append(cur)
                skipped.append(e)
                left.add(sha)
                lost = (cur, e) if in_batch else (e,)
                conflicts.append(LabelConflict(sha, e.path, rule, prior, lost))
        added = []
        for e in pending.values():
            prior = label_of.get(e.sha256)
            added.append(e if prior is None else replace(e, supersedes=prior.id))
        return added, skipped, errors, conflicts

    def _write(
        self, added: list[Entry], record: dict[str, Any], *, classes_added: list[str] | None = None
    ) -> None:
        """Append ``added`` as the next version (the caller holds the lock and validated everything)."""
        version = self.latest_version + 1
        old = _read_entries_prefix(self.path, self._meta)
        h = hashlib.sha256(old)
        lines = b"".join(_entry_line(e) for e in added)
        h.update(lines)
        with atomic_open(self.path / ENTRIES_FILE, "wb") as fh:
            fh.write(old)
            fh.write(lines)
        rec: dict[str, Any] = {
            "version": version,
            "created": now_iso(),
            **record,
            "entries_sha256": h.hexdigest(),
        }
        if classes_added:
            rec["classes_added"] = sorted(classes_added)
        meta = dict(self._meta)
        meta["versions"] = [*self._meta["versions"], rec]
        atomic_write_bytes(self.path / DATASET_FILE, _dump_meta(meta))
        self._meta = meta
        self._entries = self._entries + added


def _utf8_json(obj: Any, **kw: Any) -> bytes:
    """``obj`` as UTF-8 JSON; text with lone surrogates (a file name that is not UTF-8) as ``\\udcxx`` escapes,
    which JSON readers turn back into the same text."""
    try:
        return json.dumps(obj, ensure_ascii=False, **kw).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, ensure_ascii=True, **kw).encode("utf-8")


def _entry_line(e: Entry) -> bytes:
    return _utf8_json(e.to_json(), separators=(",", ":")) + b"\n"


def _dump_meta(meta: dict[str, Any]) -> bytes:
    return _utf8_json(meta, indent=1) + b"\n"


def _read_meta(root: Path) -> dict[str, Any]:
    p = root / DATASET_FILE
    if not p.is_file():
        raise DatasetError(
            f"{root} is not a labelled dataset: no {DATASET_FILE}"
            + (" (no such directory)" if not root.exists() else "")
            + "; create one with `novelty dataset create` or Dataset.create"
        )
    try:
        meta = json.loads(read_regular_file(p).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetIntegrityError(f"{p}: not readable as JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DatasetError(
            f"{p}: not a novelty dataset (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{p}: format_version {meta.get('format_version')!r}; this novelty reads version {FORMAT_VERSION} "
            "(upgrade novelty to read newer datasets)"
        )
    try:
        classes = _check_classes(meta.get("classes") or [], f"{p}: classes")
    except InvalidInputError as e:
        raise DatasetIntegrityError(str(e)) from None
    versions = meta.get("versions")
    if not isinstance(versions, list):
        raise DatasetIntegrityError(f"{p}: 'versions' must be a list")
    for i, v in enumerate(versions, start=1):
        ok = (
            isinstance(v, dict)
            and v.get("version") == i
            and isinstance(v.get("n_added"), int)
            and v["n_added"] >= 0
            and isinstance(v.get("entries_sha256"), str)
            and _SHA.match(v["entries_sha256"]) is not None
            and all(isinstance(v.get(k), str) for k in ("created", "source", "note"))
        )
        if not ok:
            raise DatasetIntegrityError(
                f"{p}: version record #{i} is malformed (expected version {i} with created, source, note, "
                f"n_added and entries_sha256): {json.dumps(v)[:200]}"
            )
    meta["classes"] = classes
    return meta


def _read_entries_prefix(root: Path, meta: dict[str, Any]) -> bytes:
    """The bytes of ``entries.jsonl`` that the recorded versions cover (trailing lines of an interrupted add
    are not part of the dataset), verified against each version's ``entries_sha256``."""
    p = root / ENTRIES_FILE
    try:
        data = read_regular_file(p)
    except FileNotFoundError:
        raise DatasetIntegrityError(f"{p} is missing; the dataset is incomplete") from None
    except OSError as e:
        raise DatasetIntegrityError(f"{p}: cannot read ({e})") from None
    h = hashlib.sha256()
    pos = 0
    for v in meta["versions"]:
        for _ in range(v["n_added"]):
            end = data.find(b"\n", pos)
            if end < 0:
                raise DatasetIntegrityError(
                    f"{p} ends before version {v['version']}'s {v['n_added']} entries; the file was truncated"
                )
            h.update(data[pos : end + 1])
            pos = end + 1
        if h.hexdigest() != v["entries_sha256"]:
            raise DatasetIntegrityError(
                f"{p}: the entries up to version {v['version']} do not match the sha256 recorded in "
                f"{DATASET_FILE} (an entry was changed, removed or reordered after it was written)"
            )
    if pos < len(data):
        log.warning(
            "%s: %d bytes after the last recorded version (an interrupted add); they are ignored",
            p,
            len(data) - pos,
        )
    return data[:pos]


def _read(root: Path) -> tuple[dict[str, Any], list[Entry]]:
    meta = _read_meta(root)
    data = _read_entries_prefix(root, meta)
    classes = set(meta["classes"])
    entries: list[Entry] = []
    lines = data.split(b"\n")[:-1]  # the prefix ends with a newline; never splitlines (U+2028 is no line end)
    versions = [v["version"] for v in meta["versions"] for _ in range(v["n_added"])]
    current: dict[str, Entry] = {}  # image → its standing line
    image_of: dict[str, str] = {}  # id → the image it names
    for i, (line, expected) in enumerate(zip(lines, versions, strict=True), start=1):
        where = f"{root / ENTRIES_FILE} line {i}"
        try:
            e = Entry.from_json(json.loads(line.decode("utf-8")), where)
        except (UnicodeDecodeError, json.JSONDecodeError, TypeError, InvalidInputError) as err:
            raise DatasetIntegrityError(f"{where}: not a valid entry ({err})") from None
        problems = _entry_problems(e, classes)
        if e.version != expected:
            problems.append(f"version {e.version!r} but the line belongs to version {expected}")
        standing = current.get(e.sha256)
        if standing is None and e.supersedes is not None:
            problems.append(f"supersedes {e.supersedes!r}, but the image has no earlier label")
        elif standing is not None and e.supersedes != standing.id:
            problems.append(
                f"a second label for image {e.sha256[:12]}… (labelled as {standing.id}) that does not say it "
                "replaces it"
            )
        named = image_of.setdefault(e.id, e.sha256)
        if named != e.sha256:
            problems.append(f"id {e.id} names another image ({named[:12]}…) on an earlier line")
        if problems:
            raise DatasetIntegrityError(f"{where}: " + "; ".join(problems))
        current[e.sha256] = e
        entries.append(e)
    return meta, entries


def labelled_hashes(datasets: Any) -> tuple[set[str], list[str]]:
    """The sha256 of every image the datasets label, and the datasets' paths. ``datasets``: ``None``, a
    :class:`Dataset`, a dataset directory, or a sequence of those; a directory that holds no dataset (yet) is
    skipped (a flywheel's new slice before its first turn); any other problem raises as :meth:`Dataset.open`
    does."""
    if datasets is None:
        return set(), []
    many = datasets if isinstance(datasets, (list, tuple)) else [datasets]
    shas: set[str] = set()
    paths: list[str] = []
    for d in many:
        if isinstance(d, Dataset):
            ds = d
        elif isinstance(d, (str, os.PathLike)):
            if not (Path(d) / DATASET_FILE).exists() and not any(Path(d).glob("*")):
                continue  # not created yet
            ds = Dataset.open(d)
        else:
            raise InvalidInputError(f"expected a Dataset or a dataset directory, got {type(d).__name__}")
        shas.update(e.sha256 for e in ds.entries())
        paths.append(str(ds.path))
    return shas, paths


# --- embeddings -----------------------------------------------------------------------------------------
class _EmbedderLike(Protocol):
    def embed(self, images: Any) -> np.ndarray: ...

    def config(self) -> dict[str, Any]: ...


def embedder_key(embedder: _EmbedderLike) -> str:
    """What names an embedder's embeddings: a sha256 (first 32 hex digits) of its backbone, weights fingerprint,
    preprocessing and precision — the same key means the same vectors for the same image bytes."""
    cfg = dict(embedder.config())
    if not cfg.get("fingerprint"):
        raise InvalidInputError("the embedder has no weights fingerprint; its embeddings cannot be cached")
    for volatile in ("batch_size", "weights"):  # how fast / where from, not what comes out
        cfg.pop(volatile, None)
    text = json.dumps(cfg, sort_keys=True, default=str)
    return sha256_bytes(text.encode())[:32]


def cached_embeddings(cache_dir: str | os.PathLike[str], embedder: _EmbedderLike) -> dict[str, np.ndarray]:
    """The embeddings ``embedder`` made before, by the sha256 of the image bytes, from ``cache_dir`` (empty
    when there is none yet; an unreadable cache is logged and counts as empty)."""
    return _load_cache(Path(cache_dir) / f"{embedder_key(embedder)}.npz")


def add_to_cache(
    cache_dir: str | os.PathLike[str], embedder: _EmbedderLike, fresh: Mapping[str, np.ndarray]
) -> None:
    """Add ``fresh`` (sha256 of the image bytes → ``embedder``'s embedding of them) to the cache in
    ``cache_dir``, under its lock (what another process added meanwhile is kept)."""
    if not fresh:
        return
    path = Path(cache_dir) / f"{embedder_key(embedder)}.npz"
    with _cache_lock(path.parent):
        merged = _load_cache(path)
        merged.update(fresh)
        _save_cache(path, merged, next(iter(fresh.values())).shape[0])


def _load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            shas, emb = z["sha256"], z["embeddings"]
        if shas.ndim != 1 or emb.ndim != 2 or len(shas) != len(emb) or emb.dtype != np.float32:
            raise ValueError("arrays of the wrong shape or dtype")
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s: unreadable embedding cache (%s); it is rebuilt", path, e)
        return {}
    return {str(s): emb[i] for i, s in enumerate(shas)}


def _save_cache(path: Path, cache: dict[str, np.ndarray], dim: int) -> None:
    shas = np.array(sorted(cache), dtype="<U64")
    emb = (
        np.stack([cache[s] for s in shas]).astype(np.float32) if len(shas) else np.zeros((0, dim), np.float32)
    )
    with atomic_open(path, "wb") as fh:
        np.savez(fh, sha256=shas, embeddings=emb)


@contextlib.contextmanager
def _cache_lock(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _Lock(cache_dir, LOCK_TIMEOUT_S):
        yield


def embed_entries(
    entries: Sequence[Entry],
    embedder: _EmbedderLike,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    chunk: int = 256,
) -> np.ndarray:
    """Embeddings (``float32``, shape ``(n, d)``) of ``entries`` in order.

    Each image comes from the cache (``cache_dir/<embedder key>.npz``, by sha256) or is read once, checked
    against the sha256 it was labelled with (:class:`DatasetIntegrityError` when the file is gone or changed) and
    embedded from those bytes (an undecodable one raises its :class:`~novelty.errors.ImageError`, naming the file);
    new embeddings are added to the cache. ``cache_dir=None``: no cache."""
    entries = list(entries)
    cache = {} if cache_dir is None else cached_embeddings(cache_dir, embedder)
    todo: dict[str, Entry] = {}
    for e in entries:
        if e.sha256 not in cache and e.sha256 not in todo:
            todo[e.sha256] = e
    fresh: dict[str, np.ndarray] = {}
    pending = list(todo.values())
    for start in range(0, len(pending), max(1, chunk)):
        part = pending[start : start + chunk]
        blobs = [_NamedBytes(e.path, _verified_bytes(e)) for e in part]  # a decoding error names the file
        emb = np.asarray(embedder.embed(blobs), dtype=np.float32)
        for e, row in zip(part, emb, strict=True):
            fresh[e.sha256] = row
    if cache_dir is not None:
        add_to_cache(cache_dir, embedder, fresh)
    found = {**cache, **fresh}
    if not entries:
        dim = next(iter(found.values())).shape[0] if found else 0
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([found[e.sha256] for e in entries]).astype(np.float32, copy=False)


def _verified_bytes(e: Entry) -> bytes:
    try:
        data = read_regular_file(e.path)
    except OSError as err:
        raise DatasetIntegrityError(
            f"entry {e.id}: cannot read its image {e.path} ({getattr(err, 'strerror', None) or err})"
        ) from None
    sha = sha256_bytes(data)
    if sha != e.sha256:
        raise DatasetIntegrityError(
            f"entry {e.id}: {e.path} changed since it was labelled (sha256 {sha[:12]}…, labelled "
            f"{e.sha256[:12]}…); restore the file or label the new one"
        )
    return data
