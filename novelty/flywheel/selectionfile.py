"""The selection record (:class:`Selection`, :class:`SelectedItem`) and its one reader.

``selection.json`` (the flywheel's shared format)::

    {"format": "novelty-selection", "format_version": 1, "created": ISO, "strategy", "budget", "seed",
     "weights": {...}, "detector_id", "model_version", "classes": [...], "alpha",
     "items": [{"id", "path", "sha256", "source", "rank", "reason", "p_value", "novelty", "is_novel",
                "prediction", "probability", "uncertainty", "timestamp", "sources", "scores",
                "trusted", "competence"}],
     "radius", "pool": {"n", "n_skipped", "n_already_labelled", "labelled_in"}, "uncertainty_measure",
     "trust": {"rule", "risk", "delta", "thresholds": {"0.01": λ, "0.02": λ, "0.05": λ, "0.1": λ, …}} | null}

``sources`` (every place the image was found) and ``scores`` (the strategy's numbers), ``radius``, ``pool``
and ``uncertainty_measure`` (what each item's ``uncertainty`` measures; ``null`` without a head) are additions
that readers may ignore. This module is the one reader of the file, in two modes: :meth:`Selection.load`
(strict) wants every field ``novelty select`` writes; :func:`read_selection` (what labelling reads: lenient,
for selections written by hand or by an older novelty) wants only each item's ``id``, ``path`` and ``sha256``.
``trusted`` (the detector's verdict: not novel and competent, :mod:`novelty.trust`), ``competence`` and the
``trust`` header (the decision's rule, ε, δ and its competence threshold at other ε,
:func:`~novelty.flywheel.pools.trust_header`) are what auto-accept decides on; selections written before them
read as ``null`` (no trust decision: auto-accept keeps its old rule for them).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import atomic_write_text, read_regular_file, sha256_bytes
from novelty.flywheel.entries import _listing
from novelty.flywheel.pools import check_trust_header

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "STRATEGIES",
    "UNCERTAINTY_MEASURES",
    "SelectedItem",
    "Selection",
    "SelectionError",
    "describe",
    "read_selection",
]

FORMAT = "novelty-selection"
FORMAT_VERSION = 1
STRATEGIES: tuple[str, ...] = ("random", "novelty", "uncertainty", "diversity", "hybrid")
#: how ``uncertainty`` (and ``hybrid``'s uncertainty rank) measures the head's doubt: ``1 − competence`` (the
#: trust decision's score), ``1 − max p``, ``1 − (p₁ − p₂)``; see the module docstring
UNCERTAINTY_MEASURES: tuple[str, ...] = ("competence", "least-confidence", "margin")


class SelectionError(NoveltyError):
    """A selection cannot be made, read or written (the message names the file or the reason)."""


# --- the result -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelectedItem:
    """One chosen image: where it is, why it was chosen (``reason``) and its scores. ``novelty select`` writes
    every field; a selection written by hand or by an older novelty (:func:`read_selection`) may give only
    ``id``, ``path`` and ``sha256``: ``source`` and ``reason`` then read as "", ``rank`` as 0, the rest as
    ``None``."""

    id: str
    path: str
    sha256: str
    source: str = ""
    rank: int = 0  # 1 = chosen first (0: not given)
    reason: str = ""
    p_value: float | None = None
    novelty: float | None = None
    is_novel: bool | None = None
    prediction: str | None = None
    probability: float | None = None
    uncertainty: float | None = None
    timestamp: str | None = None
    sources: tuple[str, ...] = ()
    scores: Mapping[str, float | None] = field(default_factory=dict)
    trusted: bool | None = None  # the head's answer may be acted on (None: no head, or an older selection)
    competence: float | None = None  # the trust rule's score (None: no trust decision)
    nearest: str | None = None  # the id of the nearest training image (auto-accept's first-turn audit)
    group: str | None = None  # the image's group, where its source gave one (flag metadata)
    condition: str | None = None  # the image's condition, where its source gave one

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "sha256": self.sha256,
            "source": self.source,
            "rank": self.rank,
            "reason": self.reason,
            "p_value": self.p_value,
            "novelty": self.novelty,
            "is_novel": self.is_novel,
            "prediction": self.prediction,
            "probability": self.probability,
            "uncertainty": self.uncertainty,
            "timestamp": self.timestamp,
            "sources": list(self.sources),
            "scores": dict(self.scores),
            "trusted": self.trusted,
            "competence": self.competence,
            **({"nearest": self.nearest} if self.nearest is not None else {}),
            **({"group": self.group} if self.group is not None else {}),
            **({"condition": self.condition} if self.condition is not None else {}),
        }


@dataclass
class Selection:
    """The images chosen from a pool, in the order they were chosen, with what chose them.

    :meth:`load` reads a file as :meth:`save` writes it; :func:`read_selection` reads any selection file
    leniently and records which (``path``, ``sha256``)."""

    strategy: str
    budget: int
    seed: int
    weights: dict[str, float]
    detector_id: str
    model_version: str
    classes: list[Any]
    alpha: float
    items: list[SelectedItem]
    created: str = ""
    radius: float | None = None
    pool_size: int | None = None
    n_skipped: int | None = None
    trust: dict[str, Any] | None = None  # the detector's trust decision (pools.trust_header); None: none
    measure: str | None = None  # what the items' ``uncertainty`` measures; None: no head
    n_already_labelled: int | None = None  # pool images left out: a dataset given labels them already
    labelled_in: list[str] = field(default_factory=list)  # the datasets that were checked
    positions: list[int] = field(default_factory=list, repr=False)  # rows of the pool (not saved)
    path: str | None = field(default=None, compare=False)  # the file read_selection read (not saved)
    sha256: str | None = field(default=None, compare=False, repr=False)  # of that file's bytes (not saved)
    _index: tuple[Any, ...] = field(default=(), init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.items)

    def by_id(self, item_id: str) -> SelectedItem | None:
        return self._lookup()[0].get(item_id)

    def by_path(self, path: str) -> SelectedItem | None:
        """The item of a file, however its path is spelled (compared absolute and normalised)."""
        return self._lookup()[1].get(_norm(path))

    def _lookup(self) -> tuple[dict[str, SelectedItem], dict[str, SelectedItem]]:
        if not self._index or self._index[0] is not self.items or self._index[1] != len(self.items):
            by_id = {it.id: it for it in self.items}
            self._index = (self.items, len(self.items), by_id, {_norm(it.path): it for it in self.items})
        return self._index[2], self._index[3]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "strategy": self.strategy,
            "budget": self.budget,
            "seed": self.seed,
            "weights": dict(self.weights),
            "detector_id": self.detector_id,
            "model_version": self.model_version,
            "classes": list(self.classes),
            "alpha": self.alpha,
            "radius": self.radius,
            "pool": {
                "n": self.pool_size,
                "n_skipped": self.n_skipped,
                "n_already_labelled": self.n_already_labelled,
                "labelled_in": list(self.labelled_in),
            },
            "trust": None if self.trust is None else dict(self.trust),
            "uncertainty_measure": self.measure,
            "items": [it.to_json() for it in self.items],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``selection.json`` atomically (complete or absent) and return its path."""
        p = Path(path)
        if p.is_dir():
            raise SelectionError(
                f"{p} is a directory; give the selection file to write, e.g. {p}/selection.json"
            )
        p.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
        return atomic_write_text(p, text)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Selection:
        """Read and check a ``selection.json`` as :meth:`save` writes it (strictly, see :func:`_parse`);
        :class:`SelectionError` names the file and what is wrong."""
        p = Path(path)
        return cls.from_json(_read_json(p, strict=True)[0], source=str(p))

    @classmethod
    def from_json(cls, data: Any, *, source: str = "selection") -> Selection:
        return _parse(data, source, strict=True)


# --- reading selection.json -------------------------------------------------------------------------------
def read_selection(selection: Any) -> Selection:
    """A selection as labelling reads it: from a ``selection.json`` path, its parsed dict, or a
    :class:`Selection` (read again from its JSON). Lenient, for selections written by hand or by an older
    novelty (see :func:`_parse`); :class:`InvalidInputError` names what is wrong. A file is recorded as
    ``path`` (absolute) and ``sha256`` (of its bytes)."""
    path: str | None = None
    digest: str | None = None
    if isinstance(selection, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(selection))
        data, digest = _read_json(Path(path), strict=False)
    elif isinstance(selection, Mapping):
        data = dict(selection)
    elif callable(getattr(selection, "to_json", None)):
        data = selection.to_json()
        if isinstance(selection, Selection):  # one read_selection made keeps its file
            path, digest = selection.path, selection.sha256
    else:
        raise InvalidInputError(
            f"expected a selection.json path or a Selection, got {type(selection).__name__}"
        )
    sel = _parse(data, path or "selection", strict=False)
    sel.path, sel.sha256 = path, digest
    return sel


def _read_json(path: Path, *, strict: bool) -> tuple[Any, str]:
    """The parsed JSON of a selection file and the sha256 of its bytes."""
    try:
        raw = read_regular_file(path)
    except FileNotFoundError:
        raise _error(strict)(f"{path}: no such selection file") from None
    except OSError as e:
        raise _error(strict)(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return json.loads(raw.decode("utf-8")), sha256_bytes(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise _error(strict)(f"{path}: not a selection file (not UTF-8 JSON: {e})") from None


def _error(strict: bool) -> type[NoveltyError]:
    return SelectionError if strict else InvalidInputError


def _parse(data: Any, source: str, *, strict: bool) -> Selection:
    """The one reader of ``selection.json`` (its parsed JSON; ``source`` names it in errors).

    ``strict`` (:meth:`Selection.load`; :class:`SelectionError`): a file as ``novelty select`` writes it, every
    field it writes there with its type, paths absolute, sha256 hex digests, ranks 1..n; the first problem is
    the error. Lenient (:func:`read_selection`; :class:`InvalidInputError`): what export and import rely on —
    ``format``, each item's ``id``, ``path`` (made absolute) and ``sha256``, unique ids, the classes, ``alpha``
    (default 0.05), each item's scores and trust fields (a number, a string, a boolean or null) and the trust
    header; every other field may be absent and reads as its default (text "", a rank 0; the header's
    bookkeeping, such as budget or weights, also when it is malformed). Every bad item is listed in one error.
    A file the strict reader accepts, the lenient one reads as the same selection."""

    def bad(what: str) -> NoveltyError:
        return _error(strict)(f"{source}: {what}")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise bad(
            f"not a selection file (format {got!r}, expected {FORMAT!r})"
            if strict
            else f"not a novelty selection (format must be {FORMAT!r})"
        )
    if strict and data.get("format_version") != FORMAT_VERSION:
        raise bad(
            f"format_version {data.get('format_version')!r} is not supported (this novelty reads "
            f"{FORMAT_VERSION}); select again with this version"
        )
    r = _Fields(data, strict, bad)
    strategy = r.text("strategy")
    if strict and strategy not in STRATEGIES:
        raise bad(f"unknown strategy {strategy!r}")
    weights = data.get("weights")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and _is_number(v) for k, v in weights.items()
    ):
        if strict:
            raise bad(f"'weights' must map names to numbers, got {weights!r}")
        weights = {}
    classes = data.get("classes") if strict else data.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(c, (str, int)) for c in classes):
        raise bad(f"'classes' must be a list of class names, got {classes!r}")
    alpha = r.number("alpha") if strict else data.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise bad(f"'alpha' must lie strictly between 0 and 1, got {alpha!r}")
    raw_items = data.get("items")
    if not isinstance(raw_items, list):
        raise bad("'items' must be a list")
    items: list[SelectedItem] = []
    problems: list[str] = []
    for i, it in enumerate(raw_items):
        try:
            items.append(_item(it, strict, bad, i))
        except (InvalidInputError, TypeError, ValueError) as e:  # lenient: each bad item is listed
            if strict:
                raise
            problems.append(f"item #{i}: {e}")
    counts = Counter(it.id for it in items)
    twice = sorted(x for x, n in counts.items() if n > 1)
    if strict and twice:
        raise bad(f"item id {twice[0]!r} appears more than once")
    problems += [f"id {x} occurs more than once" for x in twice]
    if problems:
        raise bad(f"{len(problems)} bad item(s): {_listing(problems)}")
    if strict and sorted(it.rank for it in items) != list(range(1, len(items) + 1)):
        raise bad("item ranks must be 1..n, each once")
    try:
        trust = check_trust_header(data.get("trust"))
    except InvalidInputError as e:
        raise bad(str(e)) from None
    measure = data.get("uncertainty_measure")
    if measure is not None and measure not in UNCERTAINTY_MEASURES:
        if strict:
            raise bad(
                f"'uncertainty_measure' must be one of {', '.join(UNCERTAINTY_MEASURES)} or null, got {measure!r}"
            )
        measure = None
    pool_info = data.get("pool")
    pool: dict[str, Any] = pool_info if isinstance(pool_info, dict) else {}
    radius = data.get("radius")
    return Selection(
        strategy=strategy,
        budget=r.integer("budget", minimum=1) if strict else _count(data.get("budget")),
        seed=r.integer("seed", minimum=0) if strict else _count(data.get("seed")),
        weights={k: float(v) for k, v in weights.items()},
        detector_id=r.text("detector_id"),
        model_version=r.text("model_version"),
        classes=[str(c) for c in classes],
        alpha=float(alpha),
        items=sorted(items, key=lambda it: it.rank) if strict else items,
        created=r.text("created"),
        radius=float(radius) if radius is not None and _is_number(radius) else None,
        pool_size=_count(pool.get("n"), None),
        n_skipped=_count(pool.get("n_skipped"), None),
        n_already_labelled=_count(pool.get("n_already_labelled"), None),
        labelled_in=[str(x) for x in pool.get("labelled_in") or [] if isinstance(x, str)],
        trust=trust,
        measure=measure,
    )


def _item(it: Any, strict: bool, bad: Callable[[str], NoveltyError], i: int) -> SelectedItem:
    """One item of ``items`` (see :func:`_parse`). Strict: a problem is ``bad`` naming ``items[i]``; lenient:
    an :class:`InvalidInputError` (or a ``TypeError``/``ValueError`` of a rank that is no integer) the caller
    lists under ``item #i``."""
    where = f"items[{i}]: " if strict else ""
    fail = bad if strict else InvalidInputError
    if not isinstance(it, dict):
        raise fail(f"{where}expected an object, got {type(it).__name__}")
    r = _Fields(it, strict, fail, where)
    item_id, path, sha = r.name("id"), r.name("path"), r.name("sha256")
    if strict and not os.path.isabs(path):
        raise fail(f"{where}'path' must be absolute, got {path!r}")
    if strict and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise fail(f"{where}'sha256' must be 64 lower-case hex digits, got {sha!r}")
    sources = it.get("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        if strict:
            raise fail(f"{where}'sources' must be a list of strings")
        sources = []
    scores = it.get("scores", {})
    if not isinstance(scores, dict) or not all(v is None or _is_number(v) for v in scores.values()):
        if strict:
            raise fail(f"{where}'scores' must map names to numbers")
        scores = {}
    return SelectedItem(
        id=item_id,
        path=path if strict else _norm(path),
        sha256=sha,
        source=r.text("source"),
        rank=r.integer("rank", minimum=1),
        reason=r.text("reason"),
        p_value=r.number("p_value"),
        novelty=r.number("novelty"),
        is_novel=r.flag("is_novel"),
        prediction=r.text("prediction", optional=True),
        probability=r.number("probability", optional=True),
        uncertainty=r.number("uncertainty", optional=True),
        timestamp=r.text("timestamp", optional=True),
        sources=tuple(sources),
        scores={str(k): (None if v is None else float(v)) for k, v in scores.items()},
        trusted=r.flag("trusted", optional=True),
        competence=r.number("competence", optional=True),
        nearest=r.text("nearest", optional=True),
        group=r.text("group", optional=True),
        condition=r.text("condition", optional=True),
    )


class _Fields:
    """Typed access to the fields of one JSON object of a selection (the header or an item), with errors that
    name the field. Strict: a field ``novelty select`` always writes must be there with its type. Lenient: such
    a field is taken as it comes (text as a string, "" for null; a rank as an integer, 0 for null; ``is_novel``
    as a boolean), except the scores (a number or null); an ``optional`` field must have its type or be null in
    either mode."""

    def __init__(
        self, data: dict[str, Any], strict: bool, bad: Callable[[str], NoveltyError], where: str = ""
    ) -> None:
        self.data, self.strict, self.bad, self.where = data, strict, bad, where

    def _get(self, key: str, optional: bool = False) -> Any:
        if self.strict and not optional and key not in self.data:
            raise self.bad(f"{self.where}missing field {key!r}")
        return self.data.get(key)

    def _wrong(self, key: str, must: str, v: Any) -> NoveltyError:
        return self.bad(f"{self.where}{repr(key) if self.strict else key} must be {must}, got {v!r}")

    def name(self, key: str) -> str:
        """An item's ``id``, ``path`` or ``sha256``: a non-empty string in either mode."""
        v = self._get(key)
        if not isinstance(v, str) or not v:
            raise self._wrong(key, "a non-empty string", v)
        return v

    def text(self, key: str, *, optional: bool = False) -> Any:
        v = self._get(key, optional)
        if not self.strict and not optional:
            return str(v or "")
        if optional and v is None:
            return None
        if not isinstance(v, str):
            raise self._wrong(key, "a string or null" if optional else "a string", v)
        return v

    def integer(self, key: str, *, minimum: int = 0) -> int:
        v = self._get(key)
        if not self.strict:
            return int(v or 0)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self._wrong(key, f"an integer ≥ {minimum}", v)
        return v

    def number(self, key: str, *, optional: bool = False) -> Any:
        """Strict: a finite number (``optional``: or null); lenient: any number but NaN, or null."""
        v = self._get(key, optional)
        if v is None and (optional or not self.strict):
            return None
        if self.strict:
            if not _is_number(v):
                raise self._wrong(key, "a finite number or null" if optional else "a finite number", v)
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
            raise self._wrong(key, "a number or null", v)
        return float(v)

    def flag(self, key: str, *, optional: bool = False) -> bool | None:
        v = self._get(key, optional)
        if not self.strict and not optional:
            return None if v is None else bool(v)
        if isinstance(v, bool) or (optional and v is None):
            return v
        raise self._wrong(key, "true, false or null" if optional else "true or false", v)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any, default: int | None = 0) -> Any:
    """``v`` where it is an integer, else ``default``."""
    return v if isinstance(v, int) and not isinstance(v, bool) else default


def _norm(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def describe(sel: Selection, limit: int = 20) -> str:
    """A short table of a selection: rank, the image's file name (what a person recognises; the id is in
    ``selection.json``), reason (the first ``limit`` items)."""
    width = 28

    def name(it: SelectedItem) -> str:
        n = os.path.basename(it.path) or it.id
        return n if len(n) <= width else n[: width - 1] + "…"

    lines = [f"{'rank':>4}  {'image':<{width}}  reason"]
    for it in sel.items[:limit]:
        lines.append(f"{it.rank:>4}  {name(it):<{width}}  {it.reason}")
    if len(sel.items) > limit:
        lines.append(f"      … {len(sel.items) - limit} more")
    return "\n".join(lines)
