"""A simulated season for the windshield detector: does drift monitoring notice ice and tunnels creeping in,
and how long after they started?

    python -m benchmarks.drift_season            # → out/season/ (images, results, drift.json, drift.html)
                                                 #   and docs/drift_report.png (headless Chromium)

The detector is the shipped one (``checkpoints/windshield``: kNN + autoencoder + the dry/wet head, fitted on
clean daytime frames). The stream: 30 days, 200 frames a day at times spread from 07:00 to 19:00 UTC, drawn
with replacement from the held-out test frames of the windshield scenario (195 frames, half of them wet) and
from the same frames under ``ice`` (frost, severity 3; wet frames as ``ice+wet``) and ``tunnel``:

- days 1–11: clean frames only;
- from day 12: ice frames, rising linearly from 1/19 × 35 % of the day's frames to 35 % on day 30;
- from day 18: tunnel frames, rising from 1/13 × 25 % to 25 % on day 30.

The 585 distinct images are written as PNG files (lossless: JPEG artefacts alone would shift the embeddings off
the training frames, which were never compressed) and embedded once (cached); each of the 6,000 stream rows is
a symbolic link to one of them, and the results file holds exactly the rows ``novelty score --embeddings
--timestamps`` writes for those links (:func:`novelty.batch.engine.result_rows`, same schema), from the
embeddings of the PNG files (re-embedding 6,000 links to 585 images changes nothing but the wait). Then
``novelty.drift.analyze`` (what ``novelty drift … --window 1d`` runs) and the report, with the detector's
training frames as the nearest-neighbour thumbnails — twice: with all five tests (``out/season/all-tests``) and
with the two tests on conformal p-values only (``out/season/pvalue-tests``, whose report is the screenshot).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

DAYS = 30
PER_DAY = 200
ICE_START, ICE_MAX = 12, 0.35
TUNNEL_START, TUNNEL_MAX = 18, 0.25
START = datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp()


def shares(day: int) -> dict[str, float]:
    """The share of each condition on ``day`` (1-based)."""
    ice = 0.0 if day < ICE_START else ICE_MAX * (day - ICE_START + 1) / (DAYS - ICE_START + 1)
    tunnel = 0.0 if day < TUNNEL_START else TUNNEL_MAX * (day - TUNNEL_START + 1) / (DAYS - TUNNEL_START + 1)
    return {"clean": 1.0 - ice - tunnel, "ice": ice, "tunnel": tunnel}


def _write_jpegs(images: np.ndarray, folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(images):
        p = folder / f"{i:04d}.png"
        if not p.exists():  # lossless: JPEG artefacts alone move the embeddings off the training frames
            Image.fromarray(arr).save(p, "PNG")
        paths.append(p.resolve())
    return paths


def build(out: Path, detector_dir: Path, seed: int = 0) -> dict[str, Any]:
    from benchmarks.ood.runner import EmbeddingCache
    from benchmarks.ood.scenarios import Pool
    from novelty.batch.engine import result_rows, results_schema
    from novelty.batch.items import InputItem
    from novelty.batch.results import ResultWriter
    from novelty.datasets import windshield
    from novelty.detector import NoveltyDetector

    t0 = time.perf_counter()
    det = NoveltyDetector.load(detector_dir)
    sc = windshield.windshield_scenario(seed=0, severity=3)
    sets = {
        "clean": sc.test.images,
        "ice": sc.production["ice"].images,
        "tunnel": sc.production["tunnel"].images,
    }
    files = {k: _write_jpegs(v, out / "images" / k) for k, v in sets.items()}
    cache = EmbeddingCache(det.embedder, progress=False)
    emb = {}
    for k, paths in files.items():
        pool = Pool(
            f"season-windshield-{k}-sev3-v{windshield._SCENARIO_FORMAT}-png",
            len(paths),
            lambda idx, p=paths: [str(p[i]) for i in idx],
        )
        emb[k] = cache.get(pool, np.arange(len(paths)))
    rng = np.random.default_rng(seed)
    rows_cond, rows_idx, rows_t, rows_day = [], [], [], []
    for day in range(1, DAYS + 1):
        sh = shares(day)
        conds = rng.choice(list(sh), size=PER_DAY, p=list(sh.values()))
        times = np.sort(START + (day - 1) * 86400 + rng.uniform(7 * 3600, 19 * 3600, PER_DAY))
        for c, t in zip(conds, times, strict=True):
            rows_cond.append(str(c))
            rows_idx.append(int(rng.integers(len(files[c]))))
            rows_t.append(float(t))
            rows_day.append(day)
    stream_dir = out / "stream"
    items, x = [], []
    for k, (c, i, day) in enumerate(zip(rows_cond, rows_idx, rows_day, strict=True)):
        link = stream_dir / f"day{day:02d}" / f"{k:05d}_{c}_{i:04d}.png"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(files[c][i])
        st = link.stat()
        items.append(
            InputItem(
                key=str(link.absolute()), path=str(link.absolute()), size=st.st_size, mtime_ns=st.st_mtime_ns
            )
        )
        x.append(emb[c][i])
    x_arr = np.stack(x)
    results = out / "season.parquet"
    det_id = det.artifact_id_
    assert det_id is not None
    with ResultWriter(
        results,
        schema=results_schema(det, embeddings=True),
        resume=False,
        run_meta={"detector_id": det_id, "season": seed},
    ) as w:
        for s in range(0, len(items), 1000):
            batch = items[s : s + 1000]
            v = det.score_embeddings(x_arr[s : s + 1000], sources=[it.key for it in batch])
            w.write(
                result_rows(
                    batch,
                    v,
                    np.tile([320, 240], (len(batch), 1)),
                    [sc_.name for sc_ in det.scorers_],
                    alpha=det.alpha,
                    detector_id=det_id,
                    embeddings=x_arr[s : s + 1000],
                    times=[(t, "csv") for t in rows_t[s : s + 1000]],
                )
            )
    fit_images = np.concatenate([sc.train.images, sc.calibration.images])
    return {
        "detector": det,
        "results": results,
        "conditions": rows_cond,
        "days": rows_day,
        "fit_images": fit_images,
        "seconds_build": time.perf_counter() - t0,
    }


def _train_thumbnail(fit_images: np.ndarray) -> Any:
    from PIL import Image

    def load(train_id: str) -> bytes | None:
        if not train_id.startswith("#"):
            return None
        buf = io.BytesIO()
        Image.fromarray(fit_images[int(train_id[1:])]).save(buf, "JPEG", quality=85)
        return buf.getvalue()

    return load


def run(out: Path, detector_dir: Path, docs: Path | None, seed: int = 0) -> dict[str, Any]:
    b = build(out, detector_dir, seed)
    summaries = {}
    for name, tests in (("pvalue-tests", ["pvalue-binomial", "pvalue-ks"]), ("all-tests", None)):
        summaries[name] = _analyse(
            b, out / name, detector_dir, tests, seed, docs if name == "pvalue-tests" else None
        )
    return summaries


def _analyse(
    b: dict[str, Any], out: Path, detector_dir: Path, tests: list[str] | None, seed: int, docs: Path | None
) -> dict[str, Any]:
    from novelty.drift.analysis import analyze
    from novelty.drift.report import write_report
    from novelty.fileio import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    a = analyze(b["detector"], [b["results"]], window="1d", tests=tests, seed=seed)
    seconds = time.perf_counter() - t0
    atomic_write_text(out / "drift.json", json.dumps(a.to_json(), indent=1) + "\n")
    html = write_report(
        a,
        out / "drift.html",
        detector_dir=detector_dir,
        load_neighbor_thumbnail=_train_thumbnail(b["fit_images"]),
    )
    run_ = a.run
    days = {w.label[:10]: k + 1 for k, w in enumerate(run_.windows)}
    per_test_first = {}
    for t in run_.tests:
        first = next((w for w in run_.windows if w.adjusted.get(t, 1.0) < run_.level), None)
        per_test_first[t] = None if first is None else days[first.label[:10]]
    beyond_first = {}
    for t in run_.thresholds:
        first = next((w for w in run_.windows if w.beyond_threshold.get(t)), None)
        beyond_first[t] = None if first is None else days[first.label[:10]]
    cond = np.array(b["conditions"])
    day = np.array(b["days"])
    summary = {
        "days": DAYS,
        "frames": len(cond),
        "ice_starts": ICE_START,
        "tunnel_starts": TUNNEL_START,
        "first_drift_day": None if run_.first_drift is None else days[run_.first_drift.label[:10]],
        "first_day_per_test": per_test_first,
        "first_day_beyond_reference_threshold": beyond_first,
        "drifting_days": [days[w.label[:10]] for w in run_.windows if w.drift(run_.level)],
        "quiet_days_with_alarm": [
            days[w.label[:10]] for w in run_.windows if w.drift(run_.level) and days[w.label[:10]] < ICE_START
        ],
        "shifted_frames_per_day": {
            int(d): int(((cond != "clean") & (day == d)).sum()) for d in range(1, DAYS + 1)
        },
        "novel_share_per_day": {days[w.label[:10]]: w.novel_share for w in run_.windows},
        "recommendation": a.recommendation.to_json(),
        "horizon": None if a.horizon is None else a.horizon.horizon,
        "missing": [
            {
                "size": c.size,
                "conditions": {k: int((cond[c.members] == k).sum()) for k in ("clean", "ice", "tunnel")},
                "first_seen_day": None if c.first_seen is None else int((c.first_seen - START) // 86400) + 1,
            }
            for c in a.missing
        ],
        "seconds_analysis": round(seconds, 1),
        "seconds_build": round(b["seconds_build"], 1),
        "tests": list(run_.tests),
        "family_size": sum(len(w.adjusted) for w in run_.windows),
        "permutations": run_.settings["permutations"],
    }
    atomic_write_text(out / "season_summary.json", json.dumps(summary, indent=1) + "\n")
    print(run_.table())
    print(json.dumps(summary, indent=1))
    if docs is not None:
        _screenshot(html, docs / "drift_report.png", out / "chromium-profile")
    return summary


def _screenshot(html: Path, png: Path, profile: Path) -> None:
    import subprocess

    png.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        "/usr/bin/chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        "--window-size=1280,2200",
        html.resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    print(f"screenshot written to {png}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/season")
    p.add_argument("--detector", default="checkpoints/windshield")
    p.add_argument("--docs", default="docs", help="where the screenshot goes ('' for none)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    run(Path(args.out), Path(args.detector), Path(args.docs) if args.docs else None, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
