"""Select what to label under a budget: the images of a :class:`~novelty.flywheel.pools.Pool` that teach the
model most, each with the reason it was chosen.

    pool = build_pool(det, ["results.parquet", "inbox/"], flags="novelty-flags", images_dir="sel/images")
    sel = select(pool, 50, "hybrid", seed=0)
    sel.save("sel/selection.json"); sel = Selection.load("sel/selection.json")
    sel.items[0].reason    # 'p=0.0075, novel; head sure (p(dry)=0.97); hybrid score 0.98 …; farthest … (d=0.31)'

Strategies (every one deterministic in ``seed``):

``random``
    a uniform sample of the pool (the baseline every other strategy must beat).
``novelty``
    lowest p-value first; ties (the most novel images share the smallest p-value a calibration set can give)
    broken by the raw score (higher = more novel), then by ``seed``.
``uncertainty``
    the images the model can least vouch for first; refused for a detector without a head. How uncertainty is
    measured (``measure``, :data:`UNCERTAINTY_MEASURES`): ``"competence"``, ``1 − competence``, the trust
    decision's score (:mod:`novelty.trust`: higher = the head more likely right here, from its calibrated
    probability and how often it was right on the nearest labelled images), so the images the trust rule cannot
    vouch for rank first (an image without a competence, unreadable for the rule, counts as competence 0);
    ``"least-confidence"``, ``1 − max p`` of the head; ``"margin"``, ``1 − (p₁ − p₂)``. The default is
    ``"competence"`` when the pool carries the trust decision's competence (``pool.competence``), else
    least confidence (detectors saved before the trust decision). The head's own probability is a weak
    measure: on novel images a head is often wrong *and* sure, which is why least confidence alone misses
    them; competence also asks the labelled neighbourhood, but it is no novelty test either.
``diversity``
    greedy k-center on the L2-normalised embeddings (cosine distance ``1 − cos``): each step takes the candidate
    farthest from everything already covered. Coverage starts from the training data: each candidate's
    distance to its nearest training embedding (the detector's FAISS index, ``pool.train_distance``) counts as
    a centre already chosen, so the first picks are what the training data lacks most. Near-duplicates are
    removed by ``radius``: a candidate within ``radius`` of an image already chosen is skipped (so a budget
    may end unspent when the pool holds fewer distinct images; a warning says so).
``hybrid``
    novel (and uncertain), then diversified: ``h = w_n · r_novelty + w_u · r_uncertainty`` with ``r`` the rank
    of each image in the pool scaled to [0, 1] (1 = most novel / most uncertain; ties share their mean rank;
    novelty ranks as in ``novelty``, uncertainty by ``measure`` as in ``uncertainty``); the top
    ``oversample × budget`` images by ``h`` are kept, and greedy k-center (with the training coverage and
    ``radius`` as above) picks ``budget`` of them. Defaults:
    :data:`DEFAULT_WEIGHTS` (``w_n`` = 1, ``w_u`` = 0) and :data:`DEFAULT_OVERSAMPLE` (8), the best of a grid
    of weights (1/0, 0.75/0.25, 0.5/0.5) and oversamples (4, 8, 16, 32) on the windshield flywheel benchmark
    (``benchmarks/flywheel.py``), tuned on seeds apart from the reported ones. Why no weight on uncertainty by
    default: on images of conditions it never saw, the head is wrong *and* sure (a tunnel or snow frame gets
    ``p(dry) ≈ 1``), so its uncertainty ranks them low; the weight stays for heads whose doubt means
    something (in-distribution images near the boundary). Why oversample: novelty alone fills a budget with
    the single most extreme condition (the darkest tunnel frames); the k-center step over 8 × budget
    candidates spreads the labels over conditions. Several cells of that grid lie within the seed-to-seed
    spread of the best, and on that benchmark ``diversity`` alone did as well as or better than ``hybrid``
    (``benchmarks/results/flywheel.md``): weigh in uncertainty, or use ``diversity``, where the benchmark of
    your own data says so. Without a head, ``hybrid`` ranks by novelty alone (with a warning).

Every :class:`SelectedItem` carries a human-readable ``reason`` ("p=0.001, novel; head uncertain
(p(wet)=0.52); farthest from the training data and the chosen set (d=0.31)") and the numbers behind it
(``scores``). A budget larger than the pool selects the whole pool, with a warning.

``selection.json`` (the flywheel's shared format)::

    {"format": "novelty-selection", "format_version": 1, "created": ISO, "strategy", "budget", "seed",
     "weights": {...}, "detector_id", "model_version", "classes": [...], "alpha",
     "items": [{"id", "path", "sha256", "source", "rank", "reason", "p_value", "novelty", "is_novel",
                "prediction", "probability", "uncertainty", "timestamp", "sources", "scores",
                "trusted", "competence"}],
     "radius", "pool": {"n", "n_skipped", "n_already_labelled", "labelled_in"}, "uncertainty_measure",
     "trust": {"rule", "risk", "delta", "thresholds": {"0.01": λ, "0.02": λ, "0.05": λ, "0.1": λ, …}} | null}

Images a labelled dataset already labels (``select(..., dataset=...)``, ``novelty select --dataset``; the
flywheel passes its training set, new slice and test set) are left out before choosing, by sha256: no label is
bought twice. ``pool.n_already_labelled`` counts them (``null``: no dataset was given), ``pool.labelled_in``
names the datasets.

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
import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from novelty.coreset import Cosine, farthest_points
from novelty.errors import InvalidInputError, NoveltyError, UnknownNameError
from novelty.fileio import atomic_write_text, read_regular_file, sha256_bytes
from novelty.flywheel.dataset import _listing, labelled_hashes
from novelty.flywheel.pools import Pool, PoolError, build_pool, check_trust_header
from novelty.params import check_int, check_real

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_OVERSAMPLE",
    "DEFAULT_RADIUS",
    "DEFAULT_WEIGHTS",
    "FORMAT",
    "FORMAT_VERSION",
    "STRATEGIES",
    "UNCERTAINTY_MEASURES",
    "Pool",
    "PoolError",
    "SelectedItem",
    "Selection",
    "SelectionError",
    "build_pool",
    "default_measure",
    "k_center",
    "read_selection",
    "select",
    "uncertainty_scores",
]

FORMAT = "novelty-selection"
FORMAT_VERSION = 1
STRATEGIES: tuple[str, ...] = ("random", "novelty", "uncertainty", "diversity", "hybrid")
#: how ``uncertainty`` (and ``hybrid``'s uncertainty rank) measures the head's doubt: ``1 − competence`` (the
#: trust decision's score), ``1 − max p``, ``1 − (p₁ − p₂)``; see the module docstring
UNCERTAINTY_MEASURES: tuple[str, ...] = ("competence", "least-confidence", "margin")
#: hybrid: weights of the novelty rank and the uncertainty rank (see the module docstring)
DEFAULT_WEIGHTS: dict[str, float] = {"novelty": 1.0, "uncertainty": 0.0}
#: hybrid: k-center chooses among the top ``oversample × budget`` images by the weighted rank
DEFAULT_OVERSAMPLE = 8.0
#: diversity and hybrid: candidates within this cosine distance (1 − cos) of a chosen image are skipped; about
#: the distance between neighbouring frames of a video, so a labeller never sees the same moment twice
DEFAULT_RADIUS = 0.01
#: in reasons, the head is "uncertain" below this probability of its answer (the auto-accept threshold)
SURE = 0.9


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


# --- the strategies ---------------------------------------------------------------------------------------
def default_measure(pool: Pool) -> str:
    """The uncertainty measure used when none is given: ``"competence"`` when the pool carries the trust
    decision's competence for some image, else ``"least-confidence"`` (a detector saved before the trust
    decision, or one that keeps the legacy rule)."""
    comp = pool.competence
    return "competence" if comp is not None and bool(np.isfinite(comp).any()) else "least-confidence"


def _check_measure(measure: str | None, pool: Pool) -> str:
    if measure is None:
        return default_measure(pool)
    if not isinstance(measure, str) or measure not in UNCERTAINTY_MEASURES:
        raise UnknownNameError(
            f"unknown uncertainty measure {measure!r}; use one of {', '.join(UNCERTAINTY_MEASURES)}"
        )
    return measure


def uncertainty_scores(pool: Pool, measure: str | None = None) -> np.ndarray:
    """The head's uncertainty per image, higher = less certain: ``1 − competence`` (``"competence"``, the trust
    decision's score; an image without one counts as competence 0), ``1 − max p`` (``"least-confidence"``) or
    ``1 − (p₁ − p₂)`` (``"margin"``); ``None``: :func:`default_measure`. :class:`SelectionError` when the
    detector that scored the pool has no head, or, for ``"competence"``, no trust decision."""
    measure = _check_measure(measure, pool)
    if pool.probabilities is None:
        raise SelectionError(
            "uncertainty needs the detector's condition head, and this detector has none: fit it with labels "
            "(novelty fit --labels), or choose --strategy novelty, diversity or random"
        )
    if measure == "competence":
        comp = pool.competence
        if comp is None or not np.isfinite(comp).any():
            raise SelectionError(
                "the uncertainty measure 'competence' needs the trust decision's competence, and this "
                "detector has none (saved before the trust decision, or keeping the legacy rule): choose "
                "least-confidence or margin, or refit the detector with labels"
            )
        return 1.0 - np.clip(np.nan_to_num(comp, nan=0.0), 0.0, 1.0)
    p = np.sort(pool.probabilities, axis=1)
    if measure == "margin" and p.shape[1] >= 2:
        return 1.0 - (p[:, -1] - p[:, -2])
    return 1.0 - p[:, -1]


def _scaled_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks of ``values`` scaled to [0, 1] (1 = largest), ties sharing their mean rank."""
    n = values.shape[0]
    if n == 1:
        return np.ones(1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    mean_rank = starts + (counts - 1) / 2.0  # 0-based, ascending
    return mean_rank[inverse] / (n - 1)


def _novelty_key(pool: Pool) -> np.ndarray:
    """A value per image that orders by novelty: lowest p-value first, then the highest raw score."""
    p = np.nan_to_num(pool.p_value, nan=1.0)
    s = np.nan_to_num(pool.score, nan=-np.inf)
    order = np.lexsort((-s, p))  # most novel first
    key = np.empty(len(pool))
    key[order] = np.arange(len(pool))[::-1]  # larger = more novel
    # equal (p, score) pairs share a key
    same = np.zeros(len(pool), dtype=bool)
    same[1:] = (p[order][1:] == p[order][:-1]) & (s[order][1:] == s[order][:-1])
    for j in np.flatnonzero(same):
        key[order[j]] = key[order[j - 1]]
    return key


def _order(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positions by ``values``, largest first; ties in a random order drawn from ``rng``."""
    tiebreak = rng.permutation(values.shape[0])
    return np.lexsort((tiebreak, -values))


def k_center(
    embeddings: np.ndarray,
    budget: int,
    *,
    covered: np.ndarray | None = None,
    radius: float = 0.0,
    priority: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center on L2-normalised ``embeddings`` with cosine distance ``1 − cos``.

    ``covered``: each point's distance to centres chosen before (the training data); ``None`` → nothing is
    covered and the first pick is the best by ``priority``. Each step picks the point farthest from every
    centre (ties: lowest ``priority``, default a random order from ``seed``) and skips from then on every point
    within ``radius`` of a picked one. Returns ``(positions, distances)``: the picks in order and each one's
    distance to the nearest centre when it was picked (``inf`` for an uncovered first pick). Stops early when
    every point left lies within ``radius`` of a pick.
    """
    x = Cosine(embeddings)
    if priority is None:
        priority = np.random.default_rng(seed).permutation(x.shape[1]).astype(np.float64)
    cov = None if covered is None else np.asarray(covered, dtype=np.float64)
    picks, dists = farthest_points(x, budget, covered=cov, radius=radius, priority=priority)
    return picks[0], dists[0].astype(np.float64)


# --- select -----------------------------------------------------------------------------------------------
def _check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    if not isinstance(weights, Mapping):
        raise InvalidInputError(f"weights must be a mapping such as {DEFAULT_WEIGHTS}, got {weights!r}")
    unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
    if unknown:
        raise InvalidInputError(
            f"unknown weight(s) {', '.join(map(str, unknown))}; hybrid weighs {', '.join(DEFAULT_WEIGHTS)}"
        )
    out = {k: check_real(weights.get(k, 0.0), f"weight {k!r}", low=0.0) for k in DEFAULT_WEIGHTS}
    if sum(out.values()) <= 0:
        raise InvalidInputError(f"at least one hybrid weight must be positive, got {out}")
    return out


def select(
    pool: Pool,
    budget: int,
    strategy: str,
    *,
    seed: int = 0,
    radius: float = DEFAULT_RADIUS,
    weights: Mapping[str, float] | None = None,
    oversample: float = DEFAULT_OVERSAMPLE,
    measure: str | None = None,
    model_version: str | None = None,
    dataset: Any = None,
) -> Selection:
    """Choose ``budget`` images of ``pool`` with ``strategy`` (see the module docstring). ``measure``: how
    ``uncertainty`` and ``hybrid`` measure the head's doubt (:data:`UNCERTAINTY_MEASURES`); ``None``,
    :func:`default_measure` (``"competence"`` when the pool carries it, else ``"least-confidence"``).

    ``dataset``: a labelled dataset (a :class:`~novelty.flywheel.dataset.Dataset` or its directory), or a
    sequence of them; the pool's images these already label (same sha256) are left out before choosing, so the
    budget buys labels only for images without one. How many were left out: ``n_already_labelled``
    (``selection.json`` ``pool.n_already_labelled``); :class:`SelectionError` when that leaves nothing."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise UnknownNameError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    budget = check_int(budget, "budget", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    radius = check_real(radius, "radius", low=0.0, high=2.0)
    oversample = check_real(oversample, "oversample", low=1.0)
    measure = _check_measure(measure, pool)
    w = _check_weights(weights) if strategy == "hybrid" else {}
    n_all = len(pool)
    if n_all == 0:
        raise SelectionError("the pool is empty: nothing to select")
    labelled, labelled_in = labelled_hashes(dataset)
    rows = np.arange(n_all)
    if labelled:
        rows = np.asarray([i for i, s in enumerate(pool.sha256) if s not in labelled], dtype=np.int64)
        if len(rows) == 0:
            raise SelectionError(
                f"every one of the {n_all} images of the pool is labelled already (in "
                f"{', '.join(labelled_in)}): nothing to select"
            )
        if len(rows) < n_all:
            log.info("%d image(s) of the pool are labelled already and left out", n_all - len(rows))
            pool = pool.subset(rows)
    n = len(pool)
    if budget > n:
        warnings.warn(
            f"budget {budget} exceeds the pool ({n} images): every image is selected",
            UserWarning,
            stacklevel=2,
        )
    take = min(budget, n)
    rng = np.random.default_rng(seed)
    # refused here without a head for "uncertainty"; for the others only reported when there is one
    unc = uncertainty_scores(pool, measure) if strategy == "uncertainty" or pool.has_head else None
    nov_key = _novelty_key(pool)
    per_item: dict[str, np.ndarray] = {}
    what: list[str] = []
    distances: np.ndarray | None = None

    if strategy == "random":
        picks = rng.permutation(n)[:take]
        what = [f"drawn at random (seed {seed})"] * take
    elif strategy == "novelty":
        picks = _order(nov_key, rng)[:take]
        what = [f"novelty rank {r + 1} of {n}" for r in range(take)]
    elif strategy == "uncertainty" and unc is not None:
        picks = _order(unc, rng)[:take]
        what = [f"uncertainty rank {r + 1} of {n} ({_MEASURE_WORDS[measure]})" for r in range(take)]
    elif strategy == "diversity":
        picks, distances = k_center(
            pool.embeddings, take, covered=pool.train_distance, radius=radius, seed=seed
        )
        what = [_farthest(d, pool.train_distance is not None) for d in distances]
    else:  # hybrid
        r_n = _scaled_ranks(nov_key)
        if unc is None:
            warnings.warn(
                "the detector has no condition head: hybrid ranks by novelty alone", UserWarning, stacklevel=2
            )
            h = r_n
            r_u = None
        else:
            r_u = _scaled_ranks(unc)
            total = w["novelty"] + w["uncertainty"]
            h = (w["novelty"] * r_n + w["uncertainty"] * r_u) / total
        m = min(n, max(take, math.ceil(oversample * take)))
        top = _order(h, rng)[:m]
        prio = np.arange(m, dtype=np.float64)  # the best by h first on ties
        cov = None if pool.train_distance is None else pool.train_distance[top]
        local, distances = k_center(pool.embeddings[top], take, covered=cov, radius=radius, priority=prio)
        picks = top[local]
        per_item["hybrid"] = h
        per_item["novelty_rank"] = r_n
        if r_u is not None:
            per_item["uncertainty_rank"] = r_u
        what = [
            f"hybrid score {h[i]:.2f} (top {m} of {n} by novelty and uncertainty); "
            + _farthest(d, pool.train_distance is not None)
            for i, d in zip(picks.tolist(), distances, strict=True)
        ]
    if len(picks) < take:
        warnings.warn(
            f"only {len(picks)} of the {take} images asked for were selected: the rest of the pool lies within "
            f"radius={radius:g} of an image already chosen (near-duplicates); lower --radius to take them",
            UserWarning,
            stacklevel=2,
        )
    items = []
    proba = pool.probability
    for rank, (i, why) in enumerate(zip(picks.tolist(), what, strict=True), start=1):
        scores: dict[str, float | None] = {k: float(v[i]) for k, v in per_item.items()}
        if pool.train_distance is not None:
            scores["train_distance"] = float(pool.train_distance[i])
        if distances is not None:
            d = float(distances[rank - 1])
            scores["distance"] = d if math.isfinite(d) else None
        scores["score"] = float(pool.score[i]) if math.isfinite(pool.score[i]) else None
        pred = None if pool.predictions is None else pool.predictions[i]
        prob = None if proba is None else float(proba[i])
        comp = None if pool.competence is None else float(pool.competence[i])
        items.append(
            SelectedItem(
                id=pool.ids[i],
                path=pool.paths[i],
                sha256=pool.sha256[i],
                source=pool.source[i],
                rank=rank,
                reason=_reason(pool, i, why, pred, prob),
                p_value=float(pool.p_value[i]),
                novelty=float(pool.novelty[i]),
                is_novel=bool(pool.is_novel[i]),
                prediction=None if pred is None else str(pred),
                probability=prob,
                uncertainty=None if unc is None else float(unc[i]),
                timestamp=pool.timestamps[i],
                sources=tuple(pool.sources[i]),
                scores=scores,
                trusted=None if pool.trusted is None else bool(pool.trusted[i]),
                competence=comp if comp is not None and math.isfinite(comp) else None,
                nearest=None if pool.nearest is None else pool.nearest[i] or None,
                group=None if pool.groups is None else pool.groups[i],
                condition=None if pool.conditions is None else pool.conditions[i],
            )
        )
    if strategy == "hybrid":
        w = {**w, "oversample": float(oversample)}
    return Selection(
        strategy=strategy,
        budget=budget,
        seed=seed,
        weights=w,
        detector_id=pool.detector_id,
        model_version=model_version or pool.detector_id,
        classes=[str(c) for c in pool.classes],
        alpha=float(pool.alpha),
        items=items,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        radius=radius if strategy in ("diversity", "hybrid") else None,
        pool_size=n_all,
        n_skipped=pool.n_skipped,
        trust=None if pool.trust is None else dict(pool.trust),
        measure=None if unc is None else measure,
        n_already_labelled=None if dataset is None else n_all - n,
        labelled_in=labelled_in,
        positions=[int(rows[i]) for i in picks],
    )


_MEASURE_WORDS = {
    "competence": "1 − competence",
    "least-confidence": "least confidence",
    "margin": "margin",
}


def _farthest(d: float, covered: bool) -> str:
    if not math.isfinite(d):
        return "first centre (nothing covered yet)"
    where = "the training data and the chosen set" if covered else "the chosen set"
    return f"farthest from {where} (d={d:.2f})"


def _reason(pool: Pool, i: int, why: str, pred: Any, prob: float | None) -> str:
    p = float(pool.p_value[i])
    parts = [f"p={p:.2g}, {'novel' if pool.is_novel[i] else 'not novel'}"]
    if pred is not None and prob is not None:
        trust = "" if pool.trusted is None else (", trusted" if pool.trusted[i] else ", not trusted")
        parts.append(f"head {'sure' if prob >= SURE else 'uncertain'} (p({pred})={prob:.2f}){trust}")
    parts.append(why)
    return "; ".join(parts)


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
