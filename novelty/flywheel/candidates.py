"""Where the candidates of a pool come from: each source read into :class:`Candidate` s, an image with a real
file, its content hash, where it came from and, when the source carried it, its embedding
(:func:`~novelty.flywheel.pools.build_pool` deduplicates and scores them).

Sources:

- **results files** of ``novelty score`` (``.parquet``, ``.csv``, ``.jsonl``): one candidate per scored row; rows
  with an ``error`` (unreadable when scored) are skipped and counted. The ``embedding`` column (``novelty score
  --embeddings``) is used when the results were scored by this very detector (same ``detector_id``); otherwise
  the files are embedded again with the detector's backbone (an embedding of another backbone would be
  meaningless here). Provenance ``results:<file>``.
- **images**: folders, globs, path lists, zip/tar archives, files (:func:`~novelty.batch.sources.expand_inputs`),
  embedded with the detector's backbone; unreadable ones are skipped and counted. Provenance ``folder:<input>``.
- the **flag store** (:func:`~novelty.flags.open_flag_store`: a store directory, its ``flags.db``, or a
  ``postgresql://`` URL): each flagged image is written to ``images_dir/<sha256>.<ext>`` so that it has a real
  path (so is every archive member). Provenance ``flag:<flag id>``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from novelty.batch.results import iter_result_columns, result_columns
from novelty.batch.schema import decode_embedding
from novelty.batch.sources import expand_inputs, item_for_row
from novelty.batch.timestamps import image_timestamp
from novelty.clock import iso, iso_seconds
from novelty.discovery import IMAGE_SUFFIXES
from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import atomic_write_bytes, sha256_bytes, sha256_file
from novelty.flags import FlagStoreError, open_flag_store

if TYPE_CHECKING:
    from novelty.batch.items import InputItem

log = logging.getLogger("novelty.flywheel.pools")  # one logger for the pool and its sources

__all__ = [
    "Candidate",
    "PoolError",
    "candidates_from_flags",
    "candidates_from_images",
    "candidates_from_results",
    "image_suffix",
    "iso_time",
]

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tif"),
    (b"MM\x00*", 0, "tif"),
    (b"WEBP", 8, "webp"),
)


class PoolError(NoveltyError):
    """A source of candidates cannot be read or does not fit the detector (the message names it and why)."""


@dataclass
class Candidate:
    """One image found in a source, before deduplication and scoring."""

    path: str  # a real file
    sha256: str
    source: str  # "results:<file>", "folder:<input>", "flag:<id>"
    timestamp: str | None = None  # ISO 8601 UTC
    embedding: np.ndarray | None = None  # float32 (d,), when the source carried one
    group: str | None = None  # images of one group are near-duplicates (a flag's metadata ``group``)
    condition: str | None = None  # what the image shows (a flag's metadata ``condition``)


# --- helpers ----------------------------------------------------------------------------------------------
def iso_time(seconds: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC (``2026-11-28T10:00:00Z``, sub-seconds kept); ``None`` for a
    missing time."""
    return iso_seconds(seconds, "auto")


def _iso_dt(t: datetime | None) -> str | None:
    return None if t is None else iso(t, "auto")


def image_suffix(data: bytes, name: str = "") -> str:
    """A file suffix (without the dot) for image bytes: the name's own when it says image, else the format
    told by the first bytes, else ``"img"``."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in IMAGE_SUFFIXES:
        return suffix
    for magic, offset, ext in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return ext
    return "img"


def _store_bytes(data: bytes, images_dir: Path | None, name: str, what: str) -> tuple[str, str]:
    """Write ``data`` to ``images_dir/<sha256>.<ext>`` (once: content-addressed) and return ``(path, sha256)``."""
    if images_dir is None:
        raise PoolError(
            f"{what} has no file of its own: pass images_dir (the CLI uses the folder of --out) so that it can be "
            "written to images_dir/<sha256>.<ext>"
        )
    sha = sha256_bytes(data)
    target = images_dir / f"{sha}.{image_suffix(data, name)}"
    if not (target.is_file() and target.stat().st_size == len(data)):
        images_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return str(target.resolve()), sha


def _item_candidate(
    item: InputItem, source: str, images_dir: Path | None, timestamp: str | None
) -> Candidate:
    """A candidate from a file or an archive member (the member's bytes are written to ``images_dir``);
    raises ``ImageError``/``OSError`` when it cannot be read."""
    if item.member is None:
        path = os.path.abspath(item.path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        return Candidate(path=path, sha256=sha256_file(path), source=source, timestamp=timestamp)
    path, sha = _store_bytes(item.read_bytes(), images_dir, item.member, f"archive member {item.key}")
    return Candidate(path=path, sha256=sha, source=source, timestamp=timestamp)


# --- sources ----------------------------------------------------------------------------------------------
def candidates_from_results(
    path: str | os.PathLike[str],
    *,
    detector_id: str | None = None,
    dim: int | None = None,
    images_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """The scored rows of one results file: ``(candidates, skipped)``.

    The ``embedding`` column is used only when the file was scored by ``detector_id`` (and has ``dim``
    values); otherwise candidates carry no embedding and are embedded again by :func:`build_pool`."""
    p = Path(path)
    names = result_columns(p)
    missing = [c for c in ("key", "path", "error") if c not in names]
    if missing:
        raise PoolError(
            f"{p}: not a results file of `novelty score` (no column {', '.join(missing)}); pass images or "
            "folders as image sources, results files as .parquet/.csv/.jsonl"
        )
    cols = ["key", "path", "error"] + [
        c for c in ("member", "detector_id", "timestamp", "embedding") if c in names
    ]
    source = f"results:{p.resolve()}"
    out: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    reembed_noted = False
    dir_ = None if images_dir is None else Path(images_dir)
    for batch in iter_result_columns(p, cols):
        for i, key in enumerate(batch["key"]):
            err = batch["error"][i]
            if err:
                skipped.append((str(key), f"unreadable when scored: {err}"))
                continue
            member = str(batch["member"][i] or "") if "member" in batch else ""
            t = batch["timestamp"][i] if "timestamp" in batch else None
            stamp = iso_time(None if t is None else float(t))
            item = item_for_row(str(key), str(batch["path"][i] or ""), member)
            try:
                cand = _item_candidate(item, source, dir_, stamp)
            except (OSError, NoveltyError) as e:
                if isinstance(e, PoolError):
                    raise
                skipped.append((str(key), f"cannot be read now: {e}"))
                continue
            text = batch["embedding"][i] if "embedding" in batch else ""
            scored_by = batch["detector_id"][i] if "detector_id" in batch else None
            if text and detector_id is not None and scored_by == detector_id:
                try:
                    vec = decode_embedding(str(text), dim)
                except InvalidInputError as e:
                    raise PoolError(f"{p}: row {key!r}: {e}") from None
                if vec is not None:
                    v = vec.astype(np.float32)
                    norm = float(np.linalg.norm(v))
                    cand.embedding = v / norm if norm > 0 else v
            elif text and not reembed_noted:
                log.warning(
                    "%s was scored by detector %s, not by %s: its embeddings are not used, the images are "
                    "embedded again",
                    p,
                    str(scored_by)[:16],
                    str(detector_id)[:16],
                )
                reembed_noted = True
            out.append(cand)
    return out, skipped


def candidates_from_images(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    images_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """The images of folders, globs, path lists, archives or files: ``(candidates, skipped)``."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    dir_ = None if images_dir is None else Path(images_dir)
    out: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    for raw in inputs:
        source = f"folder:{os.fspath(raw)}"
        for item in expand_inputs([raw]):
            if item.error is not None:
                skipped.append((item.key, item.error))
                continue
            t, _ = image_timestamp(item)
            try:
                out.append(_item_candidate(item, source, dir_, iso_time(t)))
            except PoolError:
                raise
            except (OSError, NoveltyError) as e:
                skipped.append((item.key, str(e)))
    return out, skipped


def _open_store(location: str) -> Any:
    loc = str(location)
    if not loc.startswith(("postgresql://", "postgres://")):
        folder = Path(loc[len("sqlite://") :] if loc.startswith("sqlite://") else loc)
        if folder.is_file() and folder.name == "flags.db":
            folder = folder.parent
        if not (folder / "flags.db").is_file():
            raise PoolError(
                f"no flag store at {folder}: expected a folder holding flags.db (as `novelty serve "
                "--flag-store` writes it), its flags.db, or a postgresql:// URL"
            )
        loc = str(folder)
    return open_flag_store(loc)


def _meta_text(metadata: Mapping[str, Any], key: str) -> str | None:
    """A flag's ``metadata[key]`` as text (a number becomes its text); ``None`` when absent, empty or not a
    scalar."""
    v = metadata.get(key) if isinstance(metadata, Mapping) else None
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        return None
    text = str(v).strip()
    return text or None


def candidates_from_flags(
    location: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None,
    since: datetime | str | None = None,
) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Every flag of the store (received at or after ``since``), its image written to ``images_dir``. A flag's
    metadata ``group`` and ``condition`` (as the service's client sends them) become the candidate's: they
    travel through the selection, the export and the import into the datasets, where the new slice is drawn
    by group."""
    dir_ = None if images_dir is None else Path(images_dir)
    store = _open_store(os.fspath(location))
    out: list[Candidate] = []
    skipped: list[tuple[str, str]] = []
    try:
        after: str | None = None
        while True:
            page = store.list(since, after=after, limit=1000)
            for flag in page:
                try:
                    data = store.image(flag.id)
                except FlagStoreError as e:
                    skipped.append((f"flag:{flag.id}", str(e)))
                    continue
                if sha256_bytes(data) != flag.sha256:
                    skipped.append((f"flag:{flag.id}", "its image bytes do not match the stored sha256"))
                    continue
                path, sha = _store_bytes(data, dir_, "", f"flag {flag.id}")
                stamp = _iso_dt(flag.captured_at) or _iso_dt(flag.received_at)
                out.append(
                    Candidate(
                        path=path,
                        sha256=sha,
                        source=f"flag:{flag.id}",
                        timestamp=stamp,
                        group=_meta_text(flag.metadata, "group"),
                        condition=_meta_text(flag.metadata, "condition"),
                    )
                )
            if len(page) < 1000:
                break
            after = page[-1].id
    finally:
        store.close()
    return out, skipped
