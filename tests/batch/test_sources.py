"""Batch inputs → InputItems: folders, globs, list files, zip / tar / tar.gz archives (novelty.batch.sources)."""

from __future__ import annotations

import gzip
import io
import logging
import multiprocessing
import operator
import os
import pickle
import random
import struct
import tarfile
import time
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from novelty.batch.sources import (
    GzipReader,
    InputItem,
    expand_inputs,
    is_image_name,
    looks_like_image,
    summarize,
)
from novelty.errors import (
    CorruptImageError,
    ImageNotFoundError,
    ImagePermissionError,
    ImageTooLargeError,
    InvalidInputError,
    NotAnImageError,
    NoveltyError,
    TruncatedImageError,
)
from novelty.images import ByteSource, describe_source, load_image


# --- real images -----------------------------------------------------------------------------------
@cache
def _encoded(name: str, fmt: str, side: int) -> bytes:
    arr = getattr(skimage.data, name)()
    img = Image.fromarray(arr).convert("RGB").resize((side, side))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def jpeg(side: int = 48) -> bytes:
    return _encoded("astronaut", "JPEG", side)


def png(side: int = 40) -> bytes:
    return _encoded("camera", "PNG", side)


def tiny_jpeg() -> bytes:
    return _encoded("coffee", "JPEG", 8)


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def keys(items: list[InputItem]) -> list[str]:
    return [it.key for it in items]


def tree(root: Path) -> list[str]:
    """Every path under ``root`` (files, folders, links), to prove that nothing was written."""
    out = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            out.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(out)


# --- names and signatures --------------------------------------------------------------------------
def test_image_names_and_signatures():
    assert is_image_name("a/B.JPG") and is_image_name("x.heic") and is_image_name("y.Tiff")
    assert not is_image_name("notes.txt") and not is_image_name(".jpg") and not is_image_name("jpg")
    assert looks_like_image(jpeg()[:32]) and looks_like_image(png()[:32])
    for fmt in ("GIF", "BMP", "TIFF", "WEBP", "PPM"):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buf, fmt)
        assert looks_like_image(buf.getvalue()[:32]), fmt
    assert looks_like_image(b"\x00\x00\x00\x1cftypavif" + b"\x00" * 16)
    assert looks_like_image(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 16)
    assert not looks_like_image(b"BMW notes: the car is blue and fast\n")
    assert not looks_like_image(b"PK\x03\x04" + b"\x00" * 28)
    assert not looks_like_image(b"hello world")
    assert not looks_like_image(b"")


# --- directories -----------------------------------------------------------------------------------
@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    write(root / "b.png", png())
    write(root / "a.jpg", jpeg())
    write(root / "sub" / "c.jpg", jpeg())
    write(root / "sub" / "deeper" / "d.JPG", jpeg())
    write(root / "a.jpg.d" / "e.png", png())  # sorts after a.jpg, before b.png
    write(root / ".hidden.jpg", jpeg())
    write(root / ".cache" / "f.jpg", jpeg())
    write(root / "notes.txt", "not an image\n")
    write(root / "text.jpg", "a text file with an image suffix\n")
    write(root / "noext", jpeg())  # extensionless JPEG: found by its signature
    write(root / "pngdata", png())
    write(root / "BMW.dat", "BMW notes\n")
    write(root / "my holiday ünïcødé 写真.png", png())
    return root


def test_directory_recursion_sniffing_and_order(photos: Path):
    items = expand_inputs([photos])
    r = str(photos)
    assert keys(items) == [
        f"{r}/a.jpg",
        f"{r}/a.jpg.d/e.png",
        f"{r}/b.png",
        f"{r}/my holiday ünïcødé 写真.png",
        f"{r}/noext",
        f"{r}/pngdata",
        f"{r}/sub/c.jpg",
        f"{r}/sub/deeper/d.JPG",
        f"{r}/text.jpg",
    ]
    for it in items:
        assert it.error is None and it.member is None and it.path == it.key
        assert it.size == os.path.getsize(it.key)
        assert it.read_bytes() == Path(it.key).read_bytes()
    by_key = {it.key: it for it in items}
    assert load_image(by_key[f"{r}/noext"]).size == (48, 48)
    assert load_image(by_key[f"{r}/my holiday ünïcødé 写真.png"]).size == (40, 40)
    with pytest.raises(NotAnImageError):  # included on its suffix, fails with a specific error
        load_image(by_key[f"{r}/text.jpg"])
    # deterministic: the same list again, whatever the creation order
    assert keys(expand_inputs([str(photos)])) == keys(items)


def test_relative_inputs_give_absolute_keys(photos: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(photos.parent)
    items = expand_inputs(["photos/sub", "./photos/a.jpg", "photos/notes.txt.missing"])
    assert keys(items) == [
        f"{photos}/sub/c.jpg",
        f"{photos}/sub/deeper/d.JPG",
        f"{photos}/a.jpg",
        f"{photos}/notes.txt.missing",
    ]
    assert items[-1].error == "no such file or directory"
    with pytest.raises(ImageNotFoundError):
        items[-1].read_bytes()


def test_explicit_files_are_items_whatever_their_content(photos: Path):
    items = expand_inputs([photos / "BMW.dat", photos / ".hidden.jpg"])
    assert keys(items) == [f"{photos}/BMW.dat", f"{photos}/.hidden.jpg"]
    with pytest.raises(NotAnImageError):
        load_image(items[0])
    assert load_image(items[1]).size == (48, 48)


def test_symlinks(tmp_path: Path):
    root = tmp_path / "root"
    write(root / "a.jpg", jpeg())
    write(tmp_path / "elsewhere" / "b.jpg", jpeg())
    (root / "link.jpg").symlink_to(tmp_path / "elsewhere" / "b.jpg")
    (root / "linkdir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    (root / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert keys(expand_inputs([root])) == [f"{root}/a.jpg", f"{root}/link.jpg"]
    assert keys(expand_inputs([root], follow_symlinks=True)) == [
        f"{root}/a.jpg",
        f"{root}/link.jpg",
        f"{root}/linkdir/b.jpg",
    ]
    (broken,) = expand_inputs([root / "broken.jpg"])
    assert broken.error is not None and broken.error.startswith("no such file or directory")


# --- globs and list files --------------------------------------------------------------------------
def test_glob(photos: Path):
    items = expand_inputs([f"{photos}/**/*.jpg", f"{photos}/*.png", f"{photos}/*.gif"])
    assert keys(items[:4]) == [
        f"{photos}/a.jpg",
        f"{photos}/sub/c.jpg",
        f"{photos}/text.jpg",
        f"{photos}/b.png",  # d.JPG: glob is case-sensitive
    ]
    assert keys(items[4:6]) == [f"{photos}/my holiday ünïcødé 写真.png", f"{photos}/*.gif"]
    assert items[5].error == "no file matches"
    with pytest.raises(ImageNotFoundError, match="no file matches"):
        items[5].read_bytes()
    # a glob over everything keeps only the image candidates; matched folders are walked
    all_items = expand_inputs([f"{photos}/*"])
    assert f"{photos}/notes.txt" not in keys(all_items)
    assert keys(all_items) == keys(expand_inputs([photos]))


def test_list_file(photos: Path, tmp_path: Path):
    lists = tmp_path / "lists"
    lists.mkdir()
    zpath = tmp_path / "lists" / "more.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("z.jpg", jpeg())
    listing = write(
        lists / "todo.txt",
        "\n".join(
            [
                "# nightly inputs",
                "",
                "../photos/a.jpg",  # relative to the list's folder, not to the working directory
                f"   {photos}/b.png   ",  # absolute, padded
                "  # an indented comment",
                "../photos/missing.jpg",
                "../photos/sub",
                "../photos/*.png",
                "more.zip",
                "../photos/my holiday ünïcødé 写真.png",
                "../photos/notes.txt",  # named explicitly: an item (it fails to decode later)
                "",
            ]
        ),
    )
    items = expand_inputs([listing])
    assert keys(items) == [
        f"{photos}/a.jpg",
        f"{photos}/b.png",
        f"{photos}/missing.jpg",
        f"{photos}/sub/c.jpg",
        f"{photos}/sub/deeper/d.JPG",
        f"{photos}/my holiday ünïcødé 写真.png",  # b.png came first already
        f"{zpath}::z.jpg",
        f"{photos}/notes.txt",
    ]
    missing = items[2]
    assert missing.error == "no such file or directory"
    assert summarize(items) == {"n_items": 8, "n_errors": 1, "n_archives": 1, "n_members": 1, "n_files": 6}


def test_entries_without_read_permission(photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    denied = {str(photos / "a.jpg"), str(photos / "b.png")}
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) not in denied and real_access(p, mode))
    listing = write(tmp_path / "l.lst", "photos/a.jpg\nphotos/sub/c.jpg\n")
    locked_list = write(tmp_path / "locked.list", "photos/noext\n")

    def fake_open(file, *args, **kwargs):
        if str(file) == str(locked_list):
            raise PermissionError(13, "Permission denied", str(file))
        return open(file, *args, **kwargs)

    monkeypatch.setattr("novelty.batch.sources.open", fake_open, raising=False)
    items = expand_inputs([listing, photos / "b.png", locked_list])
    assert [(it.key, it.error) for it in items] == [
        (str(photos / "a.jpg"), "permission denied"),
        (str(photos / "sub" / "c.jpg"), None),
        (str(photos / "b.png"), "permission denied"),
        (str(locked_list), "cannot read the list file: permission denied"),
    ]
    with pytest.raises(ImagePermissionError, match="permission denied") as e:  # its own code, not "corrupt"
        items[0].read_bytes()
    assert e.value.reason_code == "permission_denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_entries(photos: Path, tmp_path: Path):
    locked = write(tmp_path / "locked.jpg", jpeg())
    locked.chmod(0)
    listing = write(tmp_path / "l.txt", f"{locked}\n")
    unreadable_list = write(tmp_path / "u.txt", f"{photos}/a.jpg\n")
    unreadable_list.chmod(0)
    try:
        items = expand_inputs([listing, unreadable_list])
    finally:
        locked.chmod(0o644)
        unreadable_list.chmod(0o644)
    assert [(it.key, it.error) for it in items] == [
        (str(locked), "permission denied"),
        (str(unreadable_list), "cannot read the list file: permission denied"),
    ]


# --- archives --------------------------------------------------------------------------------------
def archive_members(outside: Path) -> dict[str, bytes]:
    """Members of the test archives, in name order of the expected items; ``outside`` must never appear."""
    return {
        f"{outside}/abs/x.png": png(),  # absolute member name
        "../../escape-zipslip.jpg": jpeg(),  # climbs out of the archive's folder
        "a.jpg": jpeg(),
        "nested/dir/b.png": png(),
        "noext": jpeg(),
        "ünï cødé/photo 1.jpg": jpeg(),
    }


SKIPPED_MEMBERS = {
    "readme.txt": b"just text",
    ".hidden.jpg": jpeg(),
    "__MACOSX/._a.jpg": b"\x00\x05\x16\x07 resource fork",
    "inner.zip": b"PK\x05\x06" + b"\x00" * 18,  # archives inside archives are not expanded
}


def expected_order(outside: Path) -> list[str]:
    return sorted(archive_members(outside), key=lambda n: n.split("/"))


def make_zip(path: Path, outside: Path) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("nested/"), b"")  # a directory entry
        members = {**archive_members(outside), **SKIPPED_MEMBERS}
        for name in reversed(list(members)):  # stored out of name order
            zf.writestr(name, members[name])
        link = zipfile.ZipInfo("link.jpg")
        link.create_system = 3
        link.external_attr = 0o120777 << 16  # a symbolic link
        zf.writestr(link, "a.jpg")
    return path


def make_tar(path: Path, outside: Path, mode: str) -> Path:
    members = {**archive_members(outside), **SKIPPED_MEMBERS}
    with tarfile.open(path, mode) as tf:
        d = tarfile.TarInfo("nested")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for name in reversed(list(members)):
            ti = tarfile.TarInfo(name)
            ti.size = len(members[name])
            tf.addfile(ti, io.BytesIO(members[name]))
        for name, kind in (("link.jpg", tarfile.SYMTYPE), ("hard.jpg", tarfile.LNKTYPE)):
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = kind, "a.jpg"
            tf.addfile(ti)
    return path


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz"])
def test_archive_members_are_read_in_place(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch):
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)  # relative member names would land in the tmp tree, where we look for them
    outside = tmp_path / "outside"
    path = tmp_path / "archives" / f"upload{suffix}"
    path.parent.mkdir()
    if suffix == ".zip":
        make_zip(path, outside)
    else:
        make_tar(path, outside, "w" if suffix == ".tar" else "w:gz")
    before = tree(tmp_path)

    items = expand_inputs([path])
    members = archive_members(outside)
    assert [it.member for it in items] == expected_order(outside)
    assert keys(items) == [f"{path}::{m}" for m in expected_order(outside)]
    for it in items:
        assert it.path == str(path) and it.error is None
        assert it.size == len(members[it.member or ""])
        assert it.read_bytes() == members[it.member or ""]
        assert isinstance(it, ByteSource) and describe_source(it) == it.key
        img = load_image(it)
        assert img.mode == "RGB" and img.size in ((48, 48), (40, 40))
    assert summarize(items) == {"n_items": 6, "n_errors": 0, "n_archives": 1, "n_members": 6, "n_files": 0}
    # zip-slip: nothing written anywhere, the outside paths never created
    assert tree(tmp_path) == before
    assert not outside.exists()
    for base in (path.parent, work, Path.cwd()):
        assert not (base / "../../escape-zipslip.jpg").exists()


def test_archives_found_in_folders_are_expanded(tmp_path: Path):
    root = tmp_path / "in"
    write(root / "a.jpg", jpeg())
    with zipfile.ZipFile(root / "b.zip", "w") as zf:
        zf.writestr("x.jpg", jpeg())
        zf.writestr("y.PNG", png())
    with tarfile.open(root / "c.TGZ", "w:gz") as tf:
        ti = tarfile.TarInfo("t.jpg")
        ti.size = len(jpeg())
        tf.addfile(ti, io.BytesIO(jpeg()))
    write(root / "d.jpg", jpeg())
    items = expand_inputs([root])
    assert keys(items) == [
        f"{root}/a.jpg",
        f"{root}/b.zip::x.jpg",
        f"{root}/b.zip::y.PNG",
        f"{root}/c.TGZ::t.jpg",
        f"{root}/d.jpg",
    ]
    assert summarize(items)["n_archives"] == 2
    assert all(it.read_bytes()[:3] in (b"\xff\xd8\xff", b"\x89PN") for it in items)


def set_encrypted(path: Path, member: str) -> None:
    """Set the 'encrypted' flag of ``member`` in its local header and its central-directory entry."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data[info.header_offset + 6] |= 0x01
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        (name_len,) = struct.unpack_from("<H", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len] == member.encode():
            data[pos + 8] |= 0x01
        pos = data.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(data))


def test_encrypted_zip_member_is_an_error_item(tmp_path: Path):
    path = tmp_path / "secret.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("open.jpg", jpeg())
        zf.writestr("secret.jpg", jpeg())
    set_encrypted(path, "secret.jpg")
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("secret.jpg").flag_bits & 1
    ok, secret = expand_inputs([path])
    assert ok.error is None and ok.read_bytes() == jpeg()
    assert secret.key == f"{path}::secret.jpg" and secret.member == "secret.jpg"
    assert secret.error is not None and "encrypted" in secret.error
    with pytest.raises(CorruptImageError, match="encrypted"):
        secret.read_bytes()
    with pytest.raises(CorruptImageError):
        load_image(secret)
    assert summarize([ok, secret])["n_errors"] == 1


def test_corrupt_archives_become_one_error_item(tmp_path: Path):
    good = make_zip(tmp_path / "good.zip", tmp_path / "outside")
    truncated = write(tmp_path / "truncated.zip", good.read_bytes()[: good.stat().st_size // 2])
    garbage_tar = write(tmp_path / "garbage.tar", b"this is not a tar archive at all" * 40)
    empty_tgz = write(tmp_path / "empty.tgz", b"")
    not_gzip = write(tmp_path / "bad.tar.gz", b"\x1f\x8b\x08\x00" + b"\xff" * 200)
    items = expand_inputs([truncated, garbage_tar, empty_tgz, not_gzip])
    assert keys(items) == [str(truncated), str(garbage_tar), str(empty_tgz), str(not_gzip)]
    for it in items:
        assert it.error is not None and it.member is None
        with pytest.raises(CorruptImageError):
            it.read_bytes()
    assert "zip" in (items[0].error or "")
    assert summarize(items) == {"n_items": 4, "n_errors": 4, "n_archives": 4, "n_members": 0, "n_files": 0}


def test_truncated_tar_gz_keeps_the_members_before(tmp_path: Path):
    path = tmp_path / "t.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for i in range(40):
            data = _encoded("astronaut", "PNG", 64 + i)  # PNG compresses badly: the cut lands mid-archive
            ti = tarfile.TarInfo(f"img{i:02d}.png")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    cut = write(tmp_path / "cut.tar.gz", path.read_bytes()[: path.stat().st_size // 2])
    items = expand_inputs([cut])
    *members, err = items
    assert 5 < len(members) < 40
    assert err.key == str(cut) and err.member is None and "truncated" in (err.error or "")
    assert all(m.error is None for m in members)
    assert members[0].read_bytes() == _encoded("astronaut", "PNG", 64)
    outcomes: list[bool | str] = []
    for m in members:  # a member listed before the cut may still end after it
        try:
            outcomes.append(m.read_bytes() == _encoded("astronaut", "PNG", int(m.key[-6:-4]) + 64))
        except TruncatedImageError:
            outcomes.append("truncated")
    assert outcomes[:-1] == [True] * (len(members) - 1) and outcomes[-1] in (True, "truncated")


def build_archive(path: Path, contents: dict[str, bytes]) -> None:
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("pad.bin", os.urandom(3000))
            for name, data in contents.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(path, "w:gz") as tf:
            for name, data in contents.items():
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_rewritten_after_listing(tmp_path: Path, suffix: str):
    """A stale offset is never trusted: members are then found by name."""
    path = tmp_path / f"a{suffix}"
    build_archive(path, {"a.jpg": jpeg(), "b.png": png()})
    items = expand_inputs([path])
    assert [it.read_bytes() for it in items] == [jpeg(), png()]  # handles now cached
    build_archive(path, {"b.png": png(), "a.jpg": jpeg()})
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock resolution
    assert [it.read_bytes() for it in items] == [jpeg(), png()]
    build_archive(path, {"b.png": png()})
    os.utime(path, ns=(2, 2))
    with pytest.raises(ImageNotFoundError, match="no such member"):
        items[0].read_bytes()
    path.unlink()
    with pytest.raises(ImageNotFoundError, match="no longer exists"):
        items[1].read_bytes()


# --- duplicates, errors, summaries -----------------------------------------------------------------
def test_duplicates_dropped_and_logged(photos: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="novelty.batch.sources")
    a = photos / "a.jpg"
    items = expand_inputs([a, f"{photos}/./a.jpg", photos / "sub", photos / "sub", tmp_path / "gone.jpg"] * 2)
    assert keys(items) == [
        str(a),
        f"{photos}/sub/c.jpg",
        f"{photos}/sub/deeper/d.JPG",
        str(tmp_path / "gone.jpg"),
    ]
    assert "dropped 10 duplicate" in caplog.text
    assert "4 item(s)" in caplog.text and "1 unreadable" in caplog.text


def test_single_path_and_empty_inputs(photos: Path):
    assert keys(expand_inputs(photos / "sub")) == [f"{photos}/sub/c.jpg", f"{photos}/sub/deeper/d.JPG"]
    assert expand_inputs([]) == []
    (empty,) = expand_inputs([""])
    assert empty.error == "empty path"
    with pytest.raises(NoveltyError):
        empty.read_bytes()


# --- worker processes ------------------------------------------------------------------------------
def test_items_pickle_and_read_in_a_child_process(photos: Path, tmp_path: Path):
    zpath = make_zip(tmp_path / "z.zip", tmp_path / "outside")
    tpath = make_tar(tmp_path / "t.tar.gz", tmp_path / "outside", "w:gz")
    items = expand_inputs([photos / "a.jpg", zpath, tpath, tmp_path / "gone.jpg"])
    assert len(items) == 14
    for it in items:
        clone = pickle.loads(pickle.dumps(it))
        assert clone == it and len(pickle.dumps(it)) < 600
    good = [it for it in items if it.error is None]
    expected = [
        it.read_bytes() for it in good
    ]  # the parent has open handles now: the child must not share them
    try:
        ctx = multiprocessing.get_context("fork")
    except ValueError:  # pragma: no cover - no fork on this platform
        pytest.skip("fork is not available")
    with ctx.Pool(2) as pool:
        got = pool.map(operator.methodcaller("read_bytes"), good, chunksize=1)
        sizes = pool.map(_decoded_size, items)
    assert got == expected
    assert [it.read_bytes() for it in good] == expected  # the parent's handles still work
    assert sizes[:-1] == [(48, 48)] + [(40, 40), (48, 48), (48, 48), (40, 40), (48, 48), (48, 48)] * 2
    assert sizes[-1] == "not_found"


def _decoded_size(item: InputItem) -> tuple[int, int] | str:
    try:
        return load_image(item).size
    except NoveltyError as e:
        return getattr(e, "reason_code", type(e).__name__)


# --- gzip random access ----------------------------------------------------------------------------
def test_gzip_reader_random_access(tmp_path: Path):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 4, 300_000, dtype=np.uint8).tobytes(), os.urandom(200_000), b"\x00" * 500_000]
    data = b"".join(parts)
    # two gzip members and zero padding, as gzip(1) accepts
    raw = gzip.compress(parts[0]) + gzip.compress(parts[1] + parts[2]) + b"\x00" * 1000
    path = write(tmp_path / "x.gz", raw)
    with GzipReader(open(path, "rb"), spacing=8192, max_checkpoints=16) as g:
        assert g.read() == data and g.tell() == len(data) and g.read(10) == b""
        spots = [0, len(data) - 5, 1, 299_990, 512_345, 5, len(data), len(data) + 10, 777_777]
        spots += [int(x) for x in rng.integers(0, len(data), 200)]
        for pos in spots:
            assert g.seek(pos) == min(pos, len(data))
            assert g.read(37) == data[pos : pos + 37]
            assert g.tell() == min(pos + 37, len(data))
        g.seek(10)
        g.seek(5, io.SEEK_CUR)
        assert g.read(4) == data[15:19]
        assert len(g._cp) <= 16  # thinned as the stream grew
    truncated = write(tmp_path / "t.gz", raw[: len(raw) // 3])
    with GzipReader(open(truncated, "rb")) as g, pytest.raises(EOFError):
        g.read()


# --- scale -----------------------------------------------------------------------------------------
N_LARGE = 3000


def test_large_zip_is_linear(tmp_path: Path):
    path = tmp_path / "large.zip"
    data = tiny_jpeg()
    names = [f"d{i % 7}/img_{i:05d}.jpg" for i in range(N_LARGE)] + [f"raw_{i:05d}" for i in range(200)]
    random.Random(0).shuffle(names)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n in names:
            zf.writestr(n, data)
    t = time.perf_counter()
    items = expand_inputs([path])  # the 200 extensionless members are sniffed
    assert len(items) == N_LARGE + 200
    assert all(it.read_bytes() == data for it in items)
    assert time.perf_counter() - t < 5.0
    assert keys(items) == sorted(keys(items), key=lambda k: k.split("::")[1].split("/"))


def test_large_tar_gz_read_out_of_archive_order_is_linear(tmp_path: Path):
    path = tmp_path / "large.tar.gz"
    data = tiny_jpeg()
    names = [f"img_{i:05d}.jpg" for i in range(N_LARGE)]
    random.Random(0).shuffle(names)  # as `tar czf` writes them: directory order, not name order
    with tarfile.open(path, "w:gz") as tf:
        for n in names:
            ti = tarfile.TarInfo(n)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    t = time.perf_counter()
    items = expand_inputs([path])
    assert [it.member for it in items] == sorted(names)
    assert all(it.read_bytes() == data for it in items)  # name order = random positions in the stream
    assert time.perf_counter() - t < 5.0


# --- duplicate member names, FIFOs, the member size limit ------------------------------------------
@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_every_copy_of_a_duplicate_member_is_an_item(tmp_path: Path, suffix: str):
    """unzip / tar extract the last copy of a name; a scan must see every copy, each under its own key."""
    path = tmp_path / f"dup{suffix}"
    copies = [jpeg(), png(), jpeg(side=32)]
    if suffix == ".zip":
        with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as zf:
            for data in copies:
                zf.writestr("x/a.jpg", data)
            zf.writestr("x/a.jpg#2", tiny_jpeg())  # a name that looks like a numbered copy
    else:
        with tarfile.open(path, "w:gz") as tf:
            for name, data in [("x/a.jpg", d) for d in copies] + [("x/a.jpg#2", tiny_jpeg())]:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    items = expand_inputs([path])
    assert len({it.key for it in items}) == len(items) == 4  # keys stay unique
    by_key = {it.key: it for it in items}
    assert [by_key[f"{path}::x/a.jpg{n}"].read_bytes() for n in ("", "#2", "#3")] == copies
    literal = [it for it in items if it.member == "x/a.jpg#2"]
    assert len(literal) == 1 and literal[0].read_bytes() == tiny_jpeg()
    # the archive changes after listing: copies are then found by name and rank, never mixed up
    data = path.read_bytes()
    path.write_bytes(data)
    os.utime(path, ns=(5, 5))
    assert [by_key[f"{path}::x/a.jpg{n}"].read_bytes() for n in ("", "#2", "#3")] == copies


def test_a_listed_file_replaced_by_a_fifo_is_an_error_not_a_hang(tmp_path: Path):
    from odd_inputs import no_hang

    path = write(tmp_path / "a.jpg", jpeg())
    listing = write(tmp_path / "l.txt", "a.jpg\n")
    (item,) = expand_inputs([listing])
    path.unlink()
    os.mkfifo(path)
    with no_hang(), pytest.raises(NotAnImageError, match="is a FIFO"):
        item.read_bytes()
    with no_hang(), pytest.raises(NotAnImageError):
        load_image(item)


def test_member_size_limit(tmp_path: Path):
    path = tmp_path / "big.zip"
    big = jpeg() + b"\0" * 300_000  # decodes fine (trailing bytes), but is large
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.jpg", big)
        zf.writestr("big_noext", big)  # found by its signature, refused by its size
        zf.writestr("small.jpg", jpeg())
    items = expand_inputs([path], max_member_bytes=100_000)
    assert [(it.member, it.error_code) for it in items] == [
        ("big.jpg", "too_large"),
        ("big_noext", "too_large"),
        ("small.jpg", None),
    ]
    with pytest.raises(ImageTooLargeError, match=r"exceeds the limit of 100,000.*--max-member-bytes"):
        items[0].read_bytes()
    assert [it.read_bytes() for it in expand_inputs([path], max_member_bytes=1 << 20)] == [big, big, jpeg()]
    with pytest.raises(InvalidInputError):
        expand_inputs([path], max_member_bytes=0)
