"""A self-contained HTML report of a batch's results: what is new in this archive, at a glance.

    build_report(rows, "report.html", calibration_scores=cal, alpha=0.05)
    report_from_files("results.parquet", "detector/", "report.html")

One HTML file with everything inline (CSS, a hand-drawn SVG histogram, base64 JPEG thumbnails of at most
160 px) and no external reference at all, so it can be mailed, archived or opened offline:

- counts: inputs, scored, flagged as novel at ``alpha`` (with their share of the scored ones), unreadable;
- the detector's description, when given;
- a histogram of this archive's scores against the in-distribution calibration scores, with the score above
  which an image is flagged at ``alpha``;
- predictions of the condition head (if any) by trusted / untrusted;
- the ``top_n`` most novel images as cards: thumbnail, key, novelty, p-value, score, prediction, and the
  nearest training images with their distances (a placeholder box with the reason when a thumbnail is
  missing);
- every unreadable input with its reason.

All text from the rows (keys, errors, predictions, ids) is HTML-escaped. A thumbnail that cannot be made never
breaks the report: the placeholder says why.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import importlib
import io
import json
import math
import os
import re
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "THUMBNAIL_SIZE",
    "build_report",
    "load_neighbor_thumbnail",
    "load_row_thumbnail",
    "read_rows",
    "report_from_files",
]

#: the longest side of the embedded thumbnails, in pixels
THUMBNAIL_SIZE = 160
#: nearest training images shown per card, and the longest side of their thumbnails (shown at 72 px)
MAX_NEIGHBORS = 5
NEIGHBOR_THUMBNAIL_SIZE = 120
#: archive members larger than this are not read for a thumbnail
_MAX_MEMBER_BYTES = 512 * 1024 * 1024
_JPEG_QUALITY = 82

_INT_COLUMNS = ("bytes", "width", "height")
_BOOL_COLUMNS = ("is_novel", "trusted")


# --- thumbnails ----------------------------------------------------------------------------------------
class _ArchiveMember:
    """A member of a zip or tar archive (``key``, ``read_bytes()``), read in memory, never extracted."""

    def __init__(self, archive: str | os.PathLike[str], member: str, key: str | None = None):
        self.archive = os.fspath(archive)
        self.member = member
        self.key = key if key is not None else f"{self.archive}::{member}"

    def read_bytes(self) -> bytes:
        return _read_member(self.archive, self.member)


def _read_member(archive: str, member: str) -> bytes:
    """The bytes of ``member`` of a zip, tar, tar.gz/bz2/xz archive (OSError / KeyError when it cannot)."""
    if zipfile.is_zipfile(archive):
        return _read_zip_member(archive, member)
    return _read_tar_member(archive, member)


def _read_zip_member(archive: str, member: str) -> bytes:
    with zipfile.ZipFile(archive) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise KeyError(f"no member {member!r} in the zip archive") from None
        if info.file_size > _MAX_MEMBER_BYTES:
            raise OSError(f"member is {info.file_size:,} bytes, more than a thumbnail is made from")
        with zf.open(info) as f:
            return f.read(_MAX_MEMBER_BYTES + 1)


def _read_tar_member(archive: str, member: str) -> bytes:
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed below; open errors are mapped first
    except tarfile.TarError as e:
        raise OSError(f"not a zip or tar archive ({e})") from e
    with tf:
        names = [member] if member.startswith("./") else [member, "./" + member]
        for name in names:
            try:
                info = tf.getmember(name)
            except KeyError:
                continue
            if not info.isfile():
                raise OSError("archive member is not a regular file")
            if info.size > _MAX_MEMBER_BYTES:
                raise OSError(f"member is {info.size:,} bytes, more than a thumbnail is made from")
            f = tf.extractfile(info)
            if f is None:
                raise OSError("archive member cannot be read")
            with f:
                return f.read()
    raise KeyError(f"no member {member!r} in the tar archive")


def _encode_thumbnail(img: Image.Image, size: int = THUMBNAIL_SIZE) -> bytes:
    img = img.convert("RGB") if img.mode != "RGB" else img.copy()
    img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=_JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def _thumbnail_of(source: Any, size: int = THUMBNAIL_SIZE) -> bytes:
    from novelty.images import load_image

    return _encode_thumbnail(load_image(source, min_size=size), size)


def _split_key(key: str) -> tuple[str, str]:
    archive, _, member = key.partition("::")
    return archive, member


def load_row_thumbnail(row: Mapping[str, Any]) -> bytes | None:
    """The default ``load_thumbnail``: a JPEG thumbnail of the row's file or archive member.

    Raises :class:`novelty.errors.ImageError` (with the reason) when it cannot be decoded.
    """
    member = str(row.get("member") or "")
    path = str(row.get("path") or "")
    key = str(row.get("key") or "")
    if not member and not path and "::" in key:
        path, member = _split_key(key)
    if member:
        return _thumbnail_of(_ArchiveMember(path, member, key or None))
    if not path and not key:
        return None
    return _thumbnail_of(path or key)


def load_neighbor_thumbnail(train_id: str) -> bytes | None:
    """The default ``load_neighbor_thumbnail``: a thumbnail of the training image ``train_id`` when it is a
    file path that exists here (or ``ARCHIVE::MEMBER`` of an archive that exists); ``None`` otherwise."""
    if not train_id:
        return None
    try:
        if os.path.isfile(train_id):
            return _thumbnail_of(train_id)
    except ValueError:  # e.g. an embedded NUL byte
        return None
    if "::" in train_id:
        archive, member = _split_key(train_id)
        if member and os.path.isfile(archive):
            return _thumbnail_of(_ArchiveMember(archive, member, train_id))
    return None


_default_neighbor_loader = load_neighbor_thumbnail


def _normalise_thumbnail(data: bytes, size: int) -> bytes:
    """JPEG bytes of at most ``size`` px from any encoded image (kept as is when it already is one)."""
    if data[:3] == b"\xff\xd8\xff":
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.format == "JPEG" and max(im.size) <= size and im.mode in ("RGB", "L"):
                    im.load()  # a broken JPEG must not reach the page
                    return data
        except Exception:
            pass
    return _thumbnail_of(bytes(data), size)


def _reason(e: BaseException) -> str:
    code = getattr(e, "reason_code", None)
    reason = getattr(e, "reason", None)
    if code and reason:
        return f"{code}: {reason}"
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _make_thumbnail(load: Callable[[Any], bytes | None], arg: Any, size: int) -> tuple[str | None, str]:
    """``(base64 JPEG, "")`` of ``load(arg)``, or ``(None, reason)``; never raises (but KeyboardInterrupt)."""
    try:
        data = load(arg)
        if data is None:
            return None, "no image available"
        if not data:
            return None, "empty image"
        return base64.b64encode(_normalise_thumbnail(bytes(data), size)).decode("ascii"), ""
    except Exception as e:
        return None, _reason(e)


# --- values --------------------------------------------------------------------------------------------
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(value: Any) -> str:
    """Text safe to write as UTF-8: undecodable bytes of file names and control characters made visible."""
    s = value if isinstance(value, str) else str(value)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        try:
            s = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", s)


def _e(value: Any) -> str:
    """HTML-escaped text (quotes included) of any value."""
    return html.escape(_clean(value), quote=True)


def _float(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan if value is None else float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "t", "y")
    if value is None:
        return False
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            parsed = json.loads(value)
        except ValueError:
            return []
        return parsed if isinstance(parsed, list) else []
    return []


def _fmt(x: Any, digits: int = 3) -> str:
    v = _float(x)
    if not math.isfinite(v):
        return "—"
    if v != 0 and (abs(v) < 10**-(digits) or abs(v) >= 10 ** (digits + 3)):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}"


def _fmt_p(x: Any) -> str:
    v = _float(x)
    if not math.isfinite(v):
        return "—"
    return f"{v:.2g}" if v < 0.01 else f"{v:.3f}"


def _error(row: Mapping[str, Any]) -> str:
    err = row.get("error")
    if err is None or (isinstance(err, float) and math.isnan(err)):
        return ""
    return str(err)


def _is_scored(row: Mapping[str, Any]) -> bool:
    return not _error(row) and math.isfinite(_float(row.get("score")))


def _is_flagged(row: Mapping[str, Any], alpha: float) -> bool:
    if _error(row):
        return False
    p = _float(row.get("p_value"))
    if math.isfinite(p):
        return p < alpha
    return _bool(row.get("is_novel"))


# --- histogram -----------------------------------------------------------------------------------------
def _nice_step(span: float, target: int = 6) -> float:
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _tick_label(v: float, step: float) -> str:
    if abs(v) < step * 1e-9:
        v = 0.0
    decimals = max(
        0, -math.floor(math.log10(step)) + (1 if step / 10 ** math.floor(math.log10(step)) == 2.5 else 0)
    )
    if abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-4):
        return f"{v:.2g}"
    return f"{v:.{min(decimals, 6)}f}"


def _plot_range(
    scores: np.ndarray, calibration: np.ndarray | None, threshold: float | None
) -> tuple[float, float, bool]:
    """``(lo, hi, overflow)``: the range the bins cover; far outliers above ``hi`` get a bar of their own.

    With calibration scores, the range spans them (and the threshold) plus their width again on each side:
    an archive of very novel images must not squash the in-distribution reference into one bin."""
    pooled = np.concatenate([scores, calibration]) if calibration is not None else scores
    lo, hi = float(pooled.min()), float(pooled.max())
    if calibration is not None and calibration.size:
        c_lo, c_hi = float(calibration.min()), float(calibration.max())
        if threshold is not None and math.isfinite(threshold):
            c_lo, c_hi = min(c_lo, threshold), max(c_hi, threshold)
        span = (c_hi - c_lo) or max(abs(c_hi), 1.0)
        floor, cap = c_lo - span, c_hi + span
    else:
        q25, q75 = (float(v) for v in np.percentile(scores, [25, 75]))
        iqr = (q75 - q25) or float(scores.std()) or max(abs(q75), 1.0)
        floor, cap = q25 - 6 * iqr, q75 + 6 * iqr
    overflow = hi > cap
    lo, hi = max(lo, floor), min(hi, cap)
    if threshold is not None and math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    if not overflow:
        pad = (hi - lo) * 0.02
        hi += pad
    return lo - (hi - lo) * 0.02, hi, overflow


def _histogram_svg(
    scores: np.ndarray, calibration: np.ndarray | None, threshold: float | None, alpha: float
) -> str:
    """Two overlaid step histograms (share of each series per bin), axes, legend and the threshold line.

    Scores beyond the plotted range are drawn as one separate bar on the right ("beyond"), scores below it
    fall in the first bin."""
    W, H = 700, 320
    left, right, top, bottom = 62, 18, 58, 52
    ph = H - top - bottom
    series = []
    if calibration is not None and calibration.size:
        series.append(("calibration (in-distribution)", calibration, "#3b6ea8", 0.28))
    series.append(("this archive", scores, "#d9480f", 0.22))
    if not any(s.size for _, s, _, _ in series):
        return '<p class="muted">No scores to plot.</p>'
    cal = series[0][1] if len(series) == 2 else None
    lo, hi, overflow = _plot_range(scores if scores.size else series[0][1], cal, threshold)
    pw = W - left - right - (70 if overflow else 0)
    nbins = 40
    edges = np.linspace(lo, hi, nbins + 1)

    def x_of(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    shares, beyond = [], []
    for _, s, _, _ in series:
        n = max(1, s.size)
        inside = np.clip(s[s <= hi], lo, hi)
        shares.append(np.histogram(inside, bins=edges)[0] / n)
        beyond.append((int(np.sum(s > hi)), float(np.sum(s > hi)) / n))
    ymax = max([float(sh.max()) for sh in shares] + [b for _, b in beyond]) or 1.0
    ystep = _nice_step(ymax, 4)
    ytop = math.ceil(ymax / ystep - 1e-9) * ystep

    def y_of(v: float) -> float:
        return top + ph - v / ytop * ph

    right_edge = W - right
    out = [
        f'<svg class="hist" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="histogram of novelty scores">'
    ]
    for i in range(round(ytop / ystep) + 1):
        v = i * ystep
        y = y_of(v)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right_edge}" y2="{y:.1f}" class="grid"/>')
        label = f"{v * 100:.0f}%" if ystep >= 0.01 else f"{v * 100:.1f}%"
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{label}</text>')
    xstep = _nice_step(hi - lo, 7)
    t = math.ceil(lo / xstep) * xstep
    while t <= hi + 1e-12 * max(1.0, abs(hi)):
        x = x_of(t)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" class="axis"/>')
        out.append(
            f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle" class="tick">{_tick_label(t, xstep)}</text>'
        )
        t += xstep
    for (_, _, colour, opacity), sh in zip(series, shares, strict=True):
        pts = [f"{x_of(edges[0]):.1f},{y_of(0):.1f}"]
        for i, v in enumerate(sh):
            pts.append(f"{x_of(edges[i]):.1f},{y_of(v):.1f}")
            pts.append(f"{x_of(edges[i + 1]):.1f},{y_of(v):.1f}")
        pts.append(f"{x_of(edges[-1]):.1f},{y_of(0):.1f}")
        out.append(
            f'<polygon points="{" ".join(pts)}" fill="{colour}" fill-opacity="{opacity}" '
            f'stroke="{colour}" stroke-width="1.6" stroke-linejoin="miter"/>'
        )
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" class="axis"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" class="axis"/>')
    if overflow:  # one bar per series for the scores beyond the range, after a break in the axis
        x0, bw = left + pw + 22, 20
        for k, ((_, _, colour, opacity), (count, share)) in enumerate(zip(series, beyond, strict=True)):
            if count:
                y = y_of(share)
                out.append(
                    f'<rect x="{x0 + k * bw}" y="{y:.1f}" width="{bw}" height="{top + ph - y:.1f}" '
                    f'fill="{colour}" fill-opacity="{opacity}" stroke="{colour}" stroke-width="1.6"/>'
                    f'<text x="{x0 + k * bw + bw / 2}" y="{y - 4:.1f}" text-anchor="middle" class="tick">'
                    f"{count:,}</text>"
                )
        out.append(
            f'<line x1="{x0 - 6}" y1="{top + ph}" x2="{right_edge}" y2="{top + ph}" class="axis"/>'
            f'<text x="{left + pw + 11}" y="{top + ph + 4}" text-anchor="middle" class="tick">//</text>'
            f'<text x="{x0 + bw}" y="{top + ph + 18}" text-anchor="middle" class="tick">'
            f"&gt; {_e(_fmt(hi, 2))}</text>"
        )
    legend_rows = [(name, colour, "area", s.size) for (name, s, colour, _) in series]
    if threshold is not None and math.isfinite(threshold):
        x = x_of(threshold)
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + ph}" class="thr"/>'
            f'<text x="{x + 4:.1f}" y="{top + 8}" class="thrlabel">flagged →</text>'
        )
        legend_rows.append((f"threshold at α = {alpha:g}: score ≥ {_fmt(threshold)}", "#c92a2a", "line", -1))
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{H - 8}" text-anchor="middle" class="label">'
        f"score (higher = more novel)</text>"
    )
    out.append(
        f'<text transform="translate(15 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" class="label">'
        f"share of images per bin</text>"
    )
    lx, ly = left, 12  # legend entries in rows above the plot
    for name, colour, kind, n in legend_rows:
        text = name if n < 0 else f"{name} (n = {n:,})"
        width = 28 + int(len(text) * 6.6)
        if lx > left and lx + width > W:
            lx, ly = left, ly + 18
        if kind == "area":
            out.append(
                f'<rect x="{lx}" y="{ly}" width="14" height="12" fill="{colour}" fill-opacity="0.35" '
                f'stroke="{colour}" stroke-width="1.5"/>'
            )
        else:
            out.append(f'<line x1="{lx}" y1="{ly + 6}" x2="{lx + 14}" y2="{ly + 6}" class="thr"/>')
        out.append(f'<text x="{lx + 20}" y="{ly + 10}" class="legend">{_e(text)}</text>')
        lx += width
    out.append("</svg>")
    return "".join(out)


def _threshold(calibration: np.ndarray, alpha: float) -> float:
    from novelty.calibration import ConformalCalibrator

    return ConformalCalibrator().fit(calibration).threshold(alpha)


# --- page ----------------------------------------------------------------------------------------------
_CSS = """
*{box-sizing:border-box}
body{margin:0;padding:20px 28px 40px;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",
sans-serif;color:#212529;background:#f4f5f7}
h1{font-size:24px;margin:0 0 2px}
h2{font-size:18px;margin:26px 0 10px;padding-bottom:4px;border-bottom:2px solid #dee2e6}
.muted{color:#6c757d}
.small{font-size:12px}
.tiles{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0 6px}
.tile{background:#fff;border:1px solid #dee2e6;border-radius:8px;padding:10px 16px;min-width:150px}
.tile .n{font-size:26px;font-weight:700}
.tile.novel{border-color:#e8590c;background:#fff4e6}
.tile.novel .n{color:#d9480f}
.tile.bad .n{color:#c92a2a}
.row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.histpanel{flex:0 1 auto;max-width:730px}
.sidecol{display:flex;flex-direction:column;gap:14px;flex:1 1 300px;max-width:430px;min-width:0}
.panel{background:#fff;border:1px solid #dee2e6;border-radius:8px;padding:12px 14px;overflow-x:auto}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #dee2e6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f5;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
table.info{width:100%}
table.info td:first-child{color:#495057;white-space:nowrap}
.sidecol table{font-size:12px;width:100%}
.sidecol th,.sidecol td{padding:3px 6px}
.code{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;overflow-wrap:anywhere}
svg.hist{display:block;font-family:inherit}
svg .grid{stroke:#e9ecef;stroke-width:1}
svg .axis{stroke:#495057;stroke-width:1}
svg .thr{stroke:#c92a2a;stroke-width:2;stroke-dasharray:6 4}
svg .tick{font-size:11px;fill:#495057}
svg .label{font-size:12px;fill:#212529}
svg .legend{font-size:12px;fill:#212529}
svg .thrlabel{font-size:11px;fill:#c92a2a;font-weight:600}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(600px,1fr));gap:14px}
.card{background:#fff;border:1px solid #dee2e6;border-radius:8px;padding:10px 12px;min-width:0}
.card.novel{border-left:5px solid #e8590c}
.card .head{display:flex;gap:8px;align-items:baseline;margin-bottom:6px;min-width:0}
.card .rank{font-weight:700;color:#495057}
.card .key{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;overflow-wrap:anywhere;
min-width:0}
.badge{display:inline-block;font-size:11px;font-weight:700;border-radius:4px;padding:1px 6px;white-space:nowrap}
.badge.novel{background:#d9480f;color:#fff}
.badge.ok{background:#e9ecef;color:#495057}
.badge.untrusted{background:#fff3bf;color:#7c5800}
.card .body{display:flex;gap:12px;align-items:flex-start}
.query{flex:0 0 auto;width:160px}
.card .side{flex:1 1 auto;min-width:0}
.stats{font-size:13px;margin-bottom:8px}
.stats b{font-variant-numeric:tabular-nums}
.nbrs{min-width:0}
.nbrs .cap{font-size:11px;color:#6c757d;margin-bottom:3px}
.nbrlist{display:flex;gap:6px;flex-wrap:wrap}
.nbr{width:72px;font-size:11px}
.nbr .d{font-variant-numeric:tabular-nums;color:#495057}
.nbr .id{color:#868e96;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.thumb{display:block;object-fit:contain;background:#e9ecef;border-radius:4px}
.query .thumb,.query .ph{width:160px;height:160px}
.nbr .thumb,.nbr .ph{width:72px;height:72px}
.ph{display:flex;align-items:center;justify-content:center;text-align:center;padding:4px;border:2px dashed #ced4da;
border-radius:4px;background:#f8f9fa;color:#868e96;font-size:10px;overflow:hidden;overflow-wrap:anywhere}
.errors td.key{max-width:560px}
"""

# Marks the page once every image has loaded (data-images / data-broken-images on <body>); nothing else.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) { broken++; }
  }
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken-images", String(broken));
  document.body.setAttribute("data-rendered", "1");
});
"""


def _img(b64: str | None, reason: str, alt: str, css: str = "thumb") -> str:
    if b64 is None:
        return f'<div class="ph" title="{_e(reason)}">{_e(reason)}</div>'
    return f'<img src="data:image/jpeg;base64,{b64}" class="{css}" alt="{_e(alt)}" title="{_e(alt)}">'


def _short_id(train_id: str) -> str:
    base = train_id.rsplit("::", 1)[-1].replace("\\", "/").rstrip("/")
    return base.rsplit("/", 1)[-1] or train_id


def _detector_table(info: Mapping[str, Any]) -> str:
    lines = ['<table class="info">']
    for k, v in info.items():
        if isinstance(v, (dict, list, tuple)):
            try:
                text = json.dumps(v, ensure_ascii=False, default=str)
            except (TypeError, ValueError):
                text = str(v)
        else:
            text = str(v)
        lines.append(f'<tr><td>{_e(k)}</td><td class="code">{_e(text)}</td></tr>')
    lines.append("</table>")
    return "".join(lines)


def _predictions_table(rows: Sequence[Mapping[str, Any]], alpha: float) -> str:
    counts: dict[str, list[int]] = {}
    for r in rows:
        if _error(r):
            continue
        pred = r.get("prediction")
        if pred is None or (isinstance(pred, float) and math.isnan(pred)) or str(pred) == "":
            continue
        c = counts.setdefault(str(pred), [0, 0, 0])
        c[0 if _bool(r.get("trusted")) else 1] += 1
        c[2] += _is_flagged(r, alpha)
    lines = [
        '<table class="preds"><tr><th>prediction</th><th>trusted</th><th>untrusted</th>'
        "<th>novel</th><th>total</th></tr>"
    ]
    for pred, (tr, un, nov) in sorted(counts.items(), key=lambda kv: (-(kv[1][0] + kv[1][1]), kv[0])):
        lines.append(
            f'<tr><td class="code">{_e(pred)}</td><td class="num">{tr:,}</td><td class="num">{un:,}</td>'
            f'<td class="num">{nov:,}</td><td class="num">{tr + un:,}</td></tr>'
        )
    tot = [sum(c[i] for c in counts.values()) for i in range(3)]
    lines.append(
        f'<tr><th>all</th><th class="num">{tot[0]:,}</th><th class="num">{tot[1]:,}</th>'
        f'<th class="num">{tot[2]:,}</th><th class="num">{tot[0] + tot[1]:,}</th></tr></table>'
    )
    return "".join(lines)


def _card(
    rank: int,
    row: Mapping[str, Any],
    alpha: float,
    thumb: tuple[str | None, str],
    neighbors: list[tuple[str, float, tuple[str | None, str]]],
    scorer_names: Sequence[str],
) -> str:
    key = _clean(row.get("key", ""))
    flagged = _is_flagged(row, alpha)
    badge = (
        f'<span class="badge novel">NOVEL (p &lt; {alpha:g})</span>'
        if flagged
        else '<span class="badge ok">not flagged</span>'
    )
    stats = [
        f"novelty <b>{_fmt(row.get('novelty'))}</b> · p-value <b>{_fmt_p(row.get('p_value'))}</b> · "
        f"score <b>{_fmt(row.get('score'))}</b>"
    ]
    detail = []
    if len(scorer_names) > 1:
        detail += [f"{_e(n)} {_fmt(row.get(f'score_{n}'))}" for n in scorer_names]
    w, h = _float(row.get("width")), _float(row.get("height"))
    if w > 0 and h > 0:
        detail.append(f"{int(w)}×{int(h)} px")
    if detail:
        stats.append(f'<span class="muted">{" · ".join(detail)}</span>')
    pred = row.get("prediction")
    if pred is not None and not (isinstance(pred, float) and math.isnan(pred)) and str(pred) != "":
        prob = _float(row.get("probability"))
        ptxt = f" ({prob:.0%})" if math.isfinite(prob) else ""
        trust = (
            '<span class="badge ok">trusted</span>'
            if _bool(row.get("trusted"))
            else '<span class="badge untrusted">untrusted</span>'
        )
        stats.append(f"prediction <b>{_e(pred)}</b>{_e(ptxt)} {trust}")
    nb_html = []
    for train_id, dist, (b64, reason) in neighbors:
        nb_html.append(
            f'<div class="nbr">{_img(b64, reason, train_id)}'
            f'<div class="d">d = {_e(_fmt(dist))}</div><div class="id" title="{_e(train_id)}">'
            f"{_e(_short_id(train_id))}</div></div>"
        )
    nbrs = (
        '<div class="nbrs"><div class="cap">nearest training images</div>'
        f'<div class="nbrlist">{"".join(nb_html)}</div></div>'
        if nb_html
        else '<div class="nbrs"><div class="cap">no training neighbours recorded</div></div>'
    )
    return (
        f'<div class="card{" novel" if flagged else ""}"><div class="head"><span class="rank">#{rank}</span>'
        f'<span class="key" title="{_e(key)}">{_e(key)}</span>{badge}</div>'
        f'<div class="body"><div class="query">{_img(thumb[0], thumb[1], key)}</div>'
        f'<div class="side"><div class="stats">{"<br>".join(stats)}</div>{nbrs}</div></div></div>'
    )


def _scorer_names(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for r in rows[:50]:
        for k in r:
            if k.startswith("score_") and len(k) > 6:
                names[k[6:]] = None
    return list(names)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def build_report(
    rows: list[dict],
    out_html: str | Path,
    *,
    calibration_scores: np.ndarray | None = None,
    alpha: float = 0.05,
    title: str = "novelty report",
    top_n: int = 24,
    load_thumbnail: Callable[[dict], bytes | None] | None = None,
    load_neighbor_thumbnail: Callable[[str], bytes | None] | None = None,
    detector_info: dict | None = None,
) -> Path:
    """Write the HTML report of result ``rows`` to ``out_html`` (atomically) and return its path.

    ``calibration_scores``: the detector's in-distribution calibration scores on the scale of the rows'
    ``score`` (the combined score when there are several scorers); they draw the reference histogram and the
    flagging threshold at ``alpha``. ``load_thumbnail(row)`` / ``load_neighbor_thumbnail(train_id)`` return
    encoded image bytes (any format PIL reads) or ``None``; an exception or ``None`` shows a placeholder with
    the reason. Defaults: :func:`load_row_thumbnail` and :func:`load_neighbor_thumbnail`.
    """
    out = Path(out_html)
    row_loader = load_thumbnail if load_thumbnail is not None else load_row_thumbnail
    nb_loader = load_neighbor_thumbnail if load_neighbor_thumbnail is not None else _default_neighbor_loader
    rows = list(rows)
    n_total = len(rows)
    errors = [r for r in rows if _error(r)]
    scored = [r for r in rows if _is_scored(r)]
    flagged = [r for r in scored if _is_flagged(r, alpha)]
    scores = np.array([_float(r.get("score")) for r in scored], dtype=np.float64)
    cal: np.ndarray | None = None
    threshold: float | None = None
    if calibration_scores is not None:
        cal = np.asarray(calibration_scores, dtype=np.float64).ravel()
        cal = cal[np.isfinite(cal)]
        if cal.size:
            threshold = _threshold(cal, alpha)
        else:
            cal = None
    scorer_names = _scorer_names(rows)

    parts: list[str] = []
    now = datetime.now(timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    share = f"{len(flagged) / len(scored):.1%} of scored" if scored else "nothing scored"
    parts.append(f"<h1>{_e(title)}</h1>")
    parts.append(
        f'<div class="muted small">generated {_e(now)} · flagged means p-value &lt; α = {alpha:g}</div>'
    )
    parts.append(
        '<div class="tiles">'
        f'<div class="tile"><div class="n">{n_total:,}</div><div class="muted">inputs</div></div>'
        f'<div class="tile"><div class="n">{len(scored):,}</div><div class="muted">scored</div></div>'
        f'<div class="tile novel"><div class="n">{len(flagged):,}</div>'
        f'<div class="muted">flagged as novel · {_e(share)}</div></div>'
        f'<div class="tile{" bad" if errors else ""}"><div class="n">{len(errors):,}</div>'
        f'<div class="muted">unreadable</div></div></div>'
    )

    # histogram + side panels
    side: list[str] = []
    if detector_info:
        side.append(f'<div class="panel"><b>Detector</b>{_detector_table(detector_info)}</div>')
    has_predictions = any(str(r.get("prediction") or "") not in ("", "nan") and not _error(r) for r in rows)
    if has_predictions:
        side.append(
            '<div class="panel"><b>Predictions by trust</b><div class="muted small">'
            "untrusted: the condition head's answer is not backed by familiar training data</div>"
            f"{_predictions_table(rows, alpha)}</div>"
        )
    hist_caption = ""
    if threshold is not None and cal is not None:
        if math.isfinite(threshold):
            above_cal = float(np.mean(cal >= threshold)) if cal.size else 0.0
            above = float(np.mean(scores >= threshold)) if scores.size else 0.0
            hist_caption = (
                f"{above:.1%} of this archive's scores are at or above the threshold, against "
                f"{above_cal:.1%} of the calibration scores (in-distribution: at most α = {alpha:g} expected)."
            )
        else:
            hist_caption = (
                f"With {cal.size} calibration scores no p-value can fall below α = {alpha:g}: nothing can be "
                "flagged."
            )
    elif cal is None:
        hist_caption = "No calibration scores given: only this archive's scores are shown."
    parts.append('<h2>Scores: this archive against the calibration images</h2><div class="row">')
    parts.append(
        f'<div class="panel histpanel">{_histogram_svg(scores, cal, threshold, alpha)}'
        f'<div class="muted small">{_e(hist_caption)}</div></div>'
    )
    if side:
        parts.append(f'<div class="sidecol">{"".join(side)}</div>')
    parts.append("</div>")

    # top-N cards
    if top_n > 0:
        order = sorted(
            scored,
            key=lambda r: (-_float(r.get("score")), _float(r.get("p_value")), _clean(r.get("key", ""))),
        )
        top = order[:top_n]
        parts.append(
            f"<h2>The {len(top)} most novel images</h2>"
            f'<div class="muted small">highest score first · {len(flagged):,} flagged in all'
            f"{f', {max(0, len(flagged) - len(top)):,} of them not shown' if len(flagged) > len(top) else ''}"
            "</div>"
        )
        nb_cache: dict[str, tuple[str | None, str]] = {}
        cards = []
        for i, r in enumerate(top, 1):
            thumb = _make_thumbnail(row_loader, r, THUMBNAIL_SIZE)
            ids = [str(x) for x in _list(r.get("neighbors"))]
            dists = [_float(x) for x in _list(r.get("neighbor_distances"))]
            nbs = []
            for j, tid in enumerate(ids[:MAX_NEIGHBORS]):
                if tid not in nb_cache:
                    nb_cache[tid] = _make_thumbnail(nb_loader, tid, NEIGHBOR_THUMBNAIL_SIZE)
                nbs.append((tid, dists[j] if j < len(dists) else math.nan, nb_cache[tid]))
            cards.append(_card(i, r, alpha, thumb, nbs, scorer_names))
        parts.append(
            f'<div class="cards">{"".join(cards)}</div>'
            if cards
            else '<p class="muted">No scored images.</p>'
        )

    # unreadable inputs
    parts.append(f"<h2>Unreadable inputs ({len(errors):,})</h2>")
    if errors:
        lines = ['<table class="errors"><tr><th>#</th><th>input</th><th>code</th><th>reason</th></tr>']
        for i, r in enumerate(errors, 1):
            code, sep, reason = _error(r).partition(": ")
            if not sep:
                code, reason = "", code
            lines.append(
                f'<tr><td class="num">{i}</td><td class="key code">{_e(r.get("key", ""))}</td>'
                f'<td class="code">{_e(code)}</td><td>{_e(reason)}</td></tr>'
            )
        lines.append("</table>")
        parts.append("".join(lines))
    else:
        parts.append('<p class="muted">Every input could be read.</p>')

    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )
    _write_atomic(out, page)
    return out


# --- from files ----------------------------------------------------------------------------------------
def _typed_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Types of a row read from CSV / JSON / parquet: numbers as float/int (NaN when missing), flags as bool."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k is None:
            continue
        key = str(k)
        if key in _BOOL_COLUMNS:
            out[key] = _bool(v)
        elif key in _INT_COLUMNS:
            f = _float(v)
            out[key] = int(f) if math.isfinite(f) else -1
        elif key in ("novelty", "p_value", "score", "probability") or key.startswith(("score_", "p_value_")):
            out[key] = _float(v)
        elif key in ("neighbors", "neighbor_distances"):
            out[key] = v if isinstance(v, str) else json.dumps(_list(v))
        elif v is None:
            out[key] = ""
        elif isinstance(v, np.generic):
            out[key] = v.item()
        else:
            out[key] = v
    out.setdefault("error", "")
    return out


def read_rows(results_path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a results file: ``.jsonl`` and ``.csv`` read here, ``.parquet`` via
    ``novelty.batch.results.read_results`` when that module exists, else pyarrow."""
    path = Path(results_path)
    name = path.name.lower()
    raw: list[Mapping[str, Any]] = []
    if name.endswith((".jsonl", ".ndjson")):
        lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                if n == len(lines) and n > 1:  # a half-written last line: the job was interrupted
                    break
                raise ValueError(f"{path}:{n}: not a JSON line ({e})") from e
            if isinstance(obj, dict) and "key" in obj:
                raw.append(obj)
    elif name.endswith(".csv"):
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            raw = [r for r in csv.DictReader(f) if r.get("key") is not None]
    elif name.endswith(".parquet"):
        try:
            results: Any = importlib.import_module("novelty.batch.results")
        except ImportError:
            results = None
        if results is not None and hasattr(results, "read_results"):
            raw = list(results.read_results(path))
        else:
            import pyarrow.parquet as pq

            raw = pq.read_table(path).to_pylist()
    else:
        raise ValueError(f"{path}: unknown results format; expected .parquet, .csv or .jsonl")
    return [_typed_row(r) for r in raw]


def _calibration_from_detector(detector_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from safetensors.numpy import load_file

    from novelty.calibration import MultiScorerCalibrator

    manifest = json.loads((detector_dir / "manifest.json").read_text(encoding="utf-8"))
    cal_file = (manifest.get("calibration") or {}).get("file") or "calibration.safetensors"
    arrays = load_file(str(detector_dir / cal_file))
    listed = [str(s.get("name")) for s in manifest.get("scorers") or [] if isinstance(s, dict)]
    found = [k[len("calibration.") :] for k in arrays if k.startswith("calibration.")]
    names = [n for n in listed if n in found] or found
    if not names:
        raise ValueError(f"{detector_dir / cal_file}: no calibration.<scorer> arrays")
    per = {n: np.asarray(arrays[f"calibration.{n}"], dtype=np.float64) for n in names}
    if len(per) == 1:
        combined = next(iter(per.values()))
    else:
        combined = MultiScorerCalibrator().fit(per).combined_scores(per)
    return np.asarray(combined, dtype=np.float64), manifest


def _detector_summary(detector_dir: Path, manifest: Mapping[str, Any], n_cal: int) -> dict[str, Any]:
    params = manifest.get("params") or {}
    info: dict[str, Any] = {"detector": str(detector_dir)}
    if params.get("backbone"):
        info["backbone"] = params["backbone"]
    scorers = [s.get("name") for s in manifest.get("scorers") or [] if isinstance(s, dict)]
    if scorers:
        info["scorers"] = ", ".join(str(s) for s in scorers)
        if len(scorers) > 1:
            info["combined score"] = "mean of the scorers' robust z-scores"
    if "alpha" in params:
        info["alpha"] = params["alpha"]
    index = manifest.get("index") or {}
    if "n" in index:
        info["training images (index)"] = f"{index['n']:,} ({index.get('metric', '?')})"
    info["calibration images"] = f"{n_cal:,}"
    head = manifest.get("head")
    if isinstance(head, dict) and head.get("classes"):
        info["condition head"] = "classes " + ", ".join(str(c) for c in head["classes"])
    if manifest.get("created"):
        info["created"] = manifest["created"]
    return info


def report_from_files(
    results_path: str | os.PathLike[str],
    detector_dir: str | os.PathLike[str] | None,
    out_html: str | os.PathLike[str],
    *,
    alpha: float | None = None,
    title: str | None = None,
    top_n: int = 24,
    load_thumbnail: Callable[[dict], bytes | None] | None = None,
    load_neighbor_thumbnail: Callable[[str], bytes | None] | None = None,
    detector_info: dict | None = None,
) -> Path:
    """Build the report of a results file (``.parquet`` / ``.csv`` / ``.jsonl``) scored by the detector saved in
    ``detector_dir`` (its calibration scores and ``alpha``; ``None``: no calibration, ``alpha`` or 0.05)."""
    rows = read_rows(results_path)
    cal: np.ndarray | None = None
    info: dict[str, Any] = {}
    if detector_dir is not None:
        root = Path(detector_dir)
        cal, manifest = _calibration_from_detector(root)
        if alpha is None:
            alpha = float((manifest.get("params") or {}).get("alpha", 0.05))
        info = _detector_summary(root, manifest, int(cal.size))
    info["results"] = str(results_path)
    if detector_info:
        info.update(detector_info)
    return build_report(
        rows,
        Path(out_html),
        calibration_scores=cal,
        alpha=0.05 if alpha is None else alpha,
        title=title or f"novelty report · {Path(results_path).name}",
        top_n=top_n,
        load_thumbnail=load_thumbnail,
        load_neighbor_thumbnail=load_neighbor_thumbnail,
        detector_info=info,
    )
