"""What a labelling tool's file says, read and not yet matched to a selection: the records that the readers of
each format (:mod:`~novelty.flywheel.labels.labelstudio`, :mod:`~novelty.flywheel.labels.cvat`, the CSV reader
of :mod:`~novelty.flywheel.labels.labelimport`) produce and the import consumes."""

from __future__ import annotations

from dataclasses import dataclass

from novelty.errors import InvalidInputError

__all__ = ["LabelImportError", "LabelRow", "LabelsRead"]


class LabelImportError(InvalidInputError):
    """A labels file cannot be read or does not fit the selection and the dataset (nothing was imported)."""


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
