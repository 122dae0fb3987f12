"""The HTML report: content, escaping, thumbnails from files and archive members, and a real headless Chromium.

The rows are realistic (the batch schema, real photos of ``skimage.data`` as JPEG files and zip / tar.gz
members, nasty keys on unreadable inputs); scores are made up, so no backbone runs here.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import re
import subprocess
import tarfile
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from novelty.batch.errors import ReportMismatchError, ResultsReadError
from novelty.batch.report import (
    THUMBNAIL_SIZE,
    build_report,
    load_neighbor_thumbnail,
    load_row_thumbnail,
    read_rows,
    report_from_files,
)
from novelty.calibration import ConformalCalibrator, MultiScorerCalibrator
from novelty.errors import ArtifactError, ImageNotFoundError

CHROMIUM = Path("/usr/bin/chromium")

NASTY_KEYS = [
    "<script>alert(1)</script>.jpg",
    "\"quoted\" & 'single' <b>bold</b>.png",
    "evil.zip::../../x<img src=x onerror=alert(2)>.jpg",
    "bad-\udcff-name\x07.jpg",  # an undecodable byte of a file name and a control character
]


def _save(arr: np.ndarray, path: Path, size: int = 480) -> Path:
    img = Image.fromarray(arr)
    img.thumbnail((size, size))
    img.convert("RGB").save(path, "JPEG", quality=88)
    return path


def _jpeg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).convert("RGB").save(buf, "JPEG", quality=88)
    return buf.getvalue()


def _row(key: str, path: str, member: str, score: float, p: float, neighbors: list[str], **extra) -> dict:
    row = {
        "key": key,
        "path": path,
        "member": member,
        "bytes": 12345,
        "width": 480,
        "height": 360,
        "novelty": 1 - p,
        "p_value": p,
        "is_novel": p < 0.05,
        "score": score,
        "score_knn": score * 0.9,
        "p_value_knn": p,
        "score_autoencoder": score * 1.1,
        "p_value_autoencoder": p,
        "neighbors": json.dumps(neighbors),
        "neighbor_distances": json.dumps(
            [round(0.1 + 0.05 * i + score / 20, 6) for i in range(len(neighbors))]
        ),
        "error": "",
    }
    row.update(extra)
    return row


def _error_row(key: str, error: str) -> dict:
    nan = math.nan
    return {
        "key": key,
        "path": key.split("::")[0],
        "member": key.split("::")[1] if "::" in key else "",
        "bytes": -1,
        "width": -1,
        "height": -1,
        "novelty": nan,
        "p_value": nan,
        "is_novel": False,
        "score": nan,
        "score_knn": nan,
        "p_value_knn": nan,
        "score_autoencoder": nan,
        "p_value_autoencoder": nan,
        "neighbors": "[]",
        "neighbor_distances": "[]",
        "error": error,
    }


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict:
    """Training photos (textures), an archive to report on (files, zip and tar.gz members, errors)."""
    root = tmp_path_factory.mktemp("report")
    train = root / "train"
    train.mkdir()
    training = [
        _save(getattr(skimage.data, n)(), train / f"{n}.jpg")
        for n in ("brick", "grass", "gravel", "camera", "moon")
    ]
    inbox = root / "inbox"
    inbox.mkdir()
    files = {n: _save(getattr(skimage.data, n)(), inbox / f"{n}.jpg") for n in ("chelsea", "rocket", "coins")}
    zpath = inbox / "upload.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("day 1/astronaut.jpg", _jpeg_bytes(skimage.data.astronaut()))
        zf.writestr("day 1/coffee.jpg", _jpeg_bytes(skimage.data.coffee()))
        zf.writestr("day 1/broken.jpg", _jpeg_bytes(skimage.data.clock())[:300])
    tpath = inbox / "upload.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        data = _jpeg_bytes(skimage.data.immunohistochemistry())
        info = tarfile.TarInfo("slides/ihc.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    t = [str(p) for p in training]
    rows = [
        _row(str(files["chelsea"]), str(files["chelsea"]), "", 4.2, 0.005, [t[3], t[0], t[1]]),
        _row(
            f"{zpath}::day 1/astronaut.jpg", str(zpath), "day 1/astronaut.jpg", 3.6, 0.01, [t[3], t[4], "#17"]
        ),
        _row(f"{tpath}::slides/ihc.jpg", str(tpath), "slides/ihc.jpg", 2.9, 0.02, [t[1], t[2]]),
        _row(f"{zpath}::day 1/coffee.jpg", str(zpath), "day 1/coffee.jpg", 2.5, 0.03, [t[0], t[2], t[4]]),
        _row(str(files["rocket"]), str(files["rocket"]), "", 1.7, 0.09, [t[4], t[3]]),
        _row(str(files["coins"]), str(files["coins"]), "", 0.4, 0.45, [t[3], t[4]]),
        # scored earlier, but its file is gone now: the card shows a placeholder with the reason
        _row(str(inbox / "moved-away.jpg"), str(inbox / "moved-away.jpg"), "", 3.1, 0.015, [t[2]]),
        _row(f"{zpath}::day 1/broken.jpg", str(zpath), "day 1/broken.jpg", 0.1, 0.6, [t[0]]),
    ]
    for i, row in enumerate(rows):
        row.update(
            prediction=("dry", "wet")[i % 2], probability=0.55 + 0.05 * i, trusted=row["p_value"] >= 0.05
        )
    errors = [
        _error_row(NASTY_KEYS[0], "not_an_image: not a recognised image format (content looks like text)"),
        _error_row(NASTY_KEYS[1], "truncated: file is truncated (image file is truncated)"),
        _error_row(NASTY_KEYS[2], 'corrupt: <b>pixel data</b> cannot be decoded & "more"'),
        _error_row(NASTY_KEYS[3], "empty: zero-byte file"),
    ]
    all_rows = rows[:3] + errors[:2] + rows[3:] + errors[2:]
    cal = np.random.default_rng(0).normal(0.0, 1.0, 200)
    return {"root": root, "rows": all_rows, "cal": cal, "training": training, "zip": zpath, "tar": tpath}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _build(scenario: dict, out: Path, **kwargs) -> str:
    build_report(
        scenario["rows"],
        out,
        calibration_scores=scenario["cal"],
        alpha=0.05,
        title="nightly <archive> & co",
        detector_info={
            "backbone": "tf_efficientnet_lite0",
            "scorers": "knn, autoencoder",
            "note": "<i>x</i>",
        },
        **kwargs,
    )
    return out.read_text(encoding="utf-8")


def test_report_is_self_contained_and_escaped(scenario, tmp_path):
    out = tmp_path / "sub" / "report.html"
    text = _build(scenario, out)
    assert sorted(os.listdir(out.parent)) == ["report.html"], "a temporary file was left behind"
    assert "http://" not in text and "https://" not in text, "the report must not reference anything outside"
    assert "url(" not in text and "@import" not in text
    parser = _Tags()
    parser.feed(text)
    for tag, attrs in parser.tags:
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            assert name not in attrs or str(attrs[name]).startswith("data:image/jpeg;base64,"), (tag, name)
    tags = [t for t, _ in parser.tags]
    assert tags.count("script") == 1, "only the report's own inline script"
    assert "link" not in tags and "iframe" not in tags and "object" not in tags
    imgs = [a for t, a in parser.tags if t == "img"]
    assert len(imgs) >= 15
    for a in imgs:
        src = a["src"]
        assert src.startswith("data:image/jpeg;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as im:
            assert im.format == "JPEG" and max(im.size) <= THUMBNAIL_SIZE
            im.load()
    # every nasty key is escaped, never raw
    assert "<script>alert" not in text and "onerror=alert(2)>" not in text and "<b>bold" not in text
    assert html.escape(NASTY_KEYS[0]) in text
    assert html.escape(NASTY_KEYS[1]) in text
    assert "&lt;b&gt;pixel data&lt;/b&gt; cannot be decoded &amp; &quot;more&quot;" in text
    assert "bad-\ufffd-name\\x07.jpg" in text  # undecodable byte → U+FFFD, control character made visible
    assert "nightly &lt;archive&gt; &amp; co" in text and "&lt;i&gt;x&lt;/i&gt;" in text
    body = " ".join(parser.text)
    # header counts: 12 inputs, 8 scored, 5 flagged (p < 0.05) = 62.5 % of them, 4 unreadable
    tiles = re.findall(r'<div class="n">([\d,]+)</div>', text)
    assert tiles == ["12", "8", "5", "4"]
    assert "62.5% of scored" in body
    # the unreadable table holds all four, in order, with code and reason split
    table = text[text.index('<table class="errors">') :]
    assert [html.unescape(k) for k in re.findall(r'<td class="key code">(.*?)</td>', table)] == [
        NASTY_KEYS[0],
        NASTY_KEYS[1],
        NASTY_KEYS[2],
        "bad-\ufffd-name\\x07.jpg",
    ]
    assert '<td class="code">truncated</td><td>file is truncated (image file is truncated)</td>' in table
    # cards: highest score first; thumbnails of files, zip and tar.gz members; placeholders with reasons
    cards = re.findall(r'<span class="key" title="[^"]*">(.*?)</span>', text)
    assert [Path(html.unescape(c).split("::")[-1]).name for c in cards] == [
        "chelsea.jpg",
        "astronaut.jpg",
        "moved-away.jpg",
        "ihc.jpg",
        "coffee.jpg",
        "rocket.jpg",
        "coins.jpg",
        "broken.jpg",
    ]
    assert text.count('<div class="card novel">') == 5
    assert "not_found: no such file" in text  # moved-away.jpg
    assert "truncated: " in text.split("broken.jpg")[-1]  # the truncated zip member's placeholder
    assert "no image available" in text  # neighbour "#17" is no file
    assert "d = 0.310" in text  # chelsea's first neighbour distance
    # histogram: two series, legend, axis labels and the threshold of the calibration scores
    thr = ConformalCalibrator().fit(scenario["cal"]).threshold(0.05)
    assert text.count("<polygon") == 2 and 'class="thr"' in text
    assert f"score ≥ {thr:.3f}" in text
    assert "score (higher = more novel)" in text and "share of images per bin" in text
    # predictions by trust
    preds = text[text.index('<table class="preds">') :].split("</table>")[0]
    assert re.findall(r'<td class="num">(\d+)</td>', preds) == ["1", "3", "3", "4", "2", "2", "2", "4"]


def test_thumbnail_failures_never_break_the_report(scenario, tmp_path):
    calls: list[str] = []

    def flaky_row(row: dict) -> bytes | None:
        calls.append(row["key"])
        n = len(calls)
        if n == 1:
            raise RuntimeError("storage offline")
        if n == 2:
            return b"not an image at all"
        if n == 3:
            return None
        if n == 4:  # a PNG with alpha, much larger than a thumbnail: re-encoded as a small JPEG
            buf = io.BytesIO()
            Image.fromarray(skimage.data.logo()).save(buf, "PNG")
            return buf.getvalue()
        return load_row_thumbnail(row)

    def neighbors(train_id: str) -> bytes | None:
        raise MemoryError("no memory") if train_id.endswith("moon.jpg") else None

    text = _build(scenario, tmp_path / "r.html", load_thumbnail=flaky_row, load_neighbor_thumbnail=neighbors)
    assert len(calls) == 8
    assert "RuntimeError: storage offline" in text
    assert "not_an_image: not a recognised image format" in text
    assert "MemoryError: no memory" in text
    assert (
        text.count("data:image/jpeg;base64,") == 8 - 3 - 1
    )  # the first three fail by design, broken.jpg by decoding


def test_archive_members_are_read_in_memory(scenario, tmp_path):
    before = sorted(p.name for p in scenario["zip"].parent.iterdir())
    for path, member in ((scenario["zip"], "day 1/coffee.jpg"), (scenario["tar"], "slides/ihc.jpg")):
        data = load_row_thumbnail({"key": f"{path}::{member}", "path": str(path), "member": member})
        assert data is not None
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and max(im.size) == THUMBNAIL_SIZE
    # the key alone is enough, and a training id may be an archive member too
    assert load_row_thumbnail({"key": f"{scenario['zip']}::day 1/astronaut.jpg"})
    assert load_neighbor_thumbnail(f"{scenario['tar']}::slides/ihc.jpg")
    assert load_neighbor_thumbnail(str(scenario["training"][0]))
    assert load_neighbor_thumbnail("#3") is None and load_neighbor_thumbnail("nul\0byte") is None
    with pytest.raises(ImageNotFoundError, match="no such member"):  # the batch layer's own member reader
        load_row_thumbnail({"key": "k", "path": str(scenario["tar"]), "member": "slides/missing.jpg"})
    assert sorted(p.name for p in scenario["zip"].parent.iterdir()) == before, "something was extracted"


def _detector_dir(path: Path, cal: dict[str, np.ndarray], alpha: float) -> tuple[Path, str]:
    """A verified detector artifact holding calibration arrays only, and its artifact id (sha256 of the
    manifest's bytes), written in the artifact format by hand: no backbone runs here."""
    from safetensors.numpy import save

    from novelty.fileio import sha256_bytes

    path.mkdir()
    files = {"calibration.safetensors": bytes(save({f"calibration.{k}": v for k, v in cal.items()}))}
    for name, data in files.items():
        (path / name).write_bytes(data)
    manifest = {
        "format": "novelty-detector",
        "format_version": 1,
        "params": {
            "backbone": "tf_efficientnet_lite0",
            "alpha": alpha,
            "calibration_fraction": 0.3,
            "n_neighbors": 5,
        },
        "backbone": {"fingerprint": "0" * 64},
        "index": {"n": 400, "metric": "cosine"},
        "scorers": [{"name": k, "params": {}} for k in cal],
        "calibration": {"file": "calibration.safetensors", "n": 200},
        "head": {"classes": ["dry", "wet"], "params": {}},
        "files": {name: sha256_bytes(data) for name, data in files.items()},
    }
    data = json.dumps(manifest).encode()
    (path / "manifest.json").write_bytes(data)
    artifact_id = sha256_bytes(data)
    (path / "MANIFEST.sha256").write_text(f"{artifact_id}  manifest.json\n")
    return path, artifact_id


def _write_results(rows: list[dict], res: Path, *, alpha: float, detector_id: str) -> Path:
    """Results as `novelty score` writes them: every row carries the run's alpha and detector id."""
    rows = [{**r, "alpha": alpha, "detector_id": detector_id} for r in rows]
    if res.suffix == ".jsonl":
        res.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8", "surrogateescape"
        )
    else:
        with open(res, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return res


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_report_from_files(scenario, tmp_path, fmt):
    rows = scenario["rows"][:-1]
    rng = np.random.default_rng(1)
    knn, ae = rng.gamma(2.0, 0.1, 200), rng.normal(5.0, 2.0, 200)
    det, aid = _detector_dir(tmp_path / "det2", {"knn": knn, "autoencoder": ae}, alpha=0.1)
    res = _write_results(rows, tmp_path / f"results.{fmt}", alpha=0.1, detector_id=aid)
    got = read_rows(res)
    assert [r["key"] for r in got] == [r["key"] for r in rows]
    assert got[0]["is_novel"] is True and got[0]["trusted"] is False and got[0]["width"] == 480
    assert math.isnan(got[3]["score"]) and got[3]["error"].startswith("not_an_image")
    # several scorers: the report's scores are the mean robust z-scores of the calibration arrays themselves
    text = report_from_files(res, det, tmp_path / "a.html", top_n=3).read_text("utf-8")
    per = {"knn": knn, "autoencoder": ae}
    combined = MultiScorerCalibrator().fit(per).combined_scores(per)
    thr = ConformalCalibrator().fit(combined).threshold(0.1)
    assert f"threshold at α = 0.1: score ≥ {thr:.3f}" in text
    assert "knn, autoencoder" in text and "classes dry, wet" in text and "mean of the scorers" in text
    assert len(re.findall(r'<div class="card(?: novel)?">', text)) == 3
    # one scorer: its raw calibration scores
    det1, aid1 = _detector_dir(tmp_path / "det1", {"knn": knn}, alpha=0.05)
    res1 = _write_results(rows, tmp_path / f"results1.{fmt}", alpha=0.05, detector_id=aid1)
    text = report_from_files(res1, det1, tmp_path / "b.html").read_text("utf-8")
    assert f"score ≥ {ConformalCalibrator().fit(knn).threshold(0.05):.3f}" in text
    # no detector: no calibration series
    text = report_from_files(res, None, tmp_path / "c.html").read_text("utf-8")
    assert text.count("<polygon") == 1 and "No calibration scores given" in text


def test_report_uses_the_runs_decisions_and_checks_the_detector(scenario, tmp_path):
    """Flagged = the rows' is_novel at the run's alpha (not p < 0.05 recomputed); only the detector that
    scored the results is accepted, read verified."""
    rows = [dict(r, is_novel=not r["error"] and r["p_value"] < 0.1) for r in scenario["rows"]]
    rng = np.random.default_rng(2)
    knn = rng.gamma(2.0, 0.1, 200)
    det, aid = _detector_dir(tmp_path / "det", {"knn": knn}, alpha=0.1)
    res = _write_results(rows, tmp_path / "r.jsonl", alpha=0.1, detector_id=aid)
    text = report_from_files(res, det, tmp_path / "r.html").read_text("utf-8")
    assert re.findall(r'<div class="n">([\d,]+)</div>', text) == [
        "12",
        "8",
        "6",
        "4",
    ]  # rocket (p = 0.09) too
    assert text.count('<div class="card novel">') == 6 and "p &lt; 0.1" in text
    assert f"threshold at α = 0.1: score ≥ {ConformalCalibrator().fit(knn).threshold(0.1):.3f}" in text
    assert aid in text  # the detector panel names the artifact
    # another detector (same arrays, another alpha): refused, whatever its calibration looks like
    other, other_id = _detector_dir(tmp_path / "other", {"knn": knn}, alpha=0.05)
    assert other_id != aid
    with pytest.raises(ReportMismatchError, match="not the detector that scored"):
        report_from_files(res, other, tmp_path / "x.html")
    # a tampered detector: refused by the verified reader
    (det / "calibration.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ArtifactError):
        report_from_files(res, det, tmp_path / "y.html")
    # results without the run's alpha / detector id (not written by `novelty score`)
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    with pytest.raises(ResultsReadError, match="no 'alpha' column"):
        report_from_files(bare, None, tmp_path / "z.html")
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "z.html").exists()


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, errors="replace")


def _console_errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "Uncaught" in ln or ("CONSOLE" in ln and "rror" in ln)]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(scenario, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (as root) to install Debian's chromium")
    out = tmp_path / "report.html"
    text = _build(scenario, out)
    png = tmp_path / "shot.png"
    shot = _chromium([f"--screenshot={png}", "--window-size=1280,1600", out.as_uri()], tmp_path / "p1")
    assert shot.returncode == 0, shot.stderr[-3000:]
    assert png.exists() and png.stat().st_size > 20_000
    with Image.open(png) as im:
        assert im.size == (1280, 1600)
        rgb = np.asarray(im.convert("RGB"))
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 2000, "the screenshot looks blank"
    # the top-N cards start below the histogram: that region holds photos, not a flat background
    cards = rgb[900:1600]
    assert cards.std() > 30 and len(np.unique(cards.reshape(-1, 3), axis=0)) > 2000
    assert not _console_errors(shot.stderr), _console_errors(shot.stderr)

    dom = _chromium(["--dump-dom", "--virtual-time-budget=5000", out.as_uri()], tmp_path / "p2")
    assert dom.returncode == 0, dom.stderr[-3000:]
    assert not _console_errors(dom.stderr), _console_errors(dom.stderr)
    n_img = text.count("<img ")
    assert f'data-images="{n_img}"' in dom.stdout, "the page's load handler did not run"
    assert 'data-broken-images="0"' in dom.stdout, "an embedded thumbnail did not decode in the browser"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.jpg" in dom.stdout
    assert dom.stdout.count("<script>") == 1

    # the console check does see errors: a page whose script throws
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>undefinedFunction()</script>x</body></html>")
    broken = _chromium(["--dump-dom", bad.as_uri()], tmp_path / "p3")
    assert _console_errors(broken.stderr), "Chromium's console errors do not reach stderr"
