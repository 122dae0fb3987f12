"""A selection (``selection.json``) as labelling reads it: the items to label, with their scores.

The selection's owner is :mod:`novelty.flywheel.selection`; this reader takes its file, a parsed dict or a
``Selection`` object and checks only what export and import rely on (ids unique, each item with a path and a
sha256; the trust fields auto-accept decides on), so labelling works with any selection written in the shared
format. A selection written before the trust decision has no ``trusted``, ``competence`` or ``trust``: they
read as ``None``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from novelty.errors import InvalidInputError
from novelty.fileio import read_regular_file, sha256_bytes
from novelty.flywheel.dataset import _listing
from novelty.flywheel.pools import check_trust_header

__all__ = ["SelectedImage", "SelectionData", "read_selection"]


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
    trusted: bool | None = None  # the detector's verdict (None: no head, or a selection older than trust)
    competence: float | None = None  # the trust rule's score (None: no trust decision)
    nearest: str | None = (
        None  # the id of the nearest training image of the selecting detector (None: unknown)
    )


@dataclass(frozen=True)
class SelectionData:
    path: str | None
    model_version: str
    classes: list[str]
    alpha: float
    items: list[SelectedImage]
    strategy: str = ""
    sha256: str | None = None  # of the selection file
    trust: dict[str, Any] | None = None  # the trust header (novelty.flywheel.pools.trust_header); None: none
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


def _opt_bool(v: Any, what: str) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    raise InvalidInputError(f"{what} must be true, false or null, got {v!r}")


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
    elif callable(getattr(selection, "to_json", None)):  # novelty.flywheel.selection.Selection
        obj = selection.to_json()
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
                    nearest=_opt_str(it.get("nearest"), "nearest"),
                    trusted=_opt_bool(it.get("trusted"), "trusted"),
                    competence=_opt_float(it.get("competence"), "competence"),
                )
            )
        except (InvalidInputError, TypeError, ValueError) as e:
            problems.append(f"item #{i}: {e}")
    ids = [it.id for it in items]
    problems += [f"id {x} occurs more than once" for x in sorted({x for x in ids if ids.count(x) > 1})]
    if problems:
        raise InvalidInputError(f"{where}: {len(problems)} bad item(s): {_listing(problems)}")
    classes = obj.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(c, (str, int)) for c in classes):
        raise InvalidInputError(f"{where}: 'classes' must be a list of class names")
    classes = [str(c) for c in classes]
    alpha = obj.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise InvalidInputError(f"{where}: 'alpha' must lie strictly between 0 and 1, got {alpha!r}")
    try:
        trust = check_trust_header(obj.get("trust"))
    except InvalidInputError as e:
        raise InvalidInputError(f"{where}: {e}") from None
    return SelectionData(
        path=path,
        model_version=str(obj.get("model_version") or ""),
        classes=list(classes),
        alpha=float(alpha),
        items=items,
        strategy=str(obj.get("strategy") or ""),
        sha256=digest,
        trust=trust,
    )
