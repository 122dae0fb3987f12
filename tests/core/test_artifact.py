"""The artifact directory: safe replacement on save, bytes read once and verified, hostile manifests refused."""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

import novelty
from novelty import artifact
from novelty.artifact import Artifact, read_artifact, write_artifact
from novelty.errors import (
    ArtifactChangedError,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    InvalidInputError,
    NoveltyError,
)


@pytest.fixture(scope="module")
def two_detectors(textile_embeddings, embedder):
    """Two different detectors on real embeddings (kNN + knn-local, one with a head), sharing the backbone."""
    x = textile_embeddings["nominal"]
    a = novelty.NoveltyDetector(scorers=("knn", "knn-local"), embedder=embedder).fit_embeddings(x[:200])
    labels = np.where(np.arange(260) % 2 == 0, "even", "odd")
    b = novelty.NoveltyDetector(
        scorers=("knn", "knn-local"), embedder=embedder, head={"max_epochs": 3}, seed=1
    ).fit_embeddings(x[200:460], labels)
    return a, b


def rewrite_manifest(root: Path, manifest: dict) -> None:
    """Replace the manifest and its hash, as a hand edit that keeps the artifact self-consistent would."""
    data = json.dumps(manifest).encode()
    (root / "manifest.json").write_bytes(data)
    (root / "MANIFEST.sha256").write_text(hashlib.sha256(data).hexdigest() + "  manifest.json\n")


def no_temporaries(parent: Path) -> bool:
    return not [p.name for p in parent.iterdir() if p.name.startswith(".")]


# --- item 1: what a save may replace ------------------------------------------------------------------
def test_save_refuses_a_folder_with_a_foreign_manifest(two_detectors, tmp_path):
    """A web project holds a manifest.json too: saving onto it must not delete it."""
    web = tmp_path / "webapp"
    web.mkdir()
    (web / "manifest.json").write_text(json.dumps({"name": "my app", "start_url": "/"}))
    (web / "index.html").write_text("<h1>keep me</h1>")
    with pytest.raises(ArtifactError, match=r"webapp.*refusing to overwrite"):
        two_detectors[0].save(web)
    assert (web / "index.html").read_text() == "<h1>keep me</h1>"
    assert json.loads((web / "manifest.json").read_text())["name"] == "my app"
    assert no_temporaries(tmp_path)


def test_save_onto_a_regular_file_is_refused_and_the_file_untouched(two_detectors, tmp_path):
    target = tmp_path / "detector"
    target.write_text("not a folder")
    with pytest.raises(ArtifactError, match=r"detector exists and is a file"):
        two_detectors[0].save(target)
    assert target.read_text() == "not a folder"
    assert no_temporaries(tmp_path)


def test_save_replaces_a_detector_and_fills_an_empty_folder(two_detectors, tmp_path):
    a, b = two_detectors
    empty = tmp_path / "empty"
    empty.mkdir()
    a.save(empty)
    assert read_artifact(empty).artifact_id == a.artifact_id_
    b.save(empty)  # a detector artifact: replaced
    assert read_artifact(empty).artifact_id == b.artifact_id_ != a.artifact_id_
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_save_refuses_a_symlink_target(two_detectors, tmp_path):
    real = two_detectors[0].save(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(ArtifactError, match="symbolic link"):
        two_detectors[1].save(link)
    assert read_artifact(real).artifact_id == two_detectors[0].artifact_id_


def test_disk_full_during_save_keeps_the_old_artifact(two_detectors, tmp_path, monkeypatch):
    a, b = two_detectors
    out = a.save(tmp_path / "det")
    before = read_artifact(out).artifact_id

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ArtifactError, match="disk is full") as info:
        b.save(out)
    assert "unchanged" in str(info.value)
    monkeypatch.undo()
    assert read_artifact(out).artifact_id == before
    assert no_temporaries(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["det"]


def test_artifact_id_follows_what_was_saved_and_loaded(two_detectors, embedder, textile_embeddings, tmp_path):
    a = two_detectors[0]
    out = a.save(tmp_path / "det")
    assert a.artifact_id_ == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    assert novelty.load(out, embedder=embedder).artifact_id_ == a.artifact_id_
    fresh = novelty.NoveltyDetector(embedder=embedder).fit_embeddings(textile_embeddings["nominal"][:120])
    assert fresh.artifact_id_ is None


# --- item 2: read once, verify, parse from memory -----------------------------------------------------
def test_read_artifact_contract(tmp_path):
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    files = {"a.safetensors": artifact.arrays_to_bytes(arrays), "ids.json": b'{"x": [1, 2]}'}
    written = write_artifact(tmp_path / "art", {"note": "hi"}, files)
    art = read_artifact(tmp_path / "art")
    assert isinstance(art, Artifact) and art.root == tmp_path / "art"
    assert art.artifact_id == written.artifact_id
    assert art.artifact_id == hashlib.sha256((tmp_path / "art" / "manifest.json").read_bytes()).hexdigest()
    assert art.manifest["note"] == "hi" and set(art.files) == set(files)
    assert art.files == files
    np.testing.assert_array_equal(art.arrays("a.safetensors")["w"], arrays["w"])
    assert art.json("ids.json") == {"x": [1, 2]}
    with pytest.raises(ArtifactIntegrityError, match="nope"):
        art.arrays("nope")


@pytest.mark.parametrize("name", ["../outside.bin", "/etc/hostname", "sub/inner.bin", "..", ""])
def test_file_names_must_be_plain_names_inside_the_directory(tmp_path, name):
    root = tmp_path / "art"
    write_artifact(root, {}, {"ok.bin": b"x"})
    (tmp_path / "outside.bin").write_bytes(b"secret")
    m = json.loads((root / "manifest.json").read_text())
    m["files"][name] = hashlib.sha256(b"secret").hexdigest()
    rewrite_manifest(root, m)
    with pytest.raises(ArtifactIntegrityError, match="not a plain file name"):
        read_artifact(root)
    with pytest.raises(ArtifactError):
        write_artifact(tmp_path / "other", {}, {name: b"x"})


def test_symlinked_files_are_refused(two_detectors, tmp_path):
    out = two_detectors[0].save(tmp_path / "det")
    # the same bytes behind a symlink: the checksum matches, the link is still refused
    (tmp_path / "index-copy.faiss").write_bytes((out / "index.faiss").read_bytes())
    (out / "index.faiss").unlink()
    (out / "index.faiss").symlink_to(tmp_path / "index-copy.faiss")
    with pytest.raises(ArtifactIntegrityError, match=r"index\.faiss is a symbolic link"):
        novelty.load(out)
    out2 = two_detectors[0].save(tmp_path / "det2")
    (tmp_path / "manifest-copy.json").write_bytes((out2 / "manifest.json").read_bytes())
    (out2 / "manifest.json").unlink()
    (out2 / "manifest.json").symlink_to(tmp_path / "manifest-copy.json")
    with pytest.raises(ArtifactIntegrityError, match=r"manifest\.json is a symbolic link"):
        novelty.load(out2)


def test_a_save_during_a_load_gives_a_clear_error_never_a_mixed_detector(
    two_detectors, embedder, tmp_path, monkeypatch
):
    """B is saved over A after the loader has read A's manifest: the load fails with 'retry' (the files it
    has yet to read are gone with A's directory) and never returns A's manifest with B's files."""
    a, b = two_detectors
    out = a.save(tmp_path / "det")
    real_read = artifact._Directory.read
    saved = []

    def read_then_save(self, name):
        if name == "index.faiss" and not saved:
            saved.append(b.save(out))
        return real_read(self, name)

    monkeypatch.setattr(artifact._Directory, "read", read_then_save)
    with pytest.raises(ArtifactChangedError, match="changed while it was read; retry"):
        novelty.load(out, embedder=embedder)
    monkeypatch.undo()
    again = novelty.load(out, embedder=embedder)
    assert again.artifact_id_ == b.artifact_id_ and again.index_.ntotal == b.index_.ntotal


def test_files_are_read_once_and_parsed_from_those_bytes(two_detectors, embedder, tmp_path, monkeypatch):
    out = two_detectors[0].save(tmp_path / "det")
    reads: list[str] = []
    real_read = artifact._Directory.read

    def counting(self, name):
        reads.append(name)
        return real_read(self, name)

    monkeypatch.setattr(artifact._Directory, "read", counting)
    opened: list[str] = []
    real_open = open

    def no_reopen(file, *args, **kwargs):
        if str(file).startswith(str(out)):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", no_reopen)
    novelty.load(out, embedder=embedder)
    listed = json.loads((out / "manifest.json").read_bytes())["files"]
    assert sorted(reads) == sorted(["manifest.json", "MANIFEST.sha256", *listed])
    assert opened == []


# --- item 4: hand-edited manifests --------------------------------------------------------------------
def _paths(obj, prefix=()):
    """Every key path of a JSON value (dict keys and list positions)."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items:
        yield (*prefix, k)
        yield from _paths(v, (*prefix, k))


def _edit(manifest, path, value):
    m = copy.deepcopy(manifest)
    parent = m
    for k in path[:-1]:
        parent = parent[k]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return m


_DELETE = object()


def test_every_manifest_field_is_type_checked(two_detectors, embedder, tmp_path):
    """Delete each key of a real manifest, or give it a value of the wrong type: loading either works (an
    optional or unused field) or raises an ArtifactError — never KeyError, TypeError, AttributeError…"""
    out = two_detectors[1].save(tmp_path / "det")  # with a head: its fields are covered too
    manifest = json.loads((out / "manifest.json").read_text())
    outcomes: dict[str, int] = {"loaded": 0, "ArtifactError": 0}
    for path in _paths(manifest):
        if path[0] == "files" and len(path) == 1:
            continue  # the file list itself: checked below
        for value in (_DELETE, None, "x", [], {}, -1, 1.5, True):
            if value is _DELETE and isinstance(path[-1], int):
                continue
            rewrite_manifest(out, _edit(manifest, path, value))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    novelty.load(out, embedder=embedder)
                outcomes["loaded"] += 1
            except ArtifactError:
                outcomes["ArtifactError"] += 1
            except Exception as e:  # pragma: no cover - the failure this test exists for
                pytest.fail(f"{'.'.join(map(str, path))} = {value!r}: {type(e).__name__}: {e}")
    print(outcomes)
    assert outcomes["ArtifactError"] > 100
    rewrite_manifest(out, manifest)
    novelty.load(out, embedder=embedder)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("params", "alpha"), "0.05", r"'params\.alpha' must be a finite number, got a string"),
        (("params", "n_neighbors"), _DELETE, r"'params\.n_neighbors' is missing \(expected an integer\)"),
        (("params", "n_neighbors"), -3, r"params: n_neighbors must be an integer ≥ 0"),
        (("index", "n"), "400", r"'index\.n' must be an integer"),
        (("scorers",), {}, r"'scorers' must be a list"),
        (("scorers", 0, "params", "k"), 0, r"scorers\[0\] \(knn\): k must be an integer ≥ 1"),
        (
            ("scorers", 0, "params", "kk"),
            3,
            r"unknown parameter\(s\) kk for scorer 'knn'; valid parameters: k",
        ),
        (("head", "classes"), "dry", r"'head\.classes' must be a list"),
        (("head", "temperature"), -1.0, r"temperature must lie in \(0, inf\)"),
        (("files",), [], r"'files' must be an object"),
        (("format_version",), "1", r"'format_version' must be an integer"),
    ],
)
def test_hand_edited_manifest_errors_name_the_key(two_detectors, embedder, tmp_path, path, value, message):
    out = two_detectors[1].save(tmp_path / "det")
    rewrite_manifest(out, _edit(json.loads((out / "manifest.json").read_text()), path, value))
    with pytest.raises(ArtifactError, match=message):
        novelty.load(out, embedder=embedder)


def test_unknown_scorer_and_other_version_are_artifact_errors(two_detectors, embedder, tmp_path):
    out = two_detectors[0].save(tmp_path / "det")
    m = json.loads((out / "manifest.json").read_text())
    rewrite_manifest(out, _edit(m, ("scorers", 1, "class"), "SomethingElse"))
    with pytest.raises(ArtifactVersionError, match="SomethingElse"):
        novelty.load(out, embedder=embedder)
    rewrite_manifest(out, _edit(m, ("scorers", 1, "name"), "os.system"))
    with pytest.raises(ArtifactVersionError, match=r"'os\.system'.*not registered.*register_scorer"):
        novelty.load(out, embedder=embedder)
    assert issubclass(ArtifactVersionError, NoveltyError)


def test_the_artifact_keeps_the_sha256_of_every_image_the_fit_saw(
    embedder, textile_embeddings, textile_paths, tmp_path
):
    """What a comparison checks a test set against: recorded by fit from files, kept through save and load,
    unknown (None) where the fit had no bytes, after an update by embeddings, and in an older artifact."""
    from novelty.fileio import sha256_file
    from novelty.incremental import update_training_set

    paths = textile_paths["nominal"][:40]
    det = novelty.NoveltyDetector(embedder=embedder, head=False).fit(paths)
    want = tuple(sorted({sha256_file(p) for p in paths}))
    assert det.trained_sha256_ == want
    det.save(tmp_path / "a")
    back = novelty.load(tmp_path / "a", embedder=embedder)
    assert back.trained_sha256_ == want
    ids = json.loads((tmp_path / "a" / "train_ids.json").read_text())
    assert ids["sha256"] == list(want)
    # recalibrating on more files adds theirs
    held = textile_paths["nominal"][40:70]
    back.recalibrate(held)
    assert set(back.trained_sha256_) == set(want) | {sha256_file(p) for p in held}
    # fitted from embeddings without hashes, or updated by embeddings: unknown, never a partial list
    x = textile_embeddings["nominal"]
    plain = novelty.NoveltyDetector(embedder=embedder, head=False).fit_embeddings(x[:40])
    assert plain.trained_sha256_ is None
    plain.save(tmp_path / "b")
    assert "sha256" not in json.loads((tmp_path / "b" / "train_ids.json").read_text())
    assert novelty.load(tmp_path / "b", embedder=embedder).trained_sha256_ is None
    update_training_set(back, add=x[100:105], add_ids=[f"n{i}" for i in range(5)], calibration=x[200:240])
    assert back.trained_sha256_ is None
    with pytest.raises(InvalidInputError, match="not 64 lower-case hex"):
        novelty.NoveltyDetector(embedder=embedder, head=False).fit_embeddings(x[:40], sha256=["x"] * 40)
    with pytest.raises(InvalidInputError, match="39 entries for 40"):
        novelty.NoveltyDetector(embedder=embedder, head=False).fit_embeddings(x[:40], sha256=list(want)[:39])


def test_an_edited_image_hash_list_is_refused(embedder, textile_paths, tmp_path):
    det = novelty.NoveltyDetector(embedder=embedder, head=False).fit(textile_paths["nominal"][:40])
    det.save(tmp_path / "a")
    p = tmp_path / "a" / "train_ids.json"
    ids = json.loads(p.read_text())
    ids["sha256"] = ids["sha256"][::-1]
    p.write_text(json.dumps(ids))
    with pytest.raises(ArtifactIntegrityError):  # the checksum catches it first; the reader would too
        novelty.load(tmp_path / "a", embedder=embedder)
