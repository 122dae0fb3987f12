"""Turn batch inputs — folders, globs, zip/tar archives and path lists — into a flat list of images to score.

    items = expand_inputs(["photos/", "night/*.jpg", "upload.zip", "more.tar.gz", "todo.txt"])
    img = load_image(items[0])  # an InputItem is a ByteSource: its bytes are read where it is decoded

What becomes an item:

- a **directory** is walked by :func:`novelty.discovery.walk_folder` — the same rule as
  ``NoveltyDetector.fit(folder)``: recursive, in name order, hidden entries skipped, links to directories
  followed only with ``follow_symlinks=True``, image candidates told by suffix or signature; zip/tar archives
  found inside are expanded (one level: archives inside archives are not);
- a file found in a directory or a glob is an image **candidate** when its suffix says image or its first
  bytes are an image signature (:mod:`novelty.discovery`): ``notes.txt`` is skipped, ``text.jpg`` becomes an
  item (its decoding fails later with a specific error) and an extensionless JPEG is found;
- a **file named explicitly** (an input or a list-file entry) is always an item, whatever it contains, so that
  it gets its row; except ``.zip``/``.tar``/``.tar.gz``/``.tgz`` files (archives, expanded) and, for inputs,
  ``.txt``/``.lst``/``.list`` files: **path lists**, one path per line (blank lines and lines starting with
  ``#`` ignored; relative paths resolved against the list's folder; entries may be folders, archives or
  globs, but not further lists);
- an input containing ``*``, ``?`` or ``[`` that is not an existing path is a **glob**
  (``glob.glob(recursive=True)``, matches in name order);
- every member of an archive (:mod:`novelty.batch.listing`), also several stored under one name:
  ``archive.zip::name``, ``archive.zip::name#2``, …

Inputs that cannot be read at all still become items, with ``error`` (and ``error_code``) set and one row each
in the batch: a missing path, a glob matching nothing, a corrupt or truncated archive, an encrypted,
unsupported or too large archive member (``max_member_bytes``), a file or list this process may not read, a
folder that cannot be listed. Each key appears once (first occurrence wins).
"""

from __future__ import annotations

import glob
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Sequence

from novelty.batch.gzipreader import GZIP_CHECKPOINT_SPACING, GZIP_MAX_CHECKPOINTS, GzipReader
from novelty.batch.items import DEFAULT_MAX_MEMBER_BYTES, InputItem, member_key
from novelty.batch.listing import list_archive
from novelty.discovery import (
    ARCHIVE_SUFFIXES,
    IMAGE_SUFFIXES,
    Found,
    archive_kind,
    classify_file,
    is_image_name,
    looks_like_image,
    os_reason,
    walk_folder,
)
from novelty.errors import InvalidInputError

log = logging.getLogger(__name__)

__all__ = [
    "ARCHIVE_SUFFIXES",
    "DEFAULT_MAX_MEMBER_BYTES",
    "GZIP_CHECKPOINT_SPACING",
    "GZIP_MAX_CHECKPOINTS",
    "IMAGE_SUFFIXES",
    "LIST_SUFFIXES",
    "GzipReader",
    "InputItem",
    "expand_inputs",
    "is_image_name",
    "item_for_row",
    "looks_like_image",
    "summarize",
]

#: Suffixes of path-list files (lower case): only for inputs given directly to :func:`expand_inputs`.
LIST_SUFFIXES = (".txt", ".lst", ".list")
_NOT_FOUND = "no such file or directory"


def _has_magic(s: str) -> bool:
    return any(c in s for c in "*?[")


def _name_key(name: str) -> list[str]:
    """Sort key of a relative path or member name: component by component (``a/x`` before ``a.jpg``)."""
    return name.split("/")


class _Expander:
    def __init__(self, follow_symlinks: bool, max_member_bytes: int) -> None:
        self.follow_symlinks = follow_symlinks
        self.max_member_bytes = max_member_bytes
        self.items: list[InputItem] = []
        self.skipped: Counter[str] = Counter()

    def error(self, path: str, reason: str, code: str) -> None:
        self.items.append(InputItem(key=path, path=path, error=reason, error_code=code))

    def os_error(self, path: str, e: OSError) -> None:
        code, reason = os_reason(e)
        self.error(path, reason, code)

    def file(self, path: str, st: os.stat_result) -> None:
        self.items.append(InputItem(key=path, path=path, size=st.st_size, mtime_ns=st.st_mtime_ns))

    # inputs and list entries
    def add(self, raw: str, *, pattern: str | None = None, allow_list: bool = True) -> None:
        """One input (or list entry) ``raw``; ``pattern`` is its glob form when it differs (list entries)."""
        if not raw:
            self.error("", "empty path", "not_found")
            return
        path = os.path.abspath(raw)
        try:
            st = os.stat(raw)
        except ValueError:  # an embedded NUL byte
            self.error(path, "invalid path", "not_found")
            return
        except OSError as e:
            if _has_magic(raw):
                self.add_glob(pattern or raw)
            elif isinstance(e, FileNotFoundError) and os.path.lexists(raw):
                self.error(path, f"{_NOT_FOUND} (broken symbolic link)", "not_found")
            else:
                self.os_error(path, e)
            return
        if stat.S_ISDIR(st.st_mode):
            self.walk(path)
        elif not stat.S_ISREG(st.st_mode):
            self.error(path, "not a regular file or directory", "not_an_image")
        elif archive_kind(path):
            self.add_archive(path, st)
        elif allow_list and path.lower().endswith(LIST_SUFFIXES):
            self.add_list(path)
        elif not os.access(path, os.R_OK):
            self.error(path, "permission denied", "permission_denied")
        else:
            self.file(path, st)

    def add_glob(self, pattern: str) -> None:
        matches = sorted(glob.glob(pattern, recursive=True), key=lambda p: _name_key(os.path.abspath(p)))
        if not matches:
            self.error(os.path.abspath(pattern), "no file matches", "not_found")
            return
        before = len(self.items)
        for m in matches:
            path = os.path.abspath(m)
            try:
                st = os.stat(m)
            except OSError:  # vanished, or a broken link
                self.skipped["unreadable"] += 1
                continue
            if stat.S_ISDIR(st.st_mode):
                self.walk(path)
            elif stat.S_ISREG(st.st_mode):
                found = classify_file(path, st, self.skipped)
                if found is not None:
                    self.add_found(found, st)
            else:
                self.skipped["not a regular file"] += 1
        if len(self.items) == before:
            log.warning("%s: %d path(s) match but no image among them", pattern, len(matches))

    def add_list(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8-sig", errors="surrogateescape") as fh:
                lines = fh.read().splitlines()
        except OSError as e:
            code, reason = os_reason(e)
            self.error(path, f"cannot read the list file: {reason}", code)
            return
        folder = os.path.dirname(path)
        n = 0
        for line in lines:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            n += 1
            if os.path.isabs(entry):
                self.add(entry, allow_list=False)
            else:
                self.add(
                    os.path.join(folder, entry),
                    pattern=os.path.join(glob.escape(folder), entry),
                    allow_list=False,
                )
        if n == 0:
            log.warning("%s: the list file names no path", path)

    def walk(self, top: str) -> None:
        before = len(self.items)
        for found in walk_folder(top, follow_symlinks=self.follow_symlinks, skipped=self.skipped):
            self.add_found(found)
        if len(self.items) == before:
            log.warning("%s: no image found in the directory", top)

    def add_found(self, found: Found, st: os.stat_result | None = None) -> None:
        if found.kind == "error":
            self.error(found.path, found.reason or "unreadable", found.code or "unreadable")
        elif found.kind == "archive":
            try:
                self.add_archive(found.path, st if st is not None else os.stat(found.path))
            except OSError as e:
                self.os_error(found.path, e)
        else:
            self.items.append(
                InputItem(key=found.path, path=found.path, size=found.size, mtime_ns=found.mtime_ns)
            )

    def add_archive(self, path: str, st: os.stat_result) -> None:
        listing = list_archive(path, st, max_bytes=self.max_member_bytes)
        self.skipped.update(listing.skipped)
        if listing.items or listing.problem is None:
            if not listing.items:
                log.warning("%s: no image found in the archive", path)
            self.items.extend(listing.items)
        if listing.problem is not None:
            n = len(listing.items)
            self.error(path, listing.problem + (f" ({n} member(s) listed before)" if n else ""), "corrupt")


def expand_inputs(
    inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    follow_symlinks: bool = False,
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES,
) -> list[InputItem]:
    """Every image of ``inputs`` (folders, globs, archives, list files, files) as :class:`InputItem`, in a
    deterministic order: inputs in the given order, the contents of a folder or archive sorted by name.

    Inputs that cannot be read get an item with ``error`` set; duplicate keys are dropped (first kept).
    ``follow_symlinks``: also descend into symbolic links to directories met while walking folders
    (symbolic links to files are always taken). ``max_member_bytes``: archive members larger than this
    (uncompressed) get a ``too_large`` error item instead of being read
    (default :data:`~novelty.batch.items.DEFAULT_MAX_MEMBER_BYTES`).
    """
    if isinstance(max_member_bytes, bool) or not isinstance(max_member_bytes, int) or max_member_bytes < 1:
        raise InvalidInputError(f"max_member_bytes must be a positive int, got {max_member_bytes!r}")
    if isinstance(inputs, (str, bytes, os.PathLike)):
        inputs = [inputs]
    ex = _Expander(follow_symlinks, max_member_bytes)
    for raw in inputs:
        ex.add(os.fsdecode(os.fspath(raw)))
    items: list[InputItem] = []
    seen: set[str] = set()
    for it in ex.items:
        if it.key not in seen:
            seen.add(it.key)
            items.append(it)
    dropped = len(ex.items) - len(items)
    if dropped:
        log.info("dropped %d duplicate input(s) (same key listed more than once)", dropped)
    if ex.skipped:
        log.info("skipped: %s", ", ".join(f"{n} {why}" for why, n in sorted(ex.skipped.items())))
    s = summarize(items)
    log.info(
        "%d input(s) → %d item(s): %d file(s), %d member(s) of %d archive(s), %d unreadable",
        len(inputs),
        s["n_items"],
        s["n_files"],
        s["n_members"],
        s["n_archives"],
        s["n_errors"],
    )
    return items


def item_for_row(key: str, path: str = "", member: str = "") -> InputItem:
    """The item a result row (``key``, ``path``, ``member``) was scored from, to read its bytes again (e.g. for
    a thumbnail). A key alone works too (``archive::member`` is split, ``#N`` gives the occurrence)."""
    if not path and not member and "::" in key:
        path, _, member = key.partition("::")
    if not member:
        return InputItem(key=key, path=path or key)
    occurrence = 1
    base = member_key(path, member)
    if key.startswith(base + "#") and key[len(base) + 1 :].isdigit():
        occurrence = int(key[len(base) + 1 :])
    return InputItem(key=key or base, path=path, member=member, occurrence=occurrence)


def summarize(items: Iterable[InputItem]) -> dict[str, int]:
    """Counts of a list of items: ``n_items``, ``n_errors`` (items with ``error``), ``n_archives``
    (distinct archives met, readable or not), ``n_members`` (archive members) and ``n_files`` (files)."""
    n = n_err = n_members = n_files = 0
    archives: set[str] = set()
    for it in items:
        n += 1
        if it.error is not None:
            n_err += 1
        if it.member is not None:
            n_members += 1
            archives.add(it.path)
        elif archive_kind(it.path) and it.error is not None:
            archives.add(it.path)
        elif it.error is None:
            n_files += 1
    return {
        "n_items": n,
        "n_errors": n_err,
        "n_archives": len(archives),
        "n_members": n_members,
        "n_files": n_files,
    }
