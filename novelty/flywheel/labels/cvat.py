"""CVAT: the "CVAT for images 1.1" XML of an export, and the reader of the same format exported back.

The export holds a ``<meta><task>`` block with one label per class (type ``tag``) and one ``<image>`` per item
(``name``: its path relative to the common folder of the images, which is how CVAT names files of a task made
from that folder; ``width``/``height`` from the file) with the head's answer as ``<tag label=… source="auto">``.
Create the task from the files listed in ``images.txt``, then upload ``annotations.xml`` as "CVAT for images 1.1"
to see the pre-annotations. Exporting the task in the same format gives the file :func:`read_annotations` reads:
the ``<tag>`` of each image is its label (an image with none is unlabelled), matched back by its name. Every label
has two free-text attributes, ``group`` and ``condition``: a pre-annotation carries the selection's values, and
what a person writes there comes back with the label (an empty one leaves the selection's).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from novelty.errors import InvalidInputError
from novelty.fileio import read_regular_file
from novelty.flywheel.dataset import _listing, now_iso
from novelty.flywheel.labels.rows import LabelImportError, LabelRow, LabelsRead
from novelty.flywheel.selection import SelectedItem

__all__ = ["annotations_xml", "common_root", "read_annotations"]

#: the free-text attributes of every label: where the image came from, what it shows
ATTRIBUTES = ("group", "condition")
#: the name of the XML field that carries the image's root folder (a comment CVAT ignores)
_ROOT_COMMENT = "novelty-image-root: "


def common_root(paths: Sequence[str]) -> Path:
    if not paths:
        return Path(os.path.abspath(os.sep))
    return Path(os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]))


def _size(path: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (OSError, UnidentifiedImageError) as e:
        raise InvalidInputError(f"{path}: cannot read the image's size for CVAT ({e})") from None


def annotations_xml(items: Sequence[SelectedItem], classes: Sequence[str], root: Path) -> str:
    """The "CVAT for images 1.1" annotations of ``items`` with their pre-annotations."""
    if not classes:
        raise InvalidInputError("a CVAT task needs at least one label")
    ann = ET.Element("annotations")
    ann.append(ET.Comment(f" {_ROOT_COMMENT}{root} "))
    ET.SubElement(ann, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(ann, "meta"), "task")
    for tag, text in (
        ("id", "0"),
        ("name", "novelty selection"),
        ("size", str(len(items))),
        ("mode", "annotation"),
        ("overlap", "0"),
        ("flipped", "False"),
        ("created", now_iso()),
        ("updated", now_iso()),
    ):
        ET.SubElement(task, tag).text = text
    labels = ET.SubElement(task, "labels")
    for c in classes:
        lab = ET.SubElement(labels, "label")
        ET.SubElement(lab, "name").text = c
        ET.SubElement(lab, "type").text = "tag"
        attrs = ET.SubElement(lab, "attributes")
        for attr in ATTRIBUTES:  # free text on every tag: where the image came from, what it shows
            a = ET.SubElement(attrs, "attribute")
            for tag, text in (
                ("name", attr),
                ("mutable", "False"),
                ("input_type", "text"),
                ("default_value", ""),
                ("values", ""),
            ):
                ET.SubElement(a, tag).text = text
    for i, it in enumerate(items):
        w, h = _size(it.path)
        name = Path(os.path.abspath(it.path)).relative_to(root).as_posix()
        img = ET.SubElement(ann, "image", id=str(i), name=name, width=str(w), height=str(h))
        if it.prediction is not None and it.prediction in classes:
            pre = ET.SubElement(img, "tag", label=it.prediction, source="auto")
            for attr, value in (("group", it.group), ("condition", it.condition)):
                if value is not None:
                    ET.SubElement(pre, "attribute", name=attr).text = value
    ET.indent(ann)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(ann, encoding="unicode") + "\n"


def _attributes(tags: Sequence[ET.Element]) -> dict[str, str]:
    """The image's ``group`` and ``condition`` from its tags' attributes (the first non-empty value of each)."""
    out: dict[str, str] = {}
    for t in tags:
        for a in t.findall("attribute"):
            name, text = a.get("name"), (a.text or "").strip()
            if name in ATTRIBUTES and text and name not in out:
                out[name] = text
    return out


def read_annotations(
    path: str | os.PathLike[str], *, image_root: str | os.PathLike[str] | None = None
) -> LabelsRead:
    """The labels of a "CVAT for images 1.1" file: each image's ``<tag>``, its path under ``image_root``
    (default: the root written by the export, else the file's folder)."""
    p = Path(path)
    try:
        data = read_regular_file(p)
    except OSError as e:
        raise LabelImportError(f"{p}: cannot read ({e})") from None
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise LabelImportError(f"{p}: XML with a DOCTYPE or entities is not accepted")
    try:
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))
        rootel = ET.fromstring(data, parser=parser)
    except ET.ParseError as e:
        raise LabelImportError(f"{p}: not well-formed XML ({e})") from None
    if rootel.tag != "annotations":
        raise LabelImportError(f"{p}: not a CVAT for images file (the root element is <{rootel.tag}>)")
    root = Path(image_root) if image_root is not None else None
    if root is None:
        for node in rootel.iter():
            if node.tag is ET.Comment and (node.text or "").strip().startswith(_ROOT_COMMENT):
                root = Path((node.text or "").strip()[len(_ROOT_COMMENT) :])
                break
    if root is None:
        root = p.parent
    rows: list[LabelRow] = []
    unlabelled: list[str] = []
    problems: list[str] = []
    for img in rootel.findall("image"):
        name = img.get("name")
        where = f"{p.name} image {img.get('id')} ({name})"
        if not name:
            problems.append(f"{where}: no name")
            continue
        tags = [t.get("label") for t in img.findall("tag")]
        if not tags:
            unlabelled.append(name)
            continue
        if any(not t for t in tags):
            problems.append(f"{where}: a <tag> without a label")
            continue
        if len(set(tags)) > 1:
            problems.append(f"{where}: {len(tags)} different tags {tags}; one image gets one class")
            continue
        attrs = _attributes(img.findall("tag"))
        rows.append(
            LabelRow(
                where=where,
                label=str(tags[0]),
                path=str(root / name),
                name=Path(name).name,
                group=attrs.get("group"),
                condition=attrs.get("condition"),
            )
        )
    if problems:
        raise LabelImportError(f"{p}: {len(problems)} problem(s), nothing imported: {_listing(problems)}")
    return LabelsRead(rows, unlabelled)
