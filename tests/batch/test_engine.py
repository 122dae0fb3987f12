"""Batch scoring end to end (novelty.batch.score_inputs) with a stand-in backbone: resume identity, odd inputs.

The stand-in embeds an image as its normalised mean colour and colour spread, so these tests decode real
image files and run the real detector, index, calibration, results writer and resume logic in well under a
second each, without the pretrained backbone.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from odd_inputs import no_hang  # tests/odd_inputs.py, next to this file
from PIL import Image

from novelty.batch import score_inputs
from novelty.batch.engine import detector_id, results_schema
from novelty.batch.errors import ResultsError, ResumeMismatchError
from novelty.batch.results import read_results
from novelty.detector import NoveltyDetector
from novelty.embedder import EmbeddedBatch, Embedder
from novelty.errors import ImageError
from novelty.images import load_image


class ColourEmbedder(Embedder):
    """A stand-in backbone: mean and spread of each colour channel of a 16×16 thumbnail, L2-normalised."""

    def __init__(self, batch_size: int = 4) -> None:  # no model: nothing of Embedder.__init__ is needed
        self.backbone_name, self.weights, self.weights_source = "colour-stats", None, "test"
        self.fingerprint, self.dim = "colour-stats-v1", 6
        self.batch_size, self.num_workers, self.draft, self.device = batch_size, 0, True, "cpu"
        self.read: list[str] = []  # keys, in the order they were decoded
        self.stop_after: int | None = None  # batches, then KeyboardInterrupt (an interrupted run)
        self.before: list = []  # callables run before the first batch

    def iter_batches(self, sources, *, progress=None) -> Iterator[EmbeddedBatch]:
        for hook in self.before:
            hook()
        for b, start in enumerate(range(0, len(sources), self.batch_size)):
            if self.stop_after is not None and b >= self.stop_after:
                raise KeyboardInterrupt
            idx = np.arange(start, min(start + self.batch_size, len(sources)))
            emb = np.full((len(idx), self.dim), np.nan, np.float32)
            errors: list[ImageError | None] = [None] * len(idx)
            sizes = np.full((len(idx), 2), -1, np.int64)
            for j, i in enumerate(idx):
                self.read.append(getattr(sources[i], "key", str(sources[i])))
                info: dict = {}
                try:
                    a = np.asarray(load_image(sources[i], info=info).resize((16, 16)), np.float32) / 255
                except ImageError as e:
                    errors[j] = e
                    continue
                v = np.concatenate([a.mean((0, 1)), a.std((0, 1))]) + 1e-3
                emb[j] = v / np.linalg.norm(v)
                sizes[j] = info["width"], info["height"]
            yield EmbeddedBatch(idx, emb, errors, sizes)


def make_detector(seed: int, alpha: float = 0.1) -> NoveltyDetector:
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(0.5, 0.1, (80, 6))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    det = NoveltyDetector(embedder=ColourEmbedder(), alpha=alpha, n_neighbors=2)
    return det.fit_embeddings(x, ids=[f"train/{i}.png" for i in range(80)])


def png(colour: tuple[int, int, int], size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(10):
        (root / f"img{i:02d}.png").write_bytes(png((20 * i, 100, 250 - 20 * i)))
    return root


def interrupted_run(det: NoveltyDetector, inputs: list, out: Path) -> None:
    """Score the first batch (4 inputs, 2-row chunks on disk), then stop as a Ctrl-C would."""
    det.embedder.stop_after = 1  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        score_inputs(det, inputs, out, chunk_rows=2)
    det.embedder.stop_after = None  # type: ignore[attr-defined]
    assert not out.exists() and (out.parent / (out.name + ".parts")).is_dir()


def test_rows_carry_the_runs_alpha_and_detector(photos, tmp_path):
    det = make_detector(0)
    out = tmp_path / "r.csv"
    s = score_inputs(det, [photos], out)
    rows = read_results(out)
    assert s.n_inputs == len(rows) == 10 and s.n_errors == 0
    assert list(rows[0]) == list(results_schema(det).names)
    assert {r["alpha"] for r in rows} == {0.1}
    assert {r["detector_id"] for r in rows} == {detector_id(det)}
    assert detector_id(det).startswith("unsaved-")  # never saved: a fingerprint of the fitted state
    assert detector_id(make_detector(0)) == detector_id(det) != detector_id(make_detector(1))
    assert all(isinstance(r["is_novel"], bool) and isinstance(r["width"], int) for r in rows)


def test_resume_refuses_another_detector(photos, tmp_path):
    out = tmp_path / "r.jsonl"
    det_a, det_b = make_detector(0), make_detector(1)  # same backbone, scorers and calibration size
    interrupted_run(det_a, [photos], out)
    with pytest.raises(ResumeMismatchError, match=r"differs in detector_id.*delete .*\.parts.*--no-resume"):
        score_inputs(det_b, [photos], out)
    det_b.alpha = 0.05  # also the run's alpha is part of its identity
    with pytest.raises(ResumeMismatchError, match="alpha"):
        score_inputs(det_b, [photos], out)
    s = score_inputs(det_a, [photos], out)  # the run that wrote the parts resumes
    assert s.n_scored_now == 6 and len(read_results(out)) == 10
    assert {r["detector_id"] for r in read_results(out)} == {detector_id(det_a)}
    det_b.alpha = 0.1
    s = score_inputs(det_b, [photos], tmp_path / "b.jsonl", resume=False)
    assert s.n_scored_now == 10


def test_resume_refuses_another_runtime(photos, tmp_path):
    out = tmp_path / "r.jsonl"
    det = make_detector(0)
    interrupted_run(det, [photos], out)
    det.runtime = "openvino"  # the same fitted detector scoring with another engine makes other embeddings
    with pytest.raises(ResumeMismatchError, match="runtime"):
        score_inputs(det, [photos], out)
    det.runtime = "torch"
    assert score_inputs(det, [photos], out).n_scored_now == 6


def test_resume_refuses_changed_files(photos, tmp_path):
    out = tmp_path / "r.parquet"
    det = make_detector(0)
    interrupted_run(det, [photos], out)
    extra = tmp_path / "extra.png"
    extra.write_bytes(png((1, 2, 3)))
    with pytest.raises(ResumeMismatchError, match=r'differs in inputs \(was "10 inputs.*now "11 inputs'):
        score_inputs(det, [photos, extra], out)
    scored = photos / "img00.png"  # in the first batch: it has a row on disk
    scored.write_bytes(png((0, 0, 0), size=30))  # new content, new size
    with pytest.raises(ResumeMismatchError, match=r"1 input\(s\) changed.*img00\.png.*--no-resume"):
        score_inputs(det, [photos], out)
    os.utime(scored, ns=(1, 1))  # the same size, only the modification time: refused too
    with pytest.raises(ResumeMismatchError, match=r"img00\.png"):
        score_inputs(det, [photos], out)
    s = score_inputs(det, [photos], out, resume=False)
    assert s.n_scored_now == 10
    assert read_results(out)[0]["width"] == 30


def test_a_listed_file_replaced_by_a_fifo_gives_an_error_row(photos, tmp_path):
    det = make_detector(0)
    listing = tmp_path / "todo.txt"
    listing.write_text("\n".join(str(p) for p in sorted(photos.iterdir())[:5]))
    victim = photos / "img02.png"

    def replace_by_fifo() -> None:  # after the inputs were listed as regular files
        victim.unlink()
        os.mkfifo(victim)

    det.embedder.before.append(replace_by_fifo)  # type: ignore[attr-defined]
    with no_hang():
        s = score_inputs(det, [listing], tmp_path / "r.jsonl")
    rows = {Path(r["key"]).name: r for r in read_results(tmp_path / "r.jsonl")}
    assert s.n_inputs == 5 and s.n_errors == 1
    assert rows["img02.png"]["error"].startswith("not_an_image: is a FIFO")
    assert all(r["error"] == "" for name, r in rows.items() if name != "img02.png")


def test_duplicate_archive_members_each_get_a_row(tmp_path):
    det = make_detector(0)
    zpath, tpath = tmp_path / "up.zip", tmp_path / "up.tar"
    red, blue, green = png((255, 0, 0), 20), png((0, 0, 255), 22), png((0, 255, 0), 26)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(zpath, "w") as zf:
        for data in (red, blue, green):
            zf.writestr("cam/a.png", data)
    with tarfile.open(tpath, "w") as tf:
        for data in (red, blue):
            ti = tarfile.TarInfo("a.png")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    s = score_inputs(det, [zpath, tpath], tmp_path / "r.csv")
    rows = read_results(tmp_path / "r.csv")
    assert [r["key"] for r in rows] == [
        f"{zpath}::cam/a.png",
        f"{zpath}::cam/a.png#2",
        f"{zpath}::cam/a.png#3",
        f"{tpath}::a.png",
        f"{tpath}::a.png#2",
    ]
    assert s.n_errors == 0 and [r["width"] for r in rows] == [20, 22, 26, 20, 22]  # each copy read, in order
    assert {r["member"] for r in rows} == {"cam/a.png", "a.png"}  # the name as stored


def test_too_large_archive_members(tmp_path):
    det = make_detector(0)
    zpath = tmp_path / "big.zip"
    big = png((9, 9, 9), 400) + b"\0" * 200_000  # a PNG with trailing bytes: ~200 kB
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("small.png", png((1, 2, 3)))
        zf.writestr("big.png", big)
    s = score_inputs(det, [zpath], tmp_path / "r.jsonl", max_member_bytes=100_000)
    rows = {r["member"]: r for r in read_results(tmp_path / "r.jsonl")}
    assert s.n_errors == 1 and rows["small.png"]["error"] == ""
    assert rows["big.png"]["error"].startswith("too_large: archive member of")
    assert "--max-member-bytes" in rows["big.png"]["error"]
    s = score_inputs(det, [zpath], tmp_path / "r2.jsonl", max_member_bytes=1 << 20)
    assert s.n_errors == 0


def test_output_errors_come_before_any_scoring(photos, tmp_path):
    det = make_detector(0)
    for out in (tmp_path, tmp_path / "results.xlsx"):
        with pytest.raises(ResultsError):
            score_inputs(det, [photos], out)
    assert det.embedder.read == []  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]


def test_permission_denied_is_its_own_code(photos, tmp_path, monkeypatch):
    det = make_detector(0)
    denied = str(photos / "img03.png")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != denied and real_access(p, mode))
    score_inputs(det, [photos], tmp_path / "r.jsonl")
    rows = {r["key"]: r for r in read_results(tmp_path / "r.jsonl")}
    assert rows[denied]["error"] == "permission_denied: permission denied"
