"""Only images become labelled entries: `novelty dataset add-csv` decodes every file when it adds it, refuses paths
outside the CSV's folder unless told otherwise, names the row and the path of every refusal, and writes nothing
when any row is refused. A file that stops being an image later is named by its path when it is embedded."""

from __future__ import annotations

from pathlib import Path

import pytest
from hardening_support import backbone_weights, selection_file, small_image  # tests/hardening_support.py

from novelty.cli import EXIT_FAILURE, EXIT_OK, main
from novelty.errors import ImageError, InvalidInputError, NotAnImageError
from novelty.fileio import sha256_file
from novelty.flywheel.dataset import Dataset, Entry, embed_entries, read_image_file
from novelty.flywheel.labels.labelimport import LabelImportError, entries_from_csv, import_labels


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def setup(tmp_path) -> tuple[Path, Path]:
    """tmp/data/ with two images and a text file, an empty dataset tmp/ds, and a secret outside data/."""
    data = tmp_path / "data"
    small_image(data / "img0.png", 0)
    small_image(data / "sub" / "img1.jpg", 1)
    (data / "notes.txt").write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
    (tmp_path / "secret.txt").write_text("not for the dataset\n")
    small_image(tmp_path / "elsewhere.png", 2)
    ds = tmp_path / "ds"
    assert main(["dataset", "create", str(ds), "--classes", "dry,wet"]) == EXIT_OK
    return data, ds


def test_add_csv_refuses_a_file_that_is_not_an_image_and_adds_nothing(setup, capsys):
    data, ds = setup
    before = _snapshot(ds)
    (data / "train.csv").write_text("path,label\nimg0.png,dry\nnotes.txt,wet\nsub/img1.jpg,wet\n")
    capsys.readouterr()
    assert main(["dataset", "add-csv", str(ds), str(data / "train.csv")]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unexpected" not in err
    assert "train.csv line 3" in err and str(data / "notes.txt") in err and "not an image" in err
    assert _snapshot(ds) == before and len(Dataset.open(ds)) == 0  # all or nothing


def test_add_csv_refuses_paths_outside_the_csv_folder(setup, capsys):
    data, ds = setup
    before = _snapshot(ds)
    depth = len(data.parts)
    (data / "train.csv").write_text(
        "path,label\nimg0.png,dry\n" + "../" * depth + "etc/passwd,wet\n../secret.txt,dry\n"
    )
    capsys.readouterr()
    assert main(["dataset", "add-csv", str(ds), str(data / "train.csv")]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unexpected" not in err
    assert "2 path(s) outside the CSV's folder" in err and "--allow-outside-root" in err
    assert "train.csv line 3" in err and "/etc/passwd" in err and "train.csv line 4" in err
    assert _snapshot(ds) == before
    # allowed outside the folder, they are still decoded: neither is an image
    assert (
        main(["dataset", "add-csv", str(ds), str(data / "train.csv"), "--allow-outside-root"]) == EXIT_FAILURE
    )
    err = capsys.readouterr().err
    assert "2 unreadable image(s)" in err and str(Path("/etc/passwd")) in err and "secret.txt" in err
    assert _snapshot(ds) == before
    # an image outside the folder, allowed explicitly
    (data / "outside.csv").write_text("path,label\nimg0.png,dry\n../elsewhere.png,wet\n")
    assert main(["dataset", "add-csv", str(ds), str(data / "outside.csv")]) == EXIT_FAILURE
    assert main(["dataset", "add-csv", str(ds), str(data / "outside.csv"), "--allow-outside-root"]) == EXIT_OK
    assert sorted(Path(e.path).name for e in Dataset.open(ds).entries()) == ["elsewhere.png", "img0.png"]


def test_entries_from_csv_library_keyword(setup):
    data, _ = setup
    (data / "abs.csv").write_text(f"path,label\n{data.parent / 'elsewhere.png'},dry\nsub/../img0.png,wet\n")
    with pytest.raises(LabelImportError, match=r"1 path\(s\) outside.*abs.csv line 2"):
        entries_from_csv(data / "abs.csv")
    es = entries_from_csv(data / "abs.csv", allow_outside_root=True)
    assert [Path(e.path).name for e in es] == ["elsewhere.png", "img0.png"]
    assert es[1].path == str(data / "img0.png")  # ".." resolved, inside the folder


def test_read_image_file_decodes_what_it_hashes(setup):
    data, _ = setup
    assert read_image_file(data / "img0.png") == sha256_file(data / "img0.png")
    with pytest.raises(InvalidInputError, match=r"notes.txt: not an image \(not a recognised image format"):
        read_image_file(data / "notes.txt")
    jpg = small_image(data / "big.jpg", 3, size=(256, 256)).read_bytes()
    (data / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])  # cut inside the pixel data
    with pytest.raises(InvalidInputError, match=r"cut.jpg: not an image \(file is truncated"):
        read_image_file(data / "cut.jpg")
    with pytest.raises(InvalidInputError, match="the file changed"):
        Entry.from_file(data / "img0.png", "dry", source="s", labeller="human:x", sha256="0" * 64)


def test_import_labels_refuses_a_selected_file_that_is_not_an_image(setup, tmp_path):
    data, ds = setup
    sel = selection_file(tmp_path / "selection.json", [data / "img0.png", data / "notes.txt"])
    (tmp_path / "labels.csv").write_text("id,label\nitem0,dry\nitem1,wet\n")
    before = _snapshot(ds)
    with pytest.raises(LabelImportError, match=r"labels.csv line 3: unreadable: .*notes.txt: not an image"):
        import_labels(ds, tmp_path / "labels.csv", sel)
    assert _snapshot(ds) == before


def test_embedding_an_entry_that_is_no_image_names_its_path(tmp_path):
    import novelty

    bad = tmp_path / "passwd-copy.jpg"
    bad.write_text("root:x:0:0:root:/root:/bin/bash\n" * 40)
    entry = Entry(
        id="e1", sha256=sha256_file(bad), path=str(bad), label="dry", source="s", labeller="human:x"
    )  # made by hand: from_file would refuse it
    emb = novelty.Embedder("resnet10t", weights=backbone_weights(tmp_path / "w.safetensors"), num_workers=0)
    with pytest.raises(NotAnImageError) as info:
        embed_entries([entry], emb)
    assert (
        isinstance(info.value, ImageError) and str(bad) in str(info.value) and "bytes>" not in str(info.value)
    )
