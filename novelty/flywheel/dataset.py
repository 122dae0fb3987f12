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

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from novelty.clock import parse_time
from novelty.errors import InvalidInputError
from novelty.fileio import atomic_open, atomic_write_bytes, read_regular_file, sha256_bytes
from novelty.flywheel.embedcache import add_to_cache, cached_embeddings, embed_entries, embedder_key
from novelty.flywheel.entries import (
    _SHA,
    LOCK_TIMEOUT_S,
    MAX_LISTED,
    ON_CONFLICT,
    AddResult,
    DatasetError,
    DatasetIntegrityError,
    DatasetLockedError,
    Entry,
    LabelConflict,
    _check_classes,
    _check_on_conflict,
    _entry_problems,
    _listing,
    _Lock,
    _settle,
    _standing,
    _who,
    now_iso,
)
from novelty.flywheel.entries import LOCK_FILE as LOCK_FILE  # re-exported: the lock's file name
from novelty.flywheel.imagefiles import hash_image_file, read_image_file

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
