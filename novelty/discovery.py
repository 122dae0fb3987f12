"""Which files of a folder are images: one rule, used by ``NoveltyDetector.fit(folder)`` and ``novelty score``.

    for found in walk_folder("photos/"):     # Found(path, kind="image" | "archive" | "error", ...)
        ...
    paths = image_files("photos/")           # the library's view: image files only, in name order

The rule (the batch layer, :mod:`novelty.batch.sources`, applies the same one through :func:`walk_folder`):

- the folder is walked recursively, in name order, component by component (``a/x.jpg`` before ``a.jpg``);
- hidden entries (``.name``) are skipped, files and folders alike;
- symbolic links to files are taken; links to folders are followed only with ``follow_symlinks=True``
  (loops are detected); broken links, FIFOs, sockets and devices are skipped (never opened);
- a file is an image **candidate** when its suffix says image (:data:`IMAGE_SUFFIXES`, any case, including
  formats the decoder may not read, such as HEIC or JPEG XL: those get an error, never silence) or when its
  first bytes are an image signature (:func:`looks_like_image`): ``notes.txt`` is skipped, ``text.jpg`` is a
  candidate (it fails to decode later with a specific error), an extensionless JPEG is found;
- zip / tar / tar.gz files are reported as ``kind="archive"``: the batch layer reads their members; the
  library (which reads image files only) refuses them with a message saying how to read them;
- a candidate this process may not read, and a folder that cannot be listed, are reported as
  ``kind="error"`` with the reason.

This module is part of the core: it imports nothing from the layers above.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from novelty.errors import InvalidInputError

__all__ = [
    "ARCHIVE_SUFFIXES",
    "IMAGE_SUFFIXES",
    "Found",
    "archive_kind",
    "classify_file",
    "image_files",
    "is_image_name",
    "looks_like_image",
    "sniff",
    "walk_folder",
]

#: Suffixes (lower case, without the dot) that say "image": the formats the decoder reads, and image formats
#: it may not read (HEIC/AVIF without a plugin, JPEG XL, camera raw, SVG, EXR…), which must give an error
#: row rather than be skipped as "not an image".
IMAGE_SUFFIXES = frozenset(
    {"jpg", "jpeg", "jpe", "jfif", "png", "apng", "gif", "bmp", "dib", "tif", "tiff", "webp", "ico", "cur"}
    | {"ppm", "pgm", "pbm", "pnm", "pam", "jp2", "j2k", "jpx", "jpf", "tga", "pcx", "dds", "icns", "psd"}
    | {"sgi", "qoi", "xbm", "heic", "heif", "avif", "jxl", "dng", "cr2", "cr3", "nef", "arw", "orf", "rw2"}
    | {"raf", "srw", "pef", "exr", "hdr", "svg"}
)
#: Archive suffixes (lower case): their members are read by the batch layer (never extracted).
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")

SNIFF_BYTES = 32
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_BMP_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def is_image_name(name: str) -> bool:
    """Whether ``name`` (a path or an archive member name) ends with an image suffix, in any case."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    dot = base.rfind(".")
    return dot > 0 and base[dot + 1 :].lower() in IMAGE_SUFFIXES


def looks_like_image(head: bytes) -> bool:
    """Whether the first bytes of a file (32 are enough) are the signature of an image format."""
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a")):
        return True
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):  # TIFF, BigTIFF (and camera raw)
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:  # ISO-BMFF still images: HEIC, AVIF
        return True
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):  # JPEG 2000 (jp2, j2k)
        return True
    if head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):  # JPEG XL container
        return True
    if head.startswith((b"8BPS", b"qoif")):  # Photoshop, QOI
        return True
    if head[:2] == b"BM" and len(head) >= 18:  # BMP: "BM" alone is too weak; check the DIB header size too
        return int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES
    # binary PNM / PAM: P4, P5, P6, P7 and whitespace
    return len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"4567" and head[2:3] in b" \t\r\n"


def archive_kind(name: str) -> str | None:
    """``"zip"``, ``"tar"`` (plain or gzip-ed) or ``None``, from the suffix of ``name``."""
    low = name.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith((".tar", ".tar.gz", ".tgz")):
        return "tar"
    return None


def sniff(path: str | os.PathLike[str], n: int = SNIFF_BYTES) -> bytes | None:
    """The first ``n`` bytes of a regular file, or ``None`` when it cannot be read or is not a regular file.

    Opened non-blocking, so a FIFO or a device put where a file was never hangs the caller."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, n)
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Found:
    """One entry of a walk: an image candidate, an archive, or something that cannot be read.

    ``size`` and ``mtime_ns`` come from the ``stat`` of the walk (``None`` for errors); ``reason`` says why
    an ``"error"`` entry cannot be read and ``code`` is the matching ``ImageError.reason_code``."""

    path: str
    kind: str  # "image" | "archive" | "error"
    size: int | None = None
    mtime_ns: int | None = None
    reason: str | None = None
    code: str | None = None


def os_reason(e: OSError) -> tuple[str, str]:
    """``(reason_code, reason)`` of an ``OSError`` met while listing or opening."""
    if isinstance(e, (FileNotFoundError, NotADirectoryError)):
        return "not_found", "no such file or directory"
    if isinstance(e, PermissionError):
        return "permission_denied", "permission denied"
    return "unreadable", str(e.strerror or e)


def classify_file(path: str, st: os.stat_result, skipped: Counter[str] | None = None) -> Found | None:
    """A regular file met in a folder or a glob: an archive, an image candidate, an error, or ``None``
    (skipped, counted in ``skipped`` under the reason)."""
    if archive_kind(path):
        return Found(path, "archive", st.st_size, st.st_mtime_ns)
    if not is_image_name(path):
        head = sniff(path)
        if head is None:
            _count(skipped, "unreadable")
            return None
        if not looks_like_image(head):
            _count(skipped, "not an image")
            return None
    if not os.access(path, os.R_OK):
        return Found(path, "error", reason="permission denied", code="permission_denied")
    return Found(path, "image", st.st_size, st.st_mtime_ns)


def _count(skipped: Counter[str] | None, why: str) -> None:
    if skipped is not None:
        skipped[why] += 1


def walk_folder(
    top: str | os.PathLike[str], *, follow_symlinks: bool = False, skipped: Counter[str] | None = None
) -> Iterator[Found]:
    """Every image candidate, archive and unreadable entry under the folder ``top``, in name order.

    ``skipped`` (a ``Counter``) receives the number of entries left out, by reason."""
    top = os.path.abspath(os.fspath(top))
    st = os.stat(top)
    yield from _walk(top, {(st.st_dev, st.st_ino)}, follow_symlinks, skipped)


def _walk(
    folder: str, seen: set[tuple[int, int]], follow_symlinks: bool, skipped: Counter[str] | None
) -> Iterator[Found]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        code, reason = os_reason(e)
        yield Found(folder, "error", reason=f"cannot list the directory: {reason}", code=code)
        return
    for entry in entries:
        if entry.name.startswith("."):
            _count(skipped, "hidden")
            continue
        path = os.path.join(folder, entry.name)
        try:
            is_link = entry.is_symlink()
            if entry.is_dir():  # follows links
                if is_link and not follow_symlinks:
                    _count(skipped, "symbolic link to a directory (follow_symlinks=False)")
                    continue
                st = entry.stat()
                ident = (st.st_dev, st.st_ino)
                if ident in seen:
                    _count(skipped, "directory already visited (link loop)")
                    continue
                seen.add(ident)
                yield from _walk(path, seen, follow_symlinks, skipped)
                seen.discard(ident)
            elif entry.is_file():
                found = classify_file(path, entry.stat(), skipped)
                if found is not None:
                    yield found
            elif is_link:
                _count(skipped, "broken symbolic link")
            else:
                _count(skipped, "not a regular file")
        except OSError:
            _count(skipped, "unreadable")


def image_files(folder: str | os.PathLike[str], *, follow_symlinks: bool = False) -> list[Path]:
    """The image files of ``folder`` for the library (``NoveltyDetector.fit(folder)``), in name order.

    A candidate this process may not read is kept (decoding it raises its specific error); an archive or a
    folder that cannot be listed raises :class:`~novelty.errors.InvalidInputError`, as does a folder
    without any image."""
    skipped: Counter[str] = Counter()
    out: list[Path] = []
    for found in walk_folder(folder, follow_symlinks=follow_symlinks, skipped=skipped):
        if found.kind == "archive":
            raise InvalidInputError(
                f"{found.path}: an archive inside {os.fspath(folder)}; fitting from a folder reads image "
                "files only: pass novelty.batch.expand_inputs([folder]) to read archive members too "
                "(or use `novelty fit`)"
            )
        if found.kind == "error" and found.code != "permission_denied":
            raise InvalidInputError(f"{found.path}: {found.reason}")
        out.append(Path(found.path))
    if not out:
        left = ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
        raise InvalidInputError(
            f"directory {os.fspath(folder)} contains no image files" + (f" (skipped: {left})" if left else "")
        )
    return out
