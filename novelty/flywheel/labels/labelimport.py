"""Import finished labels into the dataset: all of them as one version, or nothing.

:func:`import_labels` reads a Label Studio JSON export (:mod:`novelty.flywheel.labels.labelstudio`), a CSV (``id`` or
``path``, ``label``, optional ``labeller``, ``group``, ``condition``, ``time``, ``sha256``) or a "CVAT for
images 1.1" export (:mod:`novelty.flywheel.labels.cvat`); matches each label to its selection item (by id, else by
path), checks that the file still has the sha256 it was selected with, and adds everything through
:meth:`~novelty.flywheel.dataset.Dataset.add_entries`. One error lists every problem — unknown files, unknown
classes, conflicting labels for one image, duplicates — and nothing is written. An image without a label is
counted as unlabelled, not imported.

Different labels for one image (in the file, or against the dataset): a person's label always wins over an
automatic one (labeller ``model:…``) — it replaces it, logged and recorded in the new version's record and in
:attr:`ImportResult.conflicts`, never an error. Two people's different labels are a real conflict, settled by
``on_conflict`` (:data:`~novelty.flywheel.dataset.ON_CONFLICT`): ``"fail"`` (default: the import is refused,
listing every conflict), ``"latest"`` (the label given last, by its time, stands) or ``"skip"`` (the image keeps
the label it had, or stays unlabelled); each one settled is listed in the result. :func:`entries_from_csv` reads the CSV of an initial training set
(path,label[,group,condition]).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novelty.clock import iso, parse_time
from novelty.errors import InvalidInputError
from novelty.fileio import csv_text_value, read_regular_file
from novelty.flywheel.dataset import (
    MAX_LISTED,
    AddResult,
    Dataset,
    Entry,
    LabelConflict,
    _listing,
    now_iso,
    read_image_file,
)
from novelty.flywheel.labels import cvat, labelstudio
from novelty.flywheel.labels.rows import LabelImportError, LabelRow, LabelsRead
from novelty.flywheel.selection import SelectedItem, read_selection

__all__ = [
    "IMPORT_FORMATS",
    "ImportResult",
    "LabelImportError",
    "LabelRow",
    "LabelsRead",
    "entries_from_csv",
    "import_labels",
    "read_labels",
    "read_labels_csv",
    "resolve_csv_path",
    "rows_to_entries",
]

IMPORT_FORMATS = ("auto", "label-studio", "csv", "cvat")


@dataclass(frozen=True)
class ImportResult:
    version: int
    added: tuple[Entry, ...]
    skipped: tuple[Entry, ...]
    unlabelled: tuple[str, ...]
    conflicts: tuple[LabelConflict, ...] = ()  # different labels for one image, and how each was settled

    def counts(self) -> dict[str, int]:
        return AddResult(self.version, self.added, self.skipped).counts()

    def summary(self) -> str:
        per = ", ".join(f"{k}: {v}" for k, v in self.counts().items()) or "none"
        head = (
            f"version {self.version}: added {len(self.added)} ({per})"
            if self.added
            else f"nothing new (the dataset stays at version {self.version})"
        )
        text = (
            f"{head}; skipped {len(self.skipped)} already labelled so; {len(self.unlabelled)} unlabelled "
            "(not imported)"
        )
        if self.conflicts:
            text += f"; {len(self.conflicts)} image(s) with different labels settled:" + "".join(
                f"\n  {c.describe()}" for c in self.conflicts[:MAX_LISTED]
            )
            if len(self.conflicts) > MAX_LISTED:
                text += f"\n  and {len(self.conflicts) - MAX_LISTED} more"
        return text


_CSV_FIELDS = {"id", "path", "sha256", "label", "labeller", "group", "condition", "time"}


def read_labels_csv(path: str | os.PathLike[str], *, paths: bool = False) -> LabelsRead:
    """Labels from a UTF-8 CSV: ``label`` and ``id`` or ``path`` columns (``paths=True``, the labels of a
    training set's images: ``path`` and ``label``); optional ``labeller``, ``group``, ``condition``, ``time``,
    ``sha256`` (other columns, such as the export's scores, are ignored). A row with an empty label is
    unlabelled."""
    name = Path(path).name
    try:
        text = read_regular_file(path).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LabelImportError(
            f"{path}: the labels CSV is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8"
        ) from None
    except OSError as e:
        raise LabelImportError(f"{path}: cannot read ({e})") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames:  # names and cells as written by the package (csv_text_cell), or by hand
            reader.fieldnames = [csv_text_value(c) for c in reader.fieldnames]
        header = reader.fieldnames or []
        if paths and not {"path", "label"} <= set(header):
            raise LabelImportError(
                f"{path}: the labels CSV needs the columns 'path' and 'label'; it has {', '.join(header) or 'none'}"
            )
        if "label" not in header or not ({"id", "path"} & set(header)):
            raise LabelImportError(
                f"{path}: a labels CSV needs a 'label' column and an 'id' or 'path' column; it has "
                f"{', '.join(header) or 'none'}"
            )
        rows: list[LabelRow] = []
        unlabelled: list[str] = []
        for row in reader:
            line = reader.line_num
            if None in row:
                raise LabelImportError(f"{path} line {line}: more fields than the header has")
            vals = {k: csv_text_value(row.get(k) or "").strip() or None for k in _CSV_FIELDS}
            if vals["id"] is None and vals["path"] is None:
                raise LabelImportError(f"{path} line {line}: neither an id nor a path")
            if vals["label"] is None:
                unlabelled.append(vals["id"] or vals["path"] or f"line {line}")
                continue
            if vals["time"] is not None:
                try:
                    t = parse_time(vals["time"], "time")
                except InvalidInputError as e:
                    raise LabelImportError(f"{path} line {line}: {e}") from None
                vals["time"] = None if t is None else iso(t)
            rows.append(
                LabelRow(
                    where=f"{name} line {line}",
                    label=str(vals["label"]),
                    id=vals["id"],
                    path=vals["path"],
                    sha256=vals["sha256"],
                    labeller=vals["labeller"],
                    time=vals["time"],
                    group=vals["group"],
                    condition=vals["condition"],
                )
            )
    except csv.Error as e:
        raise LabelImportError(f"{path}: not a readable CSV file ({e})") from None
    return LabelsRead(rows, unlabelled)


def _detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "label-studio"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".xml":
        return "cvat"
    raise LabelImportError(f"{path}: cannot tell the format from the suffix {suffix!r}; give --format")


def read_labels(path: str | os.PathLike[str], format: str = "auto") -> LabelsRead:
    """The labels of a file in one of :data:`IMPORT_FORMATS` (``auto``: by suffix: .json, .csv, .xml)."""
    p = Path(path)
    if format not in IMPORT_FORMATS:
        raise InvalidInputError(
            f"unknown labels format {format!r}; choose one of {', '.join(IMPORT_FORMATS)}"
        )
    fmt = _detect_format(p) if format == "auto" else format
    if fmt == "csv":
        return read_labels_csv(p)
    if fmt == "label-studio":
        return labelstudio.read_export(p)
    return cvat.read_annotations(p)


def _labeller(value: str | None, given: str | None, *, override: bool = True) -> str:
    """``"human:<name>"`` or ``"model:<version>"``: ``given`` overrides the file's ``value`` (or is only its
    default with ``override=False``); a bare name is a human's."""
    v = (given or value) if override else (value or given)
    if not v:
        return "human:unknown"
    return v if v.startswith(("human:", "model:")) else f"human:{v}"


def rows_to_entries(
    rows: Sequence[LabelRow],
    selection: Any,
    *,
    labeller: str | None = None,
    condition: str | None = None,
    verify_files: bool = True,
) -> tuple[list[Entry], list[str]]:
    """Match each row to its selection item (by id, else by path, else by sha256) and make its entry.

    Returns the entries and the problems (unknown files, a sha256 that does not match the selection's, a file that
    changed since it was selected); the caller decides (:func:`import_labels` refuses any problem).
    ``labeller`` overrides the file's labeller; ``condition`` is the default for items that have none."""
    sel = read_selection(selection)
    by_sha: dict[str, SelectedItem] = {}
    by_name: dict[str, list[SelectedItem]] = {}
    for it in sel.items:
        by_sha.setdefault(it.sha256, it)
        by_name.setdefault(Path(it.path).name, []).append(it)
    entries: list[Entry] = []
    problems: list[str] = []
    hashes: dict[str, str] = {}
    for r in rows:
        item = None
        if r.id is not None:
            item = sel.by_id(r.id)
        if item is None and r.path is not None:
            item = sel.by_path(r.path)
        if item is None and r.name is not None and len(by_name.get(r.name, [])) == 1:
            item = by_name[r.name][0]
        if item is None and r.id is None and r.path is None and r.sha256 is not None:
            item = by_sha.get(r.sha256)
        if item is None:
            what = r.id or r.path or r.sha256 or "?"
            problems.append(
                f"{r.where}: unknown file {what} (not in the selection {sel.path or ''})".rstrip()
            )
            continue
        if r.sha256 is not None and r.sha256 != item.sha256:
            problems.append(
                f"{r.where}: sha256 {r.sha256[:12]}… does not match the selection's {item.sha256[:12]}… for {item.id}"
            )
            continue
        if verify_files:
            if item.path not in hashes:
                try:
                    hashes[item.path] = read_image_file(item.path, item.sha256)  # read once: hashed, decoded
                except InvalidInputError as e:
                    hashes[item.path] = f"unreadable: {e}"
            if hashes[item.path] != item.sha256:
                problems.append(
                    f"{r.where}: "
                    + (
                        hashes[item.path]
                        if hashes[item.path].startswith("unreadable")
                        else f"{item.path} changed since it was selected (its sha256 differs)"
                    )
                )
                continue
        entries.append(
            Entry(
                id=item.id,
                sha256=item.sha256,
                path=item.path,
                label=r.label,
                source=item.source or "selection",
                labeller=_labeller(r.labeller, labeller),
                time=r.time or now_iso(),
                group=r.group or item.group,
                condition=r.condition or item.condition or condition,
                auto=_labeller(r.labeller, labeller).startswith("model:"),
            )
        )
    return entries, problems


def import_labels(
    dataset: Dataset | str | os.PathLike[str],
    file: str | os.PathLike[str],
    selection: Any,
    *,
    format: str = "auto",
    labeller: str | None = None,
    condition: str | None = None,
    note: str = "",
    on_conflict: str = "fail",
) -> ImportResult:
    """Import a labels file into ``dataset`` as one new version: all of it, or nothing (one error lists every
    problem: unknown files, unknown classes, conflicting labels, duplicates). A person's label replaces an
    automatic one; two people's different labels for one image are settled by ``on_conflict`` — ``"fail"``
    (default), ``"latest"`` or ``"skip"`` (see the module docstring) — and listed in ``conflicts``."""
    ds = Dataset.open(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    read = read_labels(file, format)
    entries, problems = rows_to_entries(read.rows, selection, labeller=labeller, condition=condition)
    problems += ds.problems(entries, on_conflict=on_conflict)
    if problems:
        raise LabelImportError(
            f"{file}: {len(problems)} problem(s), nothing imported into {ds.path}: {_listing(problems, MAX_LISTED)}"
        )
    res = ds.add_entries(entries, source=f"labels:{Path(file).name}", note=note, on_conflict=on_conflict)
    return ImportResult(res.version, res.added, res.skipped, tuple(read.unlabelled), res.conflicts)


def entries_from_csv(
    path: str | os.PathLike[str],
    *,
    source: str = "train",
    labeller: str | None = None,
    allow_outside_root: bool = False,
) -> list[Entry]:
    """Entries for an initial training set: a UTF-8 CSV with columns ``path``, ``label`` and optional ``group``,
    ``condition``, ``id``, ``labeller``, ``time``. Relative paths are taken from the CSV's folder; each file is
    read once, hashed and decoded (:func:`~novelty.flywheel.dataset.read_image_file`: a file that is not an image
    is refused). ``id`` defaults to the file's sha256.

    A path that lies outside the CSV's folder once ``..`` is resolved (``../../etc/passwd``, or an absolute path
    elsewhere) is refused unless ``allow_outside_root=True``. Every refused row is named (the CSV's line and the
    path) in one error, and no entry is returned: the caller adds all of them or nothing."""
    csv_path = Path(path)
    read = read_labels_csv(csv_path, paths=True)
    if any(r.path is None for r in read.rows):
        raise LabelImportError(f"{csv_path}: every row needs a path (a 'path' column)")
    if read.unlabelled:
        raise LabelImportError(
            f"{csv_path}: {len(read.unlabelled)} row(s) without a label, e.g. {read.unlabelled[:3]}; every image of a "
            "training set needs one"
        )
    root = os.path.abspath(csv_path.parent)
    entries: list[Entry] = []
    problems: list[str] = []
    outside: list[str] = []
    for r in read.rows:
        full = resolve_csv_path(csv_path, str(r.path))
        if not allow_outside_root and not _inside(full, root):
            outside.append(f"{r.where}: {r.path} resolves to {full}")
            continue
        try:
            e = Entry.from_file(
                full,
                r.label,
                source=source,
                labeller=_labeller(r.labeller, labeller, override=False),
                id=r.id,
                group=r.group,
                condition=r.condition,
                time=r.time,
            )
        except InvalidInputError as err:
            problems.append(f"{r.where}: {err}")
            continue
        entries.append(e)
    if outside:
        raise LabelImportError(
            f"{csv_path}: {len(outside)} path(s) outside the CSV's folder {root}, nothing added (allow them with "
            f"--allow-outside-root, or allow_outside_root=True): {_listing(outside)}"
        )
    if problems:
        raise LabelImportError(
            f"{csv_path}: {len(problems)} unreadable image(s), nothing added: {_listing(problems)}"
        )
    return entries


def resolve_csv_path(csv_path: str | os.PathLike[str], path: str) -> str:
    """The file a CSV row names, the way every CSV of image paths is read (``novelty dataset add-csv``,
    ``novelty fit --labels``): an absolute path as it is, a relative one taken from the CSV's folder (not from
    the current directory); ``..`` resolved lexically, links left as they are."""
    p = Path(path)
    return os.path.abspath(p if p.is_absolute() else Path(csv_path).parent / p)


def _inside(path: str, root: str) -> bool:
    """Whether the absolute ``path`` lies in the folder ``root`` (both already made absolute)."""
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # another drive
        return False
