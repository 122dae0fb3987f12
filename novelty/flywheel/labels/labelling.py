"""Labelling: a selection goes out to a labelling tool, the finished labels come back into the dataset.

Export (:func:`export_selection`) writes, for the images of a selection (``selection.json``, see
:mod:`novelty.flywheel.selection`), what a labelling tool imports:

- ``label-studio``: ``tasks.json`` (each task's image as a local-file URL, the head's answer as a pre-annotation
  carrying ``model_version`` and, as its ``score``, the head's probability of that answer; the novelty score,
  group and condition in the task's data) and ``label_config.xml`` (one choice per class); see
  :mod:`novelty.flywheel.labels.labelstudio`, and :mod:`novelty.flywheel.labels.labelstudio_api` for a project through
  Label Studio's REST API;
- ``cvat``: ``annotations.xml`` in "CVAT for images 1.1" with a ``<tag>`` pre-annotation per image, and
  ``images.txt``, the files to create the task from; see :mod:`novelty.flywheel.labels.cvat`;
- ``csv``: ``labels.csv`` with columns id,path,sha256,prediction,probability,p_value,novelty,group,condition,label
  — the label column is empty for people to fill (group and condition come from the selection, where its
  source gave them; a person may fill a condition in).

**Assisted labelling** (``auto_accept=True``): an image whose head answer is *trusted* (:mod:`novelty.trust`:
not novel and the head competent there, at the detector's own error rate ε, or at ``auto_risk``, an ε whose
competence threshold the selection's trust header records), whose p-value is at least ``auto_min_p`` (default:
the selection's ``alpha``) and whose head probability is at least ``auto_min_prob`` (default 0.9) gets the head's
prediction as its label without a human (labeller ``"model:<model_version>"``, ``auto=True``); a selection made
before the trust decision keeps the old rule, p-value and probability alone (:func:`auto_accepted`). Those go straight into the dataset (``dataset=``) or into ``auto_labels.csv`` to import later,
and are not sent to the tool: people label only what the model cannot. ``export.json`` records the ε and the
threshold used. How often the pre-annotations and the auto-accepted labels are right is measured with
:func:`measure_assistance` against true labels and by ``audit``, never assumed.

**The audit** (``audit``, with ``auto_accept``): some of the answers the rule would accept go to people instead
(chosen by a hash of their content, so the same images whatever the order); ``export.json`` lists them with the
head's answer (``auto_accept.audit``) and :func:`audit_result` compares them with the labels people gave. By
default (``audit="auto"``, :func:`audit_size`) the audit holds as many answers as it takes to vouch for the ε
auto-accept holds: the smallest ``n`` with ``(1 − ε)ⁿ ≤ δ``, i.e. ``n = ⌈ln δ / ln(1 − ε)⌉``. If all ``n``
audited answers are right, the one-sided exact (Clopper–Pearson) upper bound on the rule's error rate at
confidence 1 − δ is at most ε; :func:`audit_result` reports that bound (:func:`audit_upper_bound`) at the δ
``export.json`` records, so a clean audit of 45 reads "≤ 5.0 %". At ε = 0.05, δ = 0.1 that is 45 answers (230 at ε = 0.01). One error among them
widens the bound past ε: 1 wrong of 45 gives an upper bound of 8.4 % (2 wrong: 11.4 %), and vouching for 5 %
with one error takes 77 audited answers. ε is the one auto-accept holds (``auto_risk``, else the detector's
own), δ the trust decision's (the selection's trust header); a selection without a trust decision uses ε = 0.05
and δ = :data:`novelty.trust.DEFAULT_DELTA`. When the rule accepts fewer answers than ``n``, all of them are
audited, so none is accepted without a person (a log line says so). A number in [0, 1] is a share instead (at
least one image when any is accepted; 0: no audit). ``export.json`` records ``audit_size``, ``audit_rule``
(``"auto: ln δ / ln(1−ε)"`` or ``"share"``) and the ``audit_risk`` and ``audit_delta`` it used.

Import (:func:`import_labels`) reads a Label Studio JSON export, a CSV (``id`` or ``path``, ``label``, optional
``labeller``, ``group``, ``condition``, ``time``) or a CVAT XML export, matches each labelled image to its
selection item, and adds all of them to the dataset as one version — or nothing: unknown files, unknown classes,
conflicting labels for one image and duplicates are all reported in one error. Images without a label are
counted as unlabelled and not imported. A person's label replaces an automatic one (logged and recorded, never an
error); two people's different labels are settled by ``on_conflict`` ("fail", the default, "latest" or "skip";
see :mod:`~novelty.flywheel.labels.labelimport`).

This module is the front door; the parts live in :mod:`~novelty.flywheel.selection` (the selection and its reader),
:mod:`~novelty.flywheel.labels.assisted` (auto-accept and its measurement), :mod:`~novelty.flywheel.labels.audit`
(the audit's size and its result), :mod:`~novelty.flywheel.labels.labelimport` (import),
:mod:`~novelty.flywheel.labels.labelstudio` and :mod:`~novelty.flywheel.labels.cvat` (the tools' formats).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from novelty.errors import InvalidInputError
from novelty.fileio import atomic_write_text, csv_text_cell
from novelty.flywheel.dataset import DATASET_FILE, Dataset, Entry, _listing, labelled_hashes, now_iso
from novelty.flywheel.labels import cvat, labelstudio
from novelty.flywheel.labels.assisted import (
    AUTO_MIN_PROB,
    AssistanceStats,
    auto_accepted,
    auto_entry,
    auto_threshold,
    check_thresholds,
    measure_assistance,
    newly_labelled,
    recorded_threshold,
)
from novelty.flywheel.labels.audit import (
    AUDIT_AUTO,
    AUDIT_AUTO_RULE,
    EXPORT_MANIFEST,
    AuditResult,
    _applied_risk,
    _audit_levels,
    _check_audit,
    audit_result,
    audit_size,
    audit_upper_bound,
)
from novelty.flywheel.labels.labelimport import (
    IMPORT_FORMATS,
    ImportResult,
    LabelImportError,
    entries_from_csv,
    import_labels,
    read_labels,
)
from novelty.flywheel.selection import SelectedItem, Selection, read_selection

__all__ = [
    "AUDIT_AUTO",
    "AUDIT_AUTO_RULE",
    "AUTO_MIN_PROB",
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "AssistanceStats",
    "AuditResult",
    "ExportResult",
    "ImportResult",
    "LabelImportError",
    "SelectedItem",
    "Selection",
    "audit_result",
    "audit_size",
    "audit_upper_bound",
    "auto_accepted",
    "auto_threshold",
    "entries_from_csv",
    "export_selection",
    "import_labels",
    "measure_assistance",
    "read_labels",
    "read_selection",
]

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("label-studio", "cvat", "csv")
CSV_COLUMNS = (
    "id",
    "path",
    "sha256",
    "prediction",
    "probability",
    "p_value",
    "novelty",
    "group",
    "condition",
    "label",
)
AUTO_CSV = "auto_labels.csv"


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
    auto_risk: float | None = None  # the ε auto-accept held (None: the detector's own)
    auto_threshold: float | None = None  # the competence threshold at auto_risk (inf: none certified)
    audit_size: int = 0  # the answers the rule would accept that went to people instead (the audit)


def _csv_text(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """A CSV file's text; text cells pass :func:`~novelty.fileio.csv_text_cell` (a class, an id or a path
    beginning with = + - @ tab or CR gets a leading ``'``, which the labels reader removes), numbers stay numbers."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_text_cell(c) for c in header])
    for r in rows:
        w.writerow(["" if v is None else csv_text_cell(v) if isinstance(v, str) else v for v in r])
    return buf.getvalue()


def _labels_csv(items: Sequence[SelectedItem]) -> str:
    return _csv_text(
        (
            (
                it.id,
                it.path,
                it.sha256,
                it.prediction,
                it.probability,
                it.p_value,
                it.novelty,
                it.group,
                it.condition,
                "",
            )
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
    audit: float | str = AUDIT_AUTO,
    auto_risk: float | None = None,
    labelled: Any = None,
) -> ExportResult:
    """Write the selection's images for a labelling tool into ``out_dir`` (see the module docstring).

    ``classes`` default to the selection's (the head's), else the dataset's. With ``dataset``, images it already
    labels are left out, and auto-accepted labels are added to it as one version (else written to
    ``auto_labels.csv``). ``labelled``: more datasets (or their directories; one or a sequence) whose images
    count as labelled already, left out the same way but given nothing (the flywheel's training set, new slice
    and test set). ``n_already_labelled`` (and ``export.json``) counts what was left out.

    ``document_root`` (Label Studio): the folder Label Studio serves local files from
    (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``); default: the parent of the images' common folder, which is
    the project's "Local files" storage path (``export.json`` names both).

    ``auto_risk`` (with ``auto_accept``): the error rate ε auto-accept holds; ``None``, the detector's own (each
    item's ``trusted``); a number, the competence threshold the selection's trust header records at that ε
    (:func:`~novelty.flywheel.labels.assisted.auto_threshold`: an ε it does not record is refused, listing those it
    does; one its calibration split cannot certify accepts nothing).

    ``audit`` (with ``auto_accept``; without it no audit is made, and a share above 0 is refused): some of the
    images the rule would accept go to people instead (chosen by a hash of their content, so the same images
    whatever the order), and ``export.json`` lists them with the head's answer (``audit``), so that the error
    rate of the auto-accepted labels is measured on every export (:func:`audit_result`), not assumed. How many:
    ``"auto"`` (default), :func:`audit_size` at the ε auto-accept holds and the trust decision's δ (see the
    module docstring); a number in [0, 1], that share of them (at least one when any; 0: none)."""
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
    check_thresholds(min_p, auto_min_prob)
    items = list(sel.items)
    n_already = 0
    known, _ = labelled_hashes(labelled)
    ds_entries = (
        list(ds.entries()) if ds is not None else None
    )  # read once: here and for the first-turn audit
    if ds_entries is not None:
        known |= {e.sha256 for e in ds_entries}
    if known:
        n_already = sum(it.sha256 in known for it in items)
        items = [it for it in items if it.sha256 not in known]
    audit = _check_audit(audit)
    if isinstance(audit, float) and audit > 0 and not auto_accept:
        raise InvalidInputError(f"audit={audit:g} applies to auto-accepted labels: use it with auto_accept")
    if auto_risk is not None and not auto_accept:
        raise InvalidInputError("auto_risk applies to auto-accepted labels: use it with auto_accept")
    threshold = auto_threshold(sel.trust, auto_risk)
    held = threshold if threshold is not None else _own_threshold(sel.trust)
    if auto_accept and held is not None and math.isinf(held):
        log.warning(
            "the trust decision of %s cannot certify an error rate of %g among trusted answers (too few "
            "labelled calibration images): nothing is auto-accepted",
            sel.model_version or "the selection's detector",
            _applied_risk(sel.trust, auto_risk),
        )
    elif auto_accept and sel.trust is None:
        log.info(
            "the selection records no trust decision: auto-accept keeps the old rule (p-value, probability)"
        )
    auto: list[Entry] = []
    audited: list[Any] = []
    audit_eps: float | None = None
    audit_delta: float | None = None
    if auto_accept:
        accepted = [
            it
            for it in items
            if auto_accepted(
                it, min_p=min_p, min_prob=auto_min_prob, classes=names or None, threshold=threshold
            )
        ]
        if isinstance(audit, float):
            k = max(1, round(audit * len(accepted))) if audit > 0 and accepted else 0
        else:
            audit_eps, audit_delta = _audit_levels(sel.trust, auto_risk)
            k = audit_size(len(accepted), audit_eps, audit_delta)
        if k:
            audited = sorted(
                accepted, key=lambda it: hashlib.sha256(f"audit\0{it.sha256}".encode()).hexdigest()
            )
            audited = audited[:k]
        first_time = newly_labelled(accepted, _training_entries(ds_entries, labelled)) if accepted else {}
        if first_time:
            log.info(
                "%d image(s) of condition(s) labelled for the first time in the last turn (%s) go to people "
                "with the head's answer listed in the audit, none accepted automatically",
                len(first_time),
                ", ".join(sorted(set(first_time.values()))),
            )
            chosen = {it.id for it in audited}
            audited += [it for it in accepted if it.id in first_time and it.id not in chosen]
        audit_ids = {it.id for it in audited}
        auto = [auto_entry(it, sel.model_version) for it in accepted if it.id not in audit_ids]
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
        root = labelstudio.document_root([it.path for it in items], document_root)
        files.append(atomic_write_text(out / "label_config.xml", labelstudio.label_config(names)))
        tasks = labelstudio.tasks(items, root, sel.model_version, names)
        files.append(
            atomic_write_text(out / "tasks.json", json.dumps(tasks, indent=1, ensure_ascii=False) + "\n")
        )
        extra["document_root"] = str(root)
        extra["local_storage_path"] = str(labelstudio.storage_path([it.path for it in items]))
    elif format == "cvat":
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
            "trust_rule": None if sel.trust is None else sel.trust["rule"],
            "auto_risk": auto_risk,
            "risk": _applied_risk(sel.trust, auto_risk),
            "threshold": None if held is None or math.isinf(held) else held,
            "n": len(auto),
            "dataset_version": auto_version,
            "file": None if auto_file is None else auto_file.name,
            "audit_rule": (
                None if not auto_accept else "share" if isinstance(audit, float) else AUDIT_AUTO_RULE
            ),
            "audit_share": audit if isinstance(audit, float) else None,
            "audit_risk": audit_eps,
            "audit_delta": audit_delta,
            "audit_size": len(audited),
            "audit": [
                {"id": it.id, "sha256": it.sha256, "model_label": str(it.prediction)} for it in audited
            ],
        },
        **extra,
        "files": [f.name for f in files],
    }
    files.append(
        atomic_write_text(out / EXPORT_MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    )
    return ExportResult(
        format,
        out,
        tuple(files),
        len(items),
        tuple(auto),
        auto_version,
        auto_file,
        n_already,
        auto_risk,
        held,
        len(audited),
    )


def _own_threshold(trust: Mapping[str, Any] | None) -> float | None:
    """The competence threshold at the detector's own ε (what each item's ``trusted`` holds); ``inf`` when none
    was certified; ``None`` without a trust decision (or a header that does not record it)."""
    return None if trust is None else recorded_threshold(trust, trust["risk"])


def _training_entries(ds_entries: list[Entry] | None, labelled: Any) -> list[Entry]:
    """The entries of the training dataset: ``dataset``'s (already read) when given, else the first of
    ``labelled`` (a flywheel passes its training set first); none when neither exists yet."""
    if ds_entries is not None:
        return ds_entries
    many = labelled if isinstance(labelled, (list, tuple)) else [labelled]
    if not many or many[0] is None:
        return []
    first = many[0]
    if isinstance(first, Dataset):
        return list(first.entries())
    if not (Path(first) / DATASET_FILE).exists():
        return []
    return list(Dataset.open(first).entries())
