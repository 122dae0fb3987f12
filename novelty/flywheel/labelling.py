"""Labelling: a selection goes out to a labelling tool, the finished labels come back into the dataset.

Export (:func:`export_selection`) writes, for the images of a selection (``selection.json``, see
:mod:`novelty.flywheel.selection`), what a labelling tool imports:

- ``label-studio``: ``tasks.json`` (each task's image as a local-file URL, the head's answer as a pre-annotation
  carrying ``model_version`` and the novelty score) and ``label_config.xml`` (one choice per class);
  see :mod:`novelty.flywheel.labelstudio`;
- ``cvat``: ``annotations.xml`` in "CVAT for images 1.1" with a ``<tag>`` pre-annotation per image, and
  ``images.txt``, the files to create the task from; see :mod:`novelty.flywheel.cvat`;
- ``csv``: ``labels.csv`` with columns id,path,sha256,prediction,probability,p_value,novelty,label — the label
  column is empty for people to fill.

**Assisted labelling** (``auto_accept=True``): an image that is neither novel nor uncertain — its p-value at
least ``auto_min_p`` (default: the selection's ``alpha``, i.e. not flagged as novel) *and* the head's
probability at least ``auto_min_prob`` (default 0.9) — gets the head's prediction as its label without a human
(labeller ``"model:<model_version>"``, ``auto=True``). Those go straight into the dataset (``dataset=``) or
into ``auto_labels.csv`` to import later, and are not sent to the tool: people label only what the model cannot.
How often the pre-annotations and the auto-accepted labels are right is measured with
:func:`measure_assistance` against true labels, never assumed.

Import (:func:`import_labels`) reads a Label Studio JSON export, a CSV (``id`` or ``path``, ``label``, optional
``labeller``, ``group``, ``condition``, ``time``) or a CVAT XML export, matches each labelled image to its
selection item, and adds all of them to the dataset as one version — or nothing: unknown files, unknown classes,
conflicting labels for one image and duplicates are all reported in one error. Images without a label are
counted as unlabelled and not imported.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novelty.errors import InvalidInputError
from novelty.fileio import atomic_write_text, read_regular_file, sha256_bytes, sha256_file
from novelty.flywheel.dataset import MAX_LISTED, AddResult, Dataset, Entry, _listing, now_iso

__all__ = [
    "AUTO_MIN_PROB",
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "AssistanceStats",
    "ExportResult",
    "ImportResult",
    "LabelRow",
    "SelectedImage",
    "SelectionData",
    "auto_accepted",
    "export_selection",
    "import_labels",
    "measure_assistance",
    "read_labels",
    "read_labels_csv",
    "read_selection",
    "rows_to_entries",
]

EXPORT_FORMATS = ("label-studio", "cvat", "csv")
IMPORT_FORMATS = ("auto", "label-studio", "csv", "cvat")
#: the head's probability an answer needs to be accepted without a human (with a p-value ≥ alpha)
AUTO_MIN_PROB = 0.9
CSV_COLUMNS = ("id", "path", "sha256", "prediction", "probability", "p_value", "novelty", "label")
AUTO_CSV = "auto_labels.csv"
EXPORT_MANIFEST = "export.json"


class LabelImportError(InvalidInputError):
    """A labels file cannot be read or does not fit the selection and the dataset (nothing was imported)."""


# --- the selection, as export and import see it ----------------------------------------------------------
@dataclass(frozen=True)
class SelectedImage:
    """One item of a selection (the fields of ``selection.json``; ``group``/``condition`` when it gives them)."""

    id: str
    path: str
    sha256: str
    source: str = ""
    rank: int = 0
    reason: str = ""
    p_value: float | None = None
    novelty: float | None = None
    is_novel: bool | None = None
    prediction: str | None = None
    probability: float | None = None
    uncertainty: float | None = None
    timestamp: str | None = None
    group: str | None = None
    condition: str | None = None


@dataclass(frozen=True)
class SelectionData:
    path: str | None
    model_version: str
    classes: list[str]
    alpha: float
    items: list[SelectedImage]
    strategy: str = ""
    sha256: str | None = None  # of the selection file
    _index: dict[str, dict[str, SelectedImage]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._index["id"] = {it.id: it for it in self.items}
        self._index["path"] = {_norm(it.path): it for it in self.items}

    def by_id(self, item_id: str) -> SelectedImage | None:
        return self._index["id"].get(item_id)

    def by_path(self, path: str) -> SelectedImage | None:
        return self._index["path"].get(_norm(path))


def _norm(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _opt_float(v: Any, what: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
        raise InvalidInputError(f"{what} must be a number or null, got {v!r}")
    return float(v)


def _opt_str(v: Any, what: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise InvalidInputError(f"{what} must be a string or null, got {v!r}")
    return v


def read_selection(selection: Any) -> SelectionData:
    """A selection from a ``selection.json`` path, a parsed dict, or an object with the same attributes
    (``novelty.flywheel.selection.Selection``)."""
    if isinstance(selection, SelectionData):
        return selection
    path: str | None = None
    digest = None
    if isinstance(selection, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(selection))
        try:
            data = read_regular_file(path)
        except OSError as e:
            raise InvalidInputError(f"{path}: cannot read the selection ({e})") from None
        digest = sha256_bytes(data)
        try:
            obj = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidInputError(f"{path}: not a JSON selection ({e})") from None
    elif isinstance(selection, Mapping):
        obj = dict(selection)
    elif hasattr(selection, "items") and hasattr(selection, "model_version"):
        obj = {
            "format": "novelty-selection",
            "model_version": selection.model_version,
            "classes": list(getattr(selection, "classes", []) or []),
            "alpha": getattr(selection, "alpha", 0.05),
            "strategy": getattr(selection, "strategy", ""),
            "items": [it if isinstance(it, Mapping) else vars(it) for it in selection.items],
        }
    else:
        raise InvalidInputError(
            f"expected a selection.json path or a Selection, got {type(selection).__name__}"
        )
    where = path or "selection"
    if not isinstance(obj, dict) or obj.get("format") != "novelty-selection":
        raise InvalidInputError(f"{where}: not a novelty selection (format must be 'novelty-selection')")
    items_raw = obj.get("items")
    if not isinstance(items_raw, list):
        raise InvalidInputError(f"{where}: 'items' must be a list")
    items: list[SelectedImage] = []
    problems: list[str] = []
    for i, it in enumerate(items_raw):
        try:
            if not isinstance(it, dict):
                raise InvalidInputError(f"expected an object, got {type(it).__name__}")
            for k in ("id", "path", "sha256"):
                if not isinstance(it.get(k), str) or not it[k]:
                    raise InvalidInputError(f"{k} must be a non-empty string")
            items.append(
                SelectedImage(
                    id=it["id"],
                    path=_norm(it["path"]),
                    sha256=it["sha256"],
                    source=str(it.get("source") or ""),
                    rank=int(it.get("rank") or 0),
                    reason=str(it.get("reason") or ""),
                    p_value=_opt_float(it.get("p_value"), "p_value"),
                    novelty=_opt_float(it.get("novelty"), "novelty"),
                    is_novel=None if it.get("is_novel") is None else bool(it["is_novel"]),
                    prediction=_opt_str(it.get("prediction"), "prediction"),
                    probability=_opt_float(it.get("probability"), "probability"),
                    uncertainty=_opt_float(it.get("uncertainty"), "uncertainty"),
                    timestamp=_opt_str(it.get("timestamp"), "timestamp"),
                    group=_opt_str(it.get("group"), "group"),
                    condition=_opt_str(it.get("condition"), "condition"),
                )
            )
        except (InvalidInputError, TypeError, ValueError) as e:
            problems.append(f"item #{i}: {e}")
    ids = [it.id for it in items]
    problems += [f"id {x} occurs more than once" for x in sorted({x for x in ids if ids.count(x) > 1})]
    if problems:
        raise InvalidInputError(f"{where}: {len(problems)} bad item(s): {_listing(problems)}")
    classes = obj.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise InvalidInputError(f"{where}: 'classes' must be a list of strings")
    alpha = obj.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise InvalidInputError(f"{where}: 'alpha' must lie strictly between 0 and 1, got {alpha!r}")
    return SelectionData(
        path=path,
        model_version=str(obj.get("model_version") or ""),
        classes=list(classes),
        alpha=float(alpha),
        items=items,
        strategy=str(obj.get("strategy") or ""),
        sha256=digest,
    )


# --- assisted labelling ------------------------------------------------------------------------------------
def auto_accepted(
    item: SelectedImage,
    *,
    min_p: float,
    min_prob: float = AUTO_MIN_PROB,
    classes: Sequence[str] | None = None,
) -> bool:
    """Whether the head's answer for ``item`` is accepted without a human: not novel (``p_value ≥ min_p``) and
    certain (``probability ≥ min_prob``), with a prediction that is one of ``classes`` (when given)."""
    if item.prediction is None or item.p_value is None or item.probability is None:
        return False
    if classes is not None and item.prediction not in classes:
        return False
    return item.p_value >= min_p and item.probability >= min_prob


def _check_thresholds(min_p: float, min_prob: float) -> None:
    for name, v in (("auto_min_p", min_p), ("auto_min_prob", min_prob)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise InvalidInputError(f"{name} must lie in [0, 1], got {v!r}")


def _auto_entry(item: SelectedImage, model_version: str) -> Entry:
    return Entry(
        id=item.id,
        sha256=item.sha256,
        path=item.path,
        label=str(item.prediction),
        source=item.source or "selection",
        labeller=f"model:{model_version or 'unknown'}",
        time=now_iso(),
        group=item.group,
        condition=item.condition,
        auto=True,
    )


@dataclass(frozen=True)
class AssistanceStats:
    """How much the model's answers would have saved on a labelled selection (see :func:`measure_assistance`).

    ``pre_right_share``: of the items with a pre-annotation, the share whose pre-annotation equals the true label
    (all items; ``pre_right_share_human``: only those left to people). ``auto_error_rate``: of the auto-accepted
    items, the share whose accepted label is wrong, with a Wilson 95 % interval (``auto_error_ci``)."""

    n: int
    n_preannotated: int
    n_pre_right: int
    pre_right_share: float
    n_human: int
    n_human_preannotated: int
    n_human_pre_right: int
    pre_right_share_human: float
    n_auto: int
    n_auto_wrong: int
    auto_error_rate: float
    auto_error_ci: tuple[float, float]
    auto_min_p: float
    auto_min_prob: float

    def to_json(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["auto_error_ci"] = list(self.auto_error_ci)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _share(k: int, n: int) -> float:
    return k / n if n else math.nan


def _wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def measure_assistance(
    selection: Any,
    truth: Mapping[str, str],
    *,
    auto_min_p: float | None = None,
    auto_min_prob: float = AUTO_MIN_PROB,
) -> AssistanceStats:
    """Measure the pre-annotations and the auto-accept rule on the items of ``selection`` whose true label is in
    ``truth`` (``{item id: label}``; items missing from it are left out)."""
    sel = read_selection(selection)
    min_p = sel.alpha if auto_min_p is None else auto_min_p
    _check_thresholds(min_p, auto_min_prob)
    items = [it for it in sel.items if it.id in truth]
    classes = sel.classes or None
    pre = [it for it in items if it.prediction is not None]
    auto = [it for it in items if auto_accepted(it, min_p=min_p, min_prob=auto_min_prob, classes=classes)]
    auto_ids = {it.id for it in auto}
    human = [it for it in items if it.id not in auto_ids]
    human_pre = [it for it in human if it.prediction is not None]
    right = sum(it.prediction == truth[it.id] for it in pre)
    human_right = sum(it.prediction == truth[it.id] for it in human_pre)
    wrong = sum(it.prediction != truth[it.id] for it in auto)
    return AssistanceStats(
        n=len(items),
        n_preannotated=len(pre),
        n_pre_right=right,
        pre_right_share=_share(right, len(pre)),
        n_human=len(human),
        n_human_preannotated=len(human_pre),
        n_human_pre_right=human_right,
        pre_right_share_human=_share(human_right, len(human_pre)),
        n_auto=len(auto),
        n_auto_wrong=wrong,
        auto_error_rate=_share(wrong, len(auto)),
        auto_error_ci=_wilson(wrong, len(auto)),
        auto_min_p=float(min_p),
        auto_min_prob=float(auto_min_prob),
    )


# --- export ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportResult:
    format: str
    out_dir: Path
    files: tuple[Path, ...]
    n_exported: int
    auto: tuple[Entry, ...] = ()
    auto_version: int | None = None  # the dataset version the auto-accepted labels went into
    auto_file: Path | None = None  # or the CSV they were written to
    n_already_labelled: int = 0  # items left out because the dataset already has a label for the image


def _csv_text(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow(["" if v is None else v for v in r])
    return buf.getvalue()


def _labels_csv(items: Sequence[SelectedImage]) -> str:
    return _csv_text(
        (
            (it.id, it.path, it.sha256, it.prediction, it.probability, it.p_value, it.novelty, "")
            for it in items
        ),
        CSV_COLUMNS,
    )


def _auto_csv(entries: Sequence[Entry]) -> str:
    return _csv_text(
        ((e.id, e.path, e.sha256, e.label, e.labeller, e.group, e.condition) for e in entries),
        ("id", "path", "sha256", "label", "labeller", "group", "condition"),
    )


def export_selection(
    selection: Any,
    out_dir: str | os.PathLike[str],
    *,
    format: str = "label-studio",
    classes: Sequence[str] | None = None,
    document_root: str | os.PathLike[str] | None = None,
    auto_accept: bool = False,
    auto_min_p: float | None = None,
    auto_min_prob: float = AUTO_MIN_PROB,
    dataset: Dataset | str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Write the selection's images for a labelling tool into ``out_dir`` (see the module docstring).

    ``classes`` default to the selection's (the head's), else the dataset's. With ``dataset``, images it already
    labels are left out, and auto-accepted labels are added to it as one version (else written to
    ``auto_labels.csv``). ``document_root`` (Label Studio): the folder Label Studio serves local files from
    (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``); default: the parent of the images' common folder, which is
    the project's "Local files" storage path (``export.json`` names both)."""
    if format not in EXPORT_FORMATS:
        raise InvalidInputError(
            f"unknown export format {format!r}; choose one of {', '.join(EXPORT_FORMATS)}"
        )
    sel = read_selection(selection)
    ds = Dataset.open(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    names = list(classes or sel.classes or (ds.classes if ds is not None else []))
    if not names and format != "csv":
        raise InvalidInputError(
            "no classes to label with: the selection names none (a detector without a head); give classes "
            "(--classes a,b) or a dataset (--dataset)"
        )
    if ds is not None:
        unknown = sorted(set(names) - set(ds.classes))
        if unknown:
            raise InvalidInputError(
                f"class(es) {unknown} are not classes of the dataset {ds.path} ({', '.join(ds.classes)}); "
                "add them with `novelty dataset add-classes` or Dataset.add_classes first"
            )
    min_p = sel.alpha if auto_min_p is None else auto_min_p
    _check_thresholds(min_p, auto_min_prob)
    items = list(sel.items)
    n_already = 0
    if ds is not None:
        known = {e.sha256 for e in ds.entries()}
        n_already = sum(it.sha256 in known for it in items)
        items = [it for it in items if it.sha256 not in known]
    auto: list[Entry] = []
    if auto_accept:
        auto = [
            _auto_entry(it, sel.model_version)
            for it in items
            if auto_accepted(it, min_p=min_p, min_prob=auto_min_prob, classes=names or None)
        ]
        auto_ids = {e.id for e in auto}
        items = [it for it in items if it.id not in auto_ids]
    if ds is not None and auto:
        problems = ds.problems(auto)
        if problems:
            raise InvalidInputError(
                f"the auto-accepted labels do not fit {ds.path}, nothing written: {_listing(problems)}"
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    extra: dict[str, Any] = {}
    if format == "label-studio":
        from novelty.flywheel import labelstudio

        root = labelstudio.document_root([it.path for it in items], document_root)
        files.append(atomic_write_text(out / "label_config.xml", labelstudio.label_config(names)))
        tasks = labelstudio.tasks(items, root, sel.model_version)
        files.append(
            atomic_write_text(out / "tasks.json", json.dumps(tasks, indent=1, ensure_ascii=False) + "\n")
        )
        extra["document_root"] = str(root)
        extra["local_storage_path"] = str(labelstudio.storage_path([it.path for it in items]))
    elif format == "cvat":
        from novelty.flywheel import cvat

        root = cvat.common_root([it.path for it in items])
        files.append(atomic_write_text(out / "annotations.xml", cvat.annotations_xml(items, names, root)))
        files.append(atomic_write_text(out / "images.txt", "".join(f"{it.path}\n" for it in items)))
        extra["image_root"] = str(root)
    else:
        files.append(atomic_write_text(out / "labels.csv", _labels_csv(items)))
    auto_version = None
    auto_file = None
    if auto and ds is not None:
        res = ds.add_entries(
            auto, source=f"auto:{sel.path or 'selection'}", note="auto-accepted head answers"
        )
        auto_version = res.version
    elif auto:
        auto_file = atomic_write_text(out / AUTO_CSV, _auto_csv(auto))
        files.append(auto_file)
    manifest = {
        "format": "novelty-label-export",
        "format_version": 1,
        "tool": format,
        "created": now_iso(),
        "selection": sel.path,
        "selection_sha256": sel.sha256,
        "model_version": sel.model_version,
        "classes": names,
        "n_exported": len(items),
        "n_already_labelled": n_already,
        "auto_accept": {
            "enabled": bool(auto_accept),
            "min_p": min_p,
            "min_prob": auto_min_prob,
            "n": len(auto),
            "dataset_version": auto_version,
            "file": None if auto_file is None else auto_file.name,
        },
        **extra,
        "files": [f.name for f in files],
    }
    files.append(
        atomic_write_text(out / EXPORT_MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    )
    return ExportResult(
        format, out, tuple(files), len(items), tuple(auto), auto_version, auto_file, n_already
    )


# --- import ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelRow:
    """One label read from a labelling tool's file, before it is matched to the selection.
    ``where`` says where it came from (``tasks.json task 17``, ``labels.csv line 5``)."""

    where: str
    label: str
    id: str | None = None
    path: str | None = None
    sha256: str | None = None
    labeller: str | None = None
    time: str | None = None
    group: str | None = None
    condition: str | None = None
    name: str | None = None  # a file name to match when the path matches no item (CVAT names files by upload)


@dataclass(frozen=True)
class LabelsRead:
    rows: list[LabelRow]
    unlabelled: list[str]  # where each image without a label is (ids when known)


@dataclass(frozen=True)
class ImportResult:
    version: int
    added: tuple[Entry, ...]
    skipped: tuple[Entry, ...]
    unlabelled: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        return AddResult(self.version, self.added, self.skipped).counts()

    def summary(self) -> str:
        per = ", ".join(f"{k}: {v}" for k, v in self.counts().items()) or "none"
        return (
            f"version {self.version}: added {len(self.added)} ({per}); skipped {len(self.skipped)} already labelled "
            f"so; {len(self.unlabelled)} unlabelled (not imported)"
        )


_CSV_FIELDS = {"id", "path", "sha256", "label", "labeller", "group", "condition", "time"}


def read_labels_csv(path: str | os.PathLike[str]) -> LabelsRead:
    """Labels from a UTF-8 CSV: ``label`` and ``id`` or ``path`` columns; optional ``labeller``, ``group``,
    ``condition``, ``time``, ``sha256`` (other columns, such as the export's scores, are ignored). A row with an
    empty label is unlabelled."""
    name = Path(path).name
    try:
        text = read_regular_file(path).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LabelImportError(
            f"{path}: not UTF-8 text (byte at offset {e.start}); save it as UTF-8"
        ) from None
    except OSError as e:
        raise LabelImportError(f"{path}: cannot read ({e})") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
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
            vals = {k: (row.get(k) or "").strip() or None for k in _CSV_FIELDS}
            if vals["id"] is None and vals["path"] is None:
                raise LabelImportError(f"{path} line {line}: neither an id nor a path")
            if vals["label"] is None:
                unlabelled.append(vals["id"] or vals["path"] or f"line {line}")
                continue
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
        from novelty.flywheel import labelstudio

        return labelstudio.read_export(p)
    from novelty.flywheel import cvat

    return cvat.read_annotations(p)


def _labeller(value: str | None, default: str | None) -> str:
    v = default or value
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
    by_sha: dict[str, SelectedImage] = {}
    by_name: dict[str, list[SelectedImage]] = {}
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
                    hashes[item.path] = sha256_file(item.path)
                except OSError as e:
                    hashes[item.path] = f"unreadable: {e.strerror or e}"
            if hashes[item.path] != item.sha256:
                problems.append(
                    f"{r.where}: {item.path} "
                    + (
                        hashes[item.path]
                        if hashes[item.path].startswith("unreadable")
                        else "changed since it was selected (its sha256 differs)"
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
) -> ImportResult:
    """Import a labels file into ``dataset`` as one new version: all of it, or nothing (one error lists every
    problem: unknown files, unknown classes, conflicting labels, duplicates)."""
    ds = Dataset.open(dataset) if isinstance(dataset, (str, os.PathLike)) else dataset
    read = read_labels(file, format)
    entries, problems = rows_to_entries(read.rows, selection, labeller=labeller, condition=condition)
    problems += ds.problems(entries)
    if problems:
        raise LabelImportError(
            f"{file}: {len(problems)} problem(s), nothing imported into {ds.path}: {_listing(problems, MAX_LISTED)}"
        )
    res = ds.add_entries(entries, source=f"labels:{Path(file).name}", note=note)
    return ImportResult(res.version, res.added, res.skipped, tuple(read.unlabelled))
