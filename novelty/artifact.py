"""The detector artifact on disk: a directory of files listed, with their sha256, in ``manifest.json``.

No pickle anywhere: JSON for metadata, safetensors for arrays, FAISS's own format for the index.
``MANIFEST.sha256`` holds the hash of ``manifest.json`` itself, so a change to *any* file is detected.
Writes are atomic: everything goes to a temporary sibling directory which then replaces the target.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from novelty.errors import ArtifactError, ArtifactIntegrityError, ArtifactVersionError

__all__ = ["FORMAT", "FORMAT_VERSION", "read_arrays", "read_artifact", "write_arrays", "write_artifact"]

FORMAT = "novelty-detector"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_HASH = "MANIFEST.sha256"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactIntegrityError(f"{path}: not a readable safetensors file ({e})") from e


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_artifact(
    target: str | os.PathLike[str], manifest: dict[str, Any], write_files: Callable[[Path], None]
) -> Path:
    """Write an artifact atomically: ``write_files(tmpdir)`` writes the payload, then the manifest is added
    with the sha256 of every file, and the directory replaces ``target`` in one rename."""
    target = Path(target)
    if target.exists() and not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise ArtifactError(f"{target} exists and is not a detector artifact; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_files(tmp)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
        manifest["files"] = {name: _sha256(tmp / name) for name in files}
        data = json.dumps(manifest, indent=2, sort_keys=False).encode()
        (tmp / MANIFEST).write_bytes(data)
        (tmp / MANIFEST_HASH).write_text(f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n")
        umask = os.umask(0)
        os.umask(umask)
        for p in tmp.iterdir():
            os.chmod(p, 0o666 & ~umask)  # some writers create 0600 files; artifacts are shared read-only data
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_artifact(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    """Verify an artifact directory and return ``(path, manifest)``. Every file's sha256 is checked."""
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"no detector at {root}: not a directory")
    mpath, hpath = root / MANIFEST, root / MANIFEST_HASH
    if not mpath.is_file():
        raise ArtifactError(f"{root} is not a detector artifact: {MANIFEST} is missing")
    data = mpath.read_bytes()
    if not hpath.is_file():
        raise ArtifactIntegrityError(f"{root}: {MANIFEST_HASH} is missing; the artifact is incomplete")
    recorded = hpath.read_text(errors="replace").split()[:1]
    actual = hashlib.sha256(data).hexdigest()
    if recorded != [actual]:
        raise ArtifactIntegrityError(
            f"{root}/{MANIFEST}: sha256 {actual[:16]}… does not match {MANIFEST_HASH}; the manifest was modified"
        )
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactIntegrityError(f"{mpath}: not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath}: not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactVersionError(
            f"{root}: artifact format version {version} is not supported by this release (reads {FORMAT_VERSION}); "
            "re-fit and save it with this release, or install the release that wrote it"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactIntegrityError(f"{mpath}: the file list is missing")
    for name, digest in files.items():
        fp = root / name
        if Path(name).name != name or not fp.is_file():
            raise ArtifactIntegrityError(f"{root}: file {name!r} listed in the manifest is missing")
        got = _sha256(fp)
        if got != digest:
            raise ArtifactIntegrityError(
                f"{fp}: sha256 {got[:16]}… does not match the manifest's {str(digest)[:16]}…; "
                "the file is corrupt or was tampered with"
            )
    extra = sorted(
        p.name
        for p in root.iterdir()
        if p.is_file() and p.name not in files and p.name not in (MANIFEST, MANIFEST_HASH)
    )
    if extra:
        raise ArtifactIntegrityError(f"{root}: unexpected file(s) not in the manifest: {', '.join(extra)}")
    return root, manifest
