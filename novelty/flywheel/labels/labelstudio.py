"""Label Studio: the tasks and labelling config of an export, and the reader of its JSON export.

Images are not uploaded: Label Studio serves them from the disk (``/data/local-files/?d=<path>`` with ``<path>``
relative to ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) when it runs with
``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``; the project also needs a "Local files" storage whose path
contains the images (without syncing it), a folder strictly below the document root (:func:`storage_paths`).
Each task carries in its data ``novelty_id`` and ``sha256``, so the import matches labels to the selection by id
and checks the content, ``novelty_score`` (the novelty score, higher = more novel), and ``group`` and
``condition`` (null when the selection gives none), which the import reads back. The head's answer is a
prediction with ``model_version`` (the detector's artifact id) and ``score``, the head's probability of that
answer (none when the selection does not give it), shown to the annotator as a pre-annotation.

The import reads the export of ``GET /api/projects/<id>/export?exportType=JSON``: for each task the latest
annotation that was not cancelled (skipped) gives its label; a task without one is unlabelled
(:func:`task_state` tells labelled, skipped and unlabelled tasks apart). Files and the REST API
(:mod:`novelty.flywheel.labels.labelstudio_api`) go through this one reader.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from novelty.clock import iso, parse_time
from novelty.errors import InvalidInputError
from novelty.fileio import read_regular_file
from novelty.flywheel.labels.rows import LabelImportError, LabelRow, LabelsRead
from novelty.flywheel.selection import SelectedItem

__all__ = [
    "FROM_NAME",
    "TO_NAME",
    "config_classes",
    "document_root",
    "label_config",
    "local_file_url",
    "read_export",
    "storage_path",
    "storage_paths",
    "task_state",
    "tasks",
]

FROM_NAME = "label"
TO_NAME = "image"
LOCAL_FILES_PREFIX = "/data/local-files/?d="


def label_config(classes: Sequence[str]) -> str:
    """The labelling config: the image and one single choice per class."""
    if not classes:
        raise InvalidInputError("a labelling config needs at least one class")
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=TO_NAME, value=f"${TO_NAME}")
    choices = ET.SubElement(
        view, "Choices", name=FROM_NAME, toName=TO_NAME, choice="single", showInLine="true", required="true"
    )
    for c in classes:
        ET.SubElement(choices, "Choice", value=c)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def config_classes(config: str) -> list[str] | None:
    """The classes of a labelling config written by :func:`label_config` (the choices named ``label`` over the
    image ``image``, in order); ``None`` for a config without them (or not XML)."""
    try:
        view = ET.fromstring(config)
    except ET.ParseError:
        return None
    images = [e for e in view.iter("Image") if e.get("name") == TO_NAME]
    choices = [e for e in view.iter("Choices") if e.get("name") == FROM_NAME and e.get("toName") == TO_NAME]
    if len(images) != 1 or len(choices) != 1:
        return None
    return [str(c.get("value")) for c in choices[0].iter("Choice") if c.get("value") is not None]


def storage_path(paths: Sequence[str]) -> Path:
    """The folder to give the project's "Local files" storage: the common folder of the images."""
    if not paths:
        return Path(os.path.abspath(os.sep))
    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]))


def document_root(paths: Sequence[str], root: str | os.PathLike[str] | None = None) -> Path:
    """The folder Label Studio serves local files from (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``): ``root``
    (every image must lie inside it), or by default the parent of the images' common folder — Label Studio
    refuses a storage path equal to the root, so the common folder itself (:func:`storage_path`) is the
    project's storage."""
    if root is not None:
        r = Path(os.path.abspath(os.fspath(root)))
        outside = [p for p in paths if not _inside(p, r)]
        if outside:
            needed = os.path.commonpath([str(r), *(os.path.abspath(p) for p in outside)])
            raise InvalidInputError(
                f"{len(outside)} image(s) lie outside the document root {r}, e.g. {outside[:3]}: Label Studio "
                f"serves only files under its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, so give a document root "
                f"that contains them all (e.g. {needed}) and start Label Studio with it, or keep the images "
                f"under {r}"
            )
        return r
    return storage_path(paths).parent


def storage_paths(paths: Sequence[str], root: Path) -> list[Path]:
    """The folders to give the project's "Local files" storages so that Label Studio serves every image: their
    common folder when it lies strictly below the document ``root``, else one folder per top-level subfolder of
    the root that holds images. Label Studio refuses a storage path equal to its root, so an image directly in
    the root cannot be served: :class:`InvalidInputError` names it (and one outside the root)."""
    if not paths:
        return []
    root = Path(os.path.abspath(root))
    outside = [p for p in paths if not _inside(p, root)]
    if outside:
        document_root(paths, root)  # raises, naming the root they need
    flat = [p for p in paths if Path(os.path.abspath(p)).parent == root]
    if flat:
        raise InvalidInputError(
            f"{len(flat)} image(s) lie directly in the document root {root}, e.g. {flat[:3]}: Label Studio serves "
            "local files only from a storage folder strictly below its root; move them into a subfolder or "
            f"choose a document root above {root}"
        )
    common = storage_path(paths)
    if common != root:
        return [common]
    tops = {root / Path(os.path.abspath(p)).relative_to(root).parts[0] for p in paths}
    return sorted(tops)


def _inside(path: str, root: Path) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), str(root)]) == str(root)
    except ValueError:  # different drives
        return False


def local_file_url(path: str, root: Path) -> str:
    """Label Studio's URL of a local file under the document root."""
    rel = Path(os.path.abspath(path)).relative_to(root).as_posix()
    return LOCAL_FILES_PREFIX + urllib.parse.quote(rel, safe="/")


def path_from_url(url: str, root: Path | None) -> str | None:
    """The file a local-files URL names (``None`` for another URL or without the root)."""
    if root is None or LOCAL_FILES_PREFIX.split("?")[0] not in url:
        return None
    query = urllib.parse.urlparse(url).query
    d = urllib.parse.parse_qs(query).get("d")
    return str(root / d[0]) if d else None


def tasks(
    items: Sequence[SelectedItem], root: Path, model_version: str, classes: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """One Label Studio task per item: in its data the image URL, ``novelty_id``, ``sha256``, ``novelty_score``
    (higher = more novel), ``group`` and ``condition``; the pre-annotation (when the head answered with one of
    ``classes``) whose ``score`` is the head's probability of its answer; the selection's scores in ``meta``."""
    out = []
    for it in items:
        task: dict[str, Any] = {
            "data": {
                TO_NAME: local_file_url(it.path, root),
                "novelty_id": it.id,
                "sha256": it.sha256,
                "novelty_score": it.novelty,
                "group": it.group,
                "condition": it.condition,
            },
            "meta": {
                "source": it.source,
                "rank": it.rank,
                "reason": it.reason,
                "p_value": it.p_value,
                "novelty": it.novelty,
                "prediction": it.prediction,
                "probability": it.probability,
                "path": it.path,
                "group": it.group,
                "condition": it.condition,
            },
        }
        if it.prediction is not None and (classes is None or it.prediction in classes):
            prediction: dict[str, Any] = {
                "model_version": model_version or "unknown",
                "result": [
                    {
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "choices",
                        "value": {"choices": [it.prediction]},
                    }
                ],
            }
            if it.probability is not None:  # Label Studio shows it as the model's confidence
                prediction["score"] = it.probability
            task["predictions"] = [prediction]
        out.append(task)
    return out


def _labeller(completed_by: Any) -> str | None:
    if isinstance(completed_by, dict):
        who = completed_by.get("email") or completed_by.get("username") or completed_by.get("id")
        return None if who in (None, "") else f"human:{who}"
    if isinstance(completed_by, (int, str)) and not isinstance(completed_by, bool) and completed_by != "":
        return f"human:{completed_by}"
    return None


def _choice(result: Any, where: str) -> str | None:
    """The single class chosen in an annotation's result (``None`` when nothing was chosen)."""
    if not isinstance(result, list):
        raise LabelImportError(f"{where}: 'result' must be a list")
    chosen = [
        r
        for r in result
        if isinstance(r, dict) and r.get("type") == "choices" and r.get("from_name", FROM_NAME) == FROM_NAME
    ]
    if not chosen:
        return None
    if len(chosen) > 1:
        raise LabelImportError(f"{where}: {len(chosen)} choice results; the labelling config has one")
    value = chosen[0].get("value")
    values = value.get("choices") if isinstance(value, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise LabelImportError(f"{where}: the choice result has no list of choices")
    if len(values) > 1:
        raise LabelImportError(f"{where}: {len(values)} classes chosen ({values}); one image gets one class")
    return values[0] if values else None


def _latest(annotations: list[Any], where: str) -> dict[str, Any] | None:
    live = []
    for a in annotations:
        if not isinstance(a, dict):
            raise LabelImportError(f"{where}: an annotation is not an object")
        if not a.get("was_cancelled"):
            live.append(a)
    if not live:
        return None
    return max(
        live, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), _id_order(a.get("id")))
    )


def _id_order(value: Any) -> tuple[int, int | float, str]:
    """A sort key for an annotation id that never compares an int with a str: numbers (by value) before text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return (0, value, "")
    return (1, 0, "" if value is None else str(value))


def task_state(task: Any) -> str:
    """``"labelled"`` (its latest annotation that was not cancelled chose a class), ``"skipped"`` (every
    annotation cancelled) or ``"unlabelled"``, as :func:`read_export` reads the task; a task it cannot read
    counts as labelled (the import names what is wrong with it)."""
    if not isinstance(task, dict):
        return "labelled"
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        return "labelled"
    try:
        ann = _latest(annotations, "task")
        if ann is None:
            return "skipped" if annotations else "unlabelled"
        return "unlabelled" if _choice(ann.get("result") or [], "task") is None else "labelled"
    except LabelImportError:
        return "labelled"


def read_export(path: str | os.PathLike[str], *, document_root: Path | None = None) -> LabelsRead:
    """The labels of a Label Studio JSON export (a list of tasks with their annotations)."""
    p = Path(path)
    try:
        obj = json.loads(read_regular_file(p).decode("utf-8-sig"))
    except OSError as e:
        raise LabelImportError(f"{p}: cannot read ({e})") from None
    except ValueError as e:  # not UTF-8, not JSON, or an integer past Python's 4300 digits
        raise LabelImportError(f"{p}: not JSON ({e})") from None
    except RecursionError:
        raise LabelImportError(f"{p}: JSON nested too deeply to be a Label Studio export") from None
    try:
        return _read_tasks(p, obj, document_root)
    except RecursionError:  # str() of a value nested nearly as deep as the parser allows
        raise LabelImportError(f"{p}: JSON nested too deeply to be a Label Studio export") from None


def _read_tasks(p: Path, obj: Any, document_root: Path | None) -> LabelsRead:
    if not isinstance(obj, list) or any(not isinstance(t, dict) or "data" not in t for t in obj):
        raise LabelImportError(
            f"{p}: not a Label Studio JSON export (expected a list of tasks with 'data'; export with exportType=JSON)"
        )
    rows: list[LabelRow] = []
    unlabelled: list[str] = []
    problems: list[str] = []
    for i, task in enumerate(obj):
        data = task["data"] if isinstance(task["data"], dict) else {}
        nid = data.get("novelty_id")
        where = f"{p.name} task {task.get('id', i)}" + (f" ({nid})" if nid else "")
        url = data.get(TO_NAME)
        path_hint = path_from_url(url, document_root) if isinstance(url, str) else None
        if "annotations" in task and not isinstance(task["annotations"], list):
            problems.append(f"{where}: 'annotations' must be a list")
            continue
        try:
            ann = _latest(task.get("annotations") or [], where)
            label = None if ann is None else _choice(ann.get("result") or [], where)
            time = None if ann is None else _time(ann, where)
        except LabelImportError as e:
            problems.append(str(e))
            continue
        if ann is None or label is None:
            unlabelled.append(str(nid or url or where))
            continue
        meta = task.get("meta") if isinstance(task.get("meta"), dict) else {}
        rows.append(
            LabelRow(
                where=where,
                label=label,
                id=nid if isinstance(nid, str) else None,
                path=path_hint,
                sha256=data.get("sha256") if isinstance(data.get("sha256"), str) else None,
                labeller=_labeller(ann.get("completed_by")),
                time=time,
                group=_text(data, meta, "group"),
                condition=_text(data, meta, "condition"),
            )
        )
    if problems:
        raise LabelImportError(
            f"{p}: {len(problems)} unreadable task(s), nothing imported: {'; '.join(problems[:20])}"
        )
    return LabelsRead(rows, unlabelled)


def _text(data: dict[str, Any], meta: dict[str, Any], name: str) -> str | None:
    """A task's ``group`` or ``condition``: from its data, else its meta; ``None`` when neither is text."""
    for where in (data, meta):
        value = where.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _time(annotation: dict[str, Any], where: str) -> str | None:
    """When an annotation was last changed (``updated_at``, else ``created_at``) as ISO 8601 UTC; ``None`` when
    it has neither. A time that is not ISO 8601 or lies outside the range of :func:`novelty.clock.parse_time`
    is an error naming the field."""
    for name in ("updated_at", "created_at"):
        value = annotation.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise LabelImportError(f"{where}: {name} must be an ISO-8601 string, got {type(value).__name__}")
        try:
            t = parse_time(value, name)
        except InvalidInputError as e:
            raise LabelImportError(f"{where}: {e}") from None
        return None if t is None else iso(t)
    return None
