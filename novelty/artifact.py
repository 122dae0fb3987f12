"""The detector artifact on disk: a directory of files listed, with their sha256, in ``manifest.json``.

No pickle anywhere: JSON for metadata, safetensors for arrays, FAISS's own format for the index.
``MANIFEST.sha256`` holds the hash of ``manifest.json`` itself, so a change to *any* file is detected.

Writing (:func:`write_artifact`) is atomic at the directory level: every file goes to a temporary sibling
directory, which then takes the target's place in one rename (an atomic exchange where the OS has one). An
existing target is replaced only when it is a detector artifact itself; any other folder or file is refused.

Reading (:func:`read_artifact`) opens the directory once and reads every file's bytes **once**, through that
directory handle and without following symlinks, hashes exactly those bytes and hands them over in memory:
whatever is parsed afterwards is what was verified, so a concurrent save can never yield a detector made of
two artifacts. A save that removes the directory while it is read gives :class:`ArtifactChangedError`.

**Registered versions are pinned.** A model registry (:mod:`novelty.flywheel.registry.store`) keeps each version as
``REGISTRY/versions/<NNNN>/detector/`` beside ``info.json``, which names the artifact id registered. Reading a
detector at such a place checks that id (:class:`ArtifactIntegrityError` when the bytes there are another
detector's), so ``REGISTRY/champion`` never loads anything but what was registered; and :func:`write_artifact`
refuses every target inside a registry (:func:`registry_root`): only the registry writes there.
"""

from __future__ import annotations

import ctypes
import errno
import json as _json
import os
import shutil
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from novelty import identity
from novelty.errors import ArtifactChangedError, ArtifactError, ArtifactIntegrityError, ArtifactVersionError
from novelty.fileio import TMP_PREFIX, fsync_dir, read_regular_file, sha256_bytes, temp_sibling
from novelty.manifest import ManifestReader, json_type

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Artifact",
    "ManifestReader",
    "arrays_to_bytes",
    "check_file_name",
    "read_artifact",
    "registry_root",
    "write_artifact",
]

FORMAT = "novelty-detector"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "MANIFEST.sha256"
_RESERVED = (MANIFEST, MANIFEST_HASH)
_MAX_FOREIGN_MANIFEST = 16 << 20  # a larger manifest.json in a save target is not one of ours
# the layout of a model registry (novelty.flywheel.registry.store), which pins the detector of every version
REGISTRY_FILE = "registry.json"
REGISTRY_VERSIONS = "versions"
REGISTRY_DETECTOR = "detector"
REGISTRY_INFO = "info.json"


def registry_root(path: str | os.PathLike[str]) -> Path | None:
    """The model registry that ``path`` lies in (itself or a parent holding ``registry.json``), or ``None``.
    Symlinks are resolved first, so ``REGISTRY/champion/..`` is found too."""
    p = Path(os.path.realpath(path))
    for d in (p, *p.parents):
        if os.path.isfile(d / REGISTRY_FILE):
            return d
    return None


def _check_pin(root: Path, artifact_id: str) -> None:
    """At ``REGISTRY/versions/<NNNN>/detector``: the artifact must be the one ``info.json`` registered."""
    real = Path(os.path.realpath(root))
    version_dir = real.parent
    if (
        real.name != REGISTRY_DETECTOR
        or version_dir.parent.name != REGISTRY_VERSIONS
        or version_dir.name.startswith(TMP_PREFIX)  # being staged by the registry: not registered yet
        or not os.path.isfile(version_dir.parent.parent / REGISTRY_FILE)
    ):
        return
    info_path = version_dir / REGISTRY_INFO
    try:
        info = _json.loads(read_regular_file(info_path, max_bytes=1 << 20))
    except (OSError, ValueError, UnicodeDecodeError, OverflowError) as e:
        raise ArtifactIntegrityError(
            f"{root}: a registered version, but its {info_path} cannot be read ({e}); the registry is damaged"
        ) from e
    pinned = info.get("artifact_id") if isinstance(info, dict) else None
    if pinned != artifact_id:
        raise ArtifactIntegrityError(
            f"{root}: version {version_dir.name} was registered as detector {str(pinned)[:12]}… but now holds "
            f"{artifact_id[:12]}…; a registered version must never change: register the new detector as a new "
            "version instead"
        )


# --- names ---------------------------------------------------------------------------------------------
def check_file_name(name: object, where: str) -> str:
    """``name`` when it is a plain file name inside the artifact directory (no ``/``, ``..``, absolute path)."""
    if (
        not isinstance(name, str)
        or name in ("", ".", "..", *_RESERVED)
        or any(c in name for c in ("/", "\\", "\0"))
        or os.path.isabs(name)
        or Path(name).name != name
    ):
        raise ArtifactIntegrityError(
            f"{where}: {name!r} is not a plain file name inside the artifact directory; refusing to read it"
        )
    return name


# --- the artifact in memory -------------------------------------------------------------------------
@dataclass(frozen=True)
class Artifact:
    """A verified artifact: its manifest and the bytes of every file it lists, each read once and checked
    against the manifest's sha256. ``artifact_id`` is the sha256 of the ``manifest.json`` bytes, so it names
    this exact content (any changed file changes the manifest, hence the id)."""

    root: Path
    manifest: dict[str, Any]
    files: dict[str, bytes]
    artifact_id: str

    def data(self, name: str) -> bytes:
        """The verified bytes of a listed file."""
        try:
            return self.files[name]
        except (KeyError, TypeError):
            raise ArtifactIntegrityError(
                f"{self.root}: the manifest refers to {name!r}, which its file list does not hold"
            ) from None

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """A safetensors file, parsed from the verified bytes."""
        from safetensors.numpy import load

        data = self.data(name)
        try:
            return dict(load(data))
        except Exception as e:  # safetensors raises its own error types
            raise ArtifactIntegrityError(f"{self.root / name}: not a readable safetensors file ({e})") from e

    def json(self, name: str) -> Any:
        """A JSON file, parsed from the verified bytes."""
        try:
            return _json.loads(self.data(name))
        except (ValueError, UnicodeDecodeError) as e:
            raise ArtifactIntegrityError(f"{self.root / name}: not valid JSON ({e})") from e


def arrays_to_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Named arrays as safetensors bytes."""
    from safetensors.numpy import save

    return bytes(save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


# --- reading ----------------------------------------------------------------------------------------
_BY_DIR_FD = os.open in os.supports_dir_fd and os.scandir in os.supports_fd


class _Directory:
    """An open artifact directory: files are opened relative to it, never through a symlink."""

    def __init__(self, root: Path):
        self.root = root
        self.fd: int | None = None
        if _BY_DIR_FD:
            self.fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        elif not root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(root))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def entries(self) -> list[tuple[str, bool]]:
        """``(name, is_directory)`` of every entry (symlinks are not followed)."""
        with os.scandir(self.fd if self.fd is not None else self.root) as it:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]

    def replaced(self) -> bool:
        """Whether ``root`` no longer names the directory being read (a save replaced or removed it)."""
        try:
            now = os.stat(self.root)
        except OSError:
            return True
        if self.fd is None:
            return False
        own = os.fstat(self.fd)
        return (now.st_dev, now.st_ino) != (own.st_dev, own.st_ino)

    def read(self, name: str) -> bytes:
        flags = (
            os.O_RDONLY
            | getattr(os, "O_NONBLOCK", 0)
            | getattr(os, "O_NOCTTY", 0)
            | getattr(os, "O_NOFOLLOW", 0)
        )
        if self.fd is None and os.path.islink(self.root / name):
            raise OSError(errno.ELOOP, "is a symbolic link", str(self.root / name))
        fd = os.open(name, flags, dir_fd=self.fd) if self.fd is not None else os.open(self.root / name, flags)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise ArtifactIntegrityError(f"{self.root / name}: not a regular file; refusing to read it")
            os.set_blocking(fd, True)
            chunks = []
            while block := os.read(fd, 1 << 22):
                chunks.append(block)
            return b"".join(chunks)
        finally:
            os.close(fd)


def _read_listed(d: _Directory, name: str, *, missing: str) -> bytes:
    """The bytes of ``name``; every OS failure becomes an :class:`ArtifactError` that says what happened."""
    try:
        return d.read(name)
    except FileNotFoundError:
        if d.replaced():
            raise ArtifactChangedError(
                f"{d.root}: the artifact changed while it was read; retry (another process saved or removed it)"
            ) from None
        raise ArtifactIntegrityError(f"{d.root}: {missing}") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, getattr(errno, "EMLINK", errno.ELOOP)):
            raise ArtifactIntegrityError(
                f"{d.root / name} is a symbolic link; artifact files must be regular files inside the "
                "directory, refusing to follow it"
            ) from None
        raise ArtifactError(f"{d.root / name}: cannot be read ({e.strerror or e})") from e


def read_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read and verify an artifact directory: manifest, its hash, every listed file's sha256, no extra or
    symlinked files, plain file names only. Every file is read once; parse them from :class:`Artifact`."""
    root = Path(path)
    try:
        d = _Directory(root)
    except (FileNotFoundError, NotADirectoryError):
        raise ArtifactError(f"no detector at {root}: not a directory") from None
    except OSError as e:
        raise ArtifactError(f"no detector at {root}: cannot open it ({e.strerror or e})") from e
    try:
        return _read(d)
    finally:
        d.close()


def _read(d: _Directory) -> Artifact:
    root = d.root
    mpath = root / MANIFEST
    data = _read_listed(d, MANIFEST, missing=f"not a detector artifact: {MANIFEST} is missing")
    recorded_raw = _read_listed(
        d, MANIFEST_HASH, missing=f"{MANIFEST_HASH} is missing; the artifact is incomplete"
    )
    recorded = recorded_raw.decode("utf-8", errors="replace").split()[:1]
    artifact_id = identity.artifact_id(data)
    if recorded != [artifact_id]:
        raise ArtifactIntegrityError(
            f"{mpath}: sha256 {artifact_id[:16]}… does not match {MANIFEST_HASH}; the manifest was modified"
        )
    try:
        manifest = _json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ArtifactIntegrityError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath}: not a {FORMAT} manifest")
    fields = ManifestReader(str(mpath))
    version = fields.get(manifest, "format_version", "int")
    if version != FORMAT_VERSION:
        raise ArtifactVersionError(
            f"{root}: artifact format version {version} is not supported by this release (reads {FORMAT_VERSION}); "
            "re-fit and save it with this release, or install the release that wrote it"
        )
    listed = fields.get(manifest, "files", "dict")
    for name, digest in listed.items():
        check_file_name(name, f"{mpath}: files")
        if not (
            isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
        ):
            raise ArtifactError(
                f"{mpath}: 'files.{name}' must be a sha256 hex string, got {json_type(digest)}"
            )
    try:
        present = d.entries()
    except OSError as e:
        raise ArtifactChangedError(f"{root}: the artifact changed while it was read; retry ({e})") from e
    extra = sorted(n for n, is_dir in present if not is_dir and n not in listed and n not in _RESERVED)
    if extra:
        raise ArtifactIntegrityError(f"{root}: unexpected file(s) not in the manifest: {', '.join(extra)}")
    files: dict[str, bytes] = {}
    for name, digest in listed.items():
        blob = _read_listed(d, name, missing=f"file {name!r} listed in the manifest is missing")
        got = sha256_bytes(blob)
        if got != digest:
            raise ArtifactIntegrityError(
                f"{root / name}: sha256 {got[:16]}… does not match the manifest's {digest[:16]}…; "
                "the file is corrupt or was tampered with"
            )
        files[name] = blob
    _check_pin(root, artifact_id)
    return Artifact(root=root, manifest=manifest, files=files, artifact_id=artifact_id)


# --- writing ----------------------------------------------------------------------------------------
def _check_target(target: Path) -> None:
    """Refuse to replace anything that is not a detector artifact (or an empty folder), and to write inside a
    model registry."""
    reg = registry_root(target.parent) if not os.path.lexists(target) else registry_root(target)
    if reg is not None:
        raise ArtifactError(
            f"{target} lies inside the model registry {reg}; refusing to write there (registered versions never "
            f"change): save the detector elsewhere, then `novelty register {reg} DIR`"
        )
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ArtifactError(f"cannot save the detector to {target}: {e.strerror or e}") from e
    if stat.S_ISLNK(st.st_mode):
        raise ArtifactError(
            f"{target} is a symbolic link; refusing to overwrite it: save to the directory it points to "
            f"({os.path.realpath(target)}) or to a new path"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise ArtifactError(
            f"{target} exists and is a file, not a detector directory; refusing to overwrite it "
            "(choose another path or remove the file)"
        )
    try:
        entries = os.listdir(target)
    except OSError as e:
        raise ArtifactError(f"cannot save the detector to {target}: {e.strerror or e}") from e
    if not entries:
        return
    if MANIFEST not in entries:
        raise ArtifactError(
            f"{target} exists and is not a detector artifact (no {MANIFEST}); refusing to overwrite it"
        )
    try:
        fmt = _json.loads(read_regular_file(target / MANIFEST, max_bytes=_MAX_FOREIGN_MANIFEST)).get("format")
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        fmt = None
    if fmt != FORMAT:
        raise ArtifactError(
            f"{target} holds a {MANIFEST} that is not a novelty detector's (format {fmt!r}); refusing to "
            "overwrite that folder: save the detector to another path"
        )


def _write_member(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:  # a new file in a fresh directory: ordinary permissions (0o666 & ~umask)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL)):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _replace_dir(tmp: Path, target: Path) -> None:
    """Put the complete directory ``tmp`` at ``target``; an old ``target`` is swapped out, then removed."""
    if not os.path.lexists(target):
        os.replace(tmp, target)
        return
    if _exchange(tmp, target):  # no moment without a detector at target
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = temp_sibling(target, directory=True)  # an empty directory: rename() replaces it
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)  # put the previous artifact back
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_artifact(
    target: str | os.PathLike[str], manifest: Mapping[str, Any], files: Mapping[str, bytes]
) -> Artifact:
    """Write an artifact atomically: ``files`` (plain name → bytes) and the manifest, which gets the format,
    its version and the sha256 of every file. Returns the written :class:`Artifact`.

    An existing ``target`` is replaced only when it is an empty folder or a detector artifact; anything else
    (a file, a symlink, a folder with a foreign ``manifest.json``) raises :class:`ArtifactError` and is left
    untouched. A failure while writing (disk full, permissions) raises :class:`ArtifactError`; the previous
    artifact stays intact and no temporary directory is left behind.
    """
    target = Path(target)
    for name in files:
        check_file_name(name, f"saving {target}")
    _check_target(target)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    full["files"] = {name: sha256_bytes(files[name]) for name in sorted(files)}
    try:
        data = _json.dumps(full, indent=2, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ArtifactError(f"cannot save {target}: the manifest is not plain JSON ({e})") from e
    artifact_id = identity.artifact_id(data)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(target, directory=True)
        for name, blob in files.items():
            _write_member(tmp / name, blob)
        _write_member(tmp / MANIFEST, data)
        _write_member(tmp / MANIFEST_HASH, f"{artifact_id}  {MANIFEST}\n".encode())
        fsync_dir(tmp)
        _check_target(target)  # again: something may have appeared there while the files were written
        _replace_dir(tmp, target)
        fsync_dir(target.parent)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        why = (
            "the disk is full"
            if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
            else (e.strerror or str(e))
        )
        raise ArtifactError(
            f"could not save the detector to {target}: {why} ({e}); "
            + (
                "the previous artifact there is unchanged"
                if os.path.lexists(target)
                else "nothing was written"
            )
        ) from e
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Artifact(root=target, manifest=full, files=dict(files), artifact_id=artifact_id)
