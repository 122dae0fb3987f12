"""The local model registry: a directory of versioned detectors, aliases ``champion`` / ``challenger``, a history.

Layout (see the flywheel design)::

    REGISTRY/
      registry.json                 {"format": "novelty-registry", "format_version": 1, "created": ISO}
      versions/<NNNN>/detector/     a verified copy of a saved detector, never modified after registration
      versions/<NNNN>/record.json   the training record (opaque to the registry; absent when none was given)
      versions/<NNNN>/info.json     {"version", "artifact_id", "registered", "note", …}
      champion -> versions/<NNNN>/detector      a relative symlink, swapped atomically
      challenger -> versions/<NNNN>/detector
      history.jsonl                 one JSON object per event: register, alias, compared, promote, rollback,
                                    recovered
      .lock                         the lock file taken around every change

``novelty serve REGISTRY/champion`` serves the champion: the service polls ``MANIFEST.sha256`` through the
symlink, so a promote or a rollback (a new symlink renamed over the old one) makes it load the new detector while
requests in flight finish on the old one.

Guarantees:

- A version directory appears complete or not at all: the detector is verified (every checksum, and a full
  :func:`novelty.load` unless asked not to), copied from the verified bytes into a temporary directory, verified
  again and renamed into place.
- An alias changes in one ``rename``: a crash leaves the old target or the new one, never a missing or broken
  link. The symlink is swapped first, then the event is appended to ``history.jsonl`` (with ``fsync``); a crash
  between the two is found by the next change, which records the alias as it is on disk (event ``recovered``).
- Every change holds an exclusive lock of ``REGISTRY/.lock`` (``flock``; processes and threads alike), so
  concurrent promotes are serialised and the history is never interleaved.
- ``promote`` refuses unless a comparison (written by ``novelty compare``) says that *this* challenger passed
  against *the current* champion, and the comparison holds up: its gate checks are judged again from its numbers
  with its recorded rule (a flipped ``passed``, a check changed to PASS, a hand-written file of three fields are
  refused), and the sha256 of its bytes was recorded in this registry by :meth:`Registry.record_comparison`
  (``novelty compare`` does that when it compares versions of the registry, or with ``--registry``; the flywheel
  does it every turn), so numbers edited after the comparison are refused too. ``force=True`` promotes anyway,
  only with a ``reason``, and the history records it as forced with the reason and what was refused. The first
  champion needs none. (Whoever can write the registry's files can also forge its history: the registry guards
  against mistakes and edited files, not against its own administrators.)
- ``rollback`` walks back through the champions in the history, one step per call.

This module is the local storage (:class:`~novelty.flywheel.registry.backend.RegistryBackend`: the folder, its
symlinks, its lock); what promote, rollback and the recovery decide is :mod:`novelty.flywheel.registry.policy`,
which the MLflow backend shares.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from novelty.artifact import MANIFEST, MANIFEST_HASH, Artifact, read_artifact
from novelty.clock import utc_now_iso
from novelty.errors import ArtifactError
from novelty.fileio import (
    TMP_PREFIX,
    ExclusiveFileLock,
    atomic_write_text,
    fsync_dir,
    read_regular_file,
    sha256_bytes,
)
from novelty.flywheel.comparison.result import ComparisonError
from novelty.flywheel.registry import history as _history
from novelty.flywheel.registry import policy
from novelty.flywheel.registry.backend import (
    ALIAS_RE,
    CHALLENGER,
    CHAMPION,
    RESERVED,
    Change,
    Event,
    VersionInfo,
    check_alias_name,
)
from novelty.flywheel.registry.errors import (
    AliasError,
    NotARegistryError,
    PromotionRefusedError,
    RegistryError,
    RegistryNotFoundError,
    RollbackError,
    UnknownVersionError,
)
from novelty.flywheel.registry.intake import (
    DETECTOR,
    check_loads,
    check_record,
    prepare,
    read_json,
    verify_detector,
)
from novelty.flywheel.registry.policy import check_alias_change, compared_event, refusal, replay

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "LOCK",
    "AliasError",
    "Change",
    "ComparisonError",
    "Event",
    "NotARegistryError",
    "PromotionRefusedError",
    "Registry",
    "RegistryError",
    "RegistryNotFoundError",
    "RollbackError",
    "UnknownVersionError",
    "VersionInfo",
    "check_alias_change",
    "check_loads",
    "check_record",
    "compared_event",
    "prepare",
    "refusal",
    "replay",
    "verify_detector",
]

log = logging.getLogger("novelty.flywheel.registry.store")

FORMAT = "novelty-registry"
FORMAT_VERSION = 1
REGISTRY_FILE = "registry.json"
HISTORY = "history.jsonl"
LOCK = ".lock"
VERSIONS = "versions"
_VERSION_RE = re.compile(r"^\d{4,}$")


def _link_target(version: str) -> str:
    return f"{VERSIONS}/{version}/{DETECTOR}"


# --- the registry -----------------------------------------------------------------------------------------
class Registry:
    """A local registry of detectors. ``Registry.create(path)`` makes one, ``Registry.open(path)`` opens one.

    Reads (``alias``, ``list_versions``, ``history``) take no lock: every file they read is replaced atomically
    or only appended to. Every change takes the registry's lock.
    """

    def __init__(self, root: Path):  # use create() or open()
        self.root = root

    # --- opening ----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Registry:
        """Make a new, empty registry at ``path`` (a new or empty directory)."""
        root = Path(path)
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise RegistryError(f"cannot create a registry at {root}: it exists and is not a directory")
        if root.is_dir():
            if (root / REGISTRY_FILE).exists():
                raise RegistryError(f"{root} is already a registry; open it (Registry.open) instead")
            if any(root.iterdir()):
                raise RegistryError(
                    f"cannot create a registry at {root}: the directory is not empty; choose a new path"
                )
        try:
            root.mkdir(parents=True, exist_ok=True)
            (root / VERSIONS).mkdir(exist_ok=True)
            (root / HISTORY).touch(exist_ok=True)
            fsync_dir(root)
            doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": utc_now_iso()}
            atomic_write_text(root / REGISTRY_FILE, json.dumps(doc, indent=2) + "\n")
        except OSError as e:
            raise RegistryError(f"cannot create a registry at {root}: {e.strerror or e}") from e
        log.info("created registry %s", root)
        return cls(root)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Registry:
        """Open an existing registry; a missing path or a directory that is not a registry raises."""
        root = Path(path)
        if not root.exists():
            raise RegistryNotFoundError(
                f"no registry at {root}: the path does not exist (create one with `novelty register {root} "
                "DETECTOR_DIR` or Registry.create)"
            )
        if not root.is_dir():
            raise NotARegistryError(f"{root} is not a registry: it is a file, not a directory")
        marker = root / REGISTRY_FILE
        if not marker.exists():
            hint = (
                " (it is a detector artifact: give the registry directory, not a version in it)"
                if (root / MANIFEST).exists()
                else ""
            )
            raise NotARegistryError(f"{root} is not a novelty registry: it has no {REGISTRY_FILE}{hint}")
        doc = read_json(marker, REGISTRY_FILE, NotARegistryError)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise NotARegistryError(f"{marker}: not a {FORMAT} file (format {doc.get('format')!r})")
        if doc.get("format_version") != FORMAT_VERSION:
            raise NotARegistryError(
                f"{marker}: registry format version {doc.get('format_version')!r} is not supported by this release "
                f"(reads {FORMAT_VERSION})"
            )
        if not (root / VERSIONS).is_dir():
            raise NotARegistryError(f"{root}: the {VERSIONS}/ directory is missing; the registry is damaged")
        return cls(root)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    @property
    def label(self) -> str:
        """How messages name this registry: its folder."""
        return str(self.root)

    # --- locking and history ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's lock (waiting for it without limit), with the leftovers of a crashed change
        cleaned up first. Changes go through :func:`novelty.flywheel.registry.policy.changing`, which also
        reconciles the history with the links."""
        with ExclusiveFileLock(
            self.root / LOCK, timeout=None, what=f"the registry {self.root}", error=RegistryError
        ):
            self._clean_stale()
            yield

    def append_event(self, event: str, **data: Any) -> Event:
        """Append one event to the history (under the lock) and fsync it. A torn last line left by a crash
        mid-write is cut off first, so it never merges with the new line."""
        return _history.append_event(self.root / HISTORY, event, data)

    def history(self) -> list[Event]:
        """Every event, oldest first. A torn last line (a crash while it was written) is skipped."""
        return _history.read_events(self.root / HISTORY)

    def champions(self) -> list[str]:
        """The champions the history went through that a rollback can return to, oldest first; the last one is
        the current champion."""
        return policy.champions(self)

    def _clean_stale(self) -> None:
        """Remove temporary links and version directories left by a crashed change (under the lock)."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root):
                if entry.name.startswith(TMP_PREFIX) and entry.is_symlink():
                    log.warning("removing %s, left by an interrupted alias change", entry.path)
                    os.unlink(entry.path)
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root / VERSIONS):
                if entry.name.startswith(TMP_PREFIX) and not _pid_alive(entry.name):
                    log.warning("removing %s, left by an interrupted registration", entry.path)
                    shutil.rmtree(entry.path, ignore_errors=True)

    def alias_names(self) -> list[str]:
        """The name of every alias link in the folder, broken ones included."""
        out = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root):
                if entry.is_symlink() and not entry.name.startswith(".") and ALIAS_RE.match(entry.name):
                    out.append(entry.name)
        return out

    # --- versions ---------------------------------------------------------------------------------------
    def _version_dirs(self) -> list[str]:
        try:
            names = os.listdir(self.root / VERSIONS)
        except OSError as e:
            raise RegistryError(f"cannot list {self.root / VERSIONS}: {e.strerror or e}") from e
        return sorted((n for n in names if _VERSION_RE.match(n)), key=int)

    def resolve(self, spec: str | int) -> str:
        """A version named by number (``3``, ``"0003"``) or by alias (``"challenger"``) → ``"0003"``."""
        existing = self._version_dirs()
        text = str(spec).strip()
        if text.isdigit():
            version = f"{int(text):04d}"
            if version in existing:
                return version
            raise UnknownVersionError(
                f"{self.root}: no version {text}; registered: {', '.join(existing) or 'none yet'}"
            )
        if ALIAS_RE.match(text) and text not in RESERVED:
            v = self.alias(text)
            if v is not None:
                return v
            raise UnknownVersionError(
                f"{self.root}: no alias {text!r} (aliases: {', '.join(self.aliases()) or 'none'}; versions: "
                f"{', '.join(existing) or 'none yet'})"
            )
        raise UnknownVersionError(
            f"{self.root}: {text!r} is neither a version number nor an alias; registered: "
            f"{', '.join(existing) or 'none yet'}"
        )

    def path(self, spec: str | int) -> Path:
        """The detector directory of a version (or alias)."""
        return self.root / _link_target(self.resolve(spec))

    def version_dir(self, spec: str | int) -> Path:
        """The directory of a version (or alias): its ``detector/`` and its ``record.json``."""
        return self.root / VERSIONS / self.resolve(spec)

    def get(self, spec: str | int) -> VersionInfo:
        version = self.resolve(spec)
        return self._info(version, self._aliases_by_version())

    def _info(self, version: str, by_version: Mapping[str, list[str]]) -> VersionInfo:
        vdir = self.root / VERSIONS / version
        info = read_json(vdir / "info.json", "info.json", RegistryError)
        if not isinstance(info, dict) or not isinstance(info.get("artifact_id"), str):
            raise RegistryError(f"{vdir / 'info.json'}: not a registry version file (no artifact_id)")
        record = None
        if (vdir / "record.json").exists():
            record = read_json(vdir / "record.json", "record.json", RegistryError)
        return VersionInfo(
            version=version,
            artifact_id=info["artifact_id"],
            registered=str(info.get("registered", "")),
            note=str(info.get("note", "")),
            path=vdir / DETECTOR,
            record=record if isinstance(record, dict) else None,
            aliases=tuple(sorted(by_version.get(version, ()))),
            info=info,
        )

    def list_versions(self) -> list[VersionInfo]:
        """Every registered version, oldest first, with the aliases pointing to it now."""
        by_version = self._aliases_by_version()
        return [self._info(v, by_version) for v in self._version_dirs()]

    def find(self, artifact_id: str) -> str | None:
        """The version holding the detector with this artifact id, if any."""
        for v in self._version_dirs():
            with contextlib.suppress(RegistryError):
                info = read_json(self.root / VERSIONS / v / "info.json", "info.json", RegistryError)
                if isinstance(info, dict) and info.get("artifact_id") == artifact_id:
                    return v
        return None

    def has_version(self, version: str) -> bool:
        """Whether the version directory is there."""
        return (self.root / VERSIONS / version).is_dir()

    def verify(self, version: str) -> str:
        """The artifact id of a version's detector, every checksum verified."""
        return self._verify(version).artifact_id

    # --- aliases ----------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """``{alias: version}`` of every alias that points to a version."""
        out = {}
        for name in self.alias_names():
            with contextlib.suppress(AliasError):
                v = self.alias(name)
                if v is not None:
                    out[name] = v
        return dict(sorted(out.items()))

    def broken_aliases(self) -> dict[str, str]:
        """``{alias: what is wrong}`` for every alias link that points nowhere or outside ``versions/``."""
        out = {}
        for name in self.alias_names():
            try:
                self.alias(name)
            except AliasError as e:
                out[name] = str(e)
        return out

    def _aliases_by_version(self) -> dict[str, list[str]]:
        by: dict[str, list[str]] = {}
        for name, v in self.aliases().items():
            by.setdefault(v, []).append(name)
        return by

    def alias(self, name: str) -> str | None:
        """The version an alias points to, ``None`` when the alias does not exist. A link that points outside
        ``versions/`` or to a missing version raises :class:`AliasError`."""
        check_alias_name(name)
        link = self.root / name
        try:
            st = os.lstat(link)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise AliasError(f"{link}: cannot be read ({e.strerror or e})") from e
        if not stat.S_ISLNK(st.st_mode):
            raise AliasError(
                f"{link} is not a symlink; aliases are symlinks to {VERSIONS}/NNNN/{DETECTOR} made by the registry "
                "(move that entry away)"
            )
        target = os.readlink(link)
        parts = Path(target).parts
        if len(parts) != 3 or parts[0] != VERSIONS or not _VERSION_RE.match(parts[1]) or parts[2] != DETECTOR:
            raise AliasError(
                f"{link} points to {target!r}, not to a version of this registry ({VERSIONS}/NNNN/{DETECTOR})"
            )
        if not (self.root / target).is_dir():
            raise AliasError(f"{link} points to {target}, which does not exist: the alias points nowhere")
        return parts[1]

    def write_alias(self, name: str, version: str | None) -> None:
        """Point ``name`` at ``version`` in one rename (``None``: remove it). Under the lock."""
        link = self.root / name
        try:
            if version is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(link)
            else:
                tmp = self.root / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}"
                os.symlink(_link_target(version), tmp)
                try:
                    os.replace(tmp, link)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            fsync_dir(self.root)
        except OSError as e:
            raise RegistryError(f"cannot point {link} to version {version}: {e.strerror or e}") from e

    def check_alias_slot(self, name: str) -> None:
        """An alias may only replace a symlink (or nothing): never a file or a directory a user put there."""
        link = self.root / name
        if os.path.lexists(link) and not link.is_symlink():
            raise AliasError(f"{link} exists and is not a symlink; refusing to replace it (move it away)")

    def _verify(self, version: str) -> Artifact:
        path = self.root / _link_target(version)
        try:
            return read_artifact(path)
        except ArtifactError as e:
            raise RegistryError(
                f"version {version} of {self.root} is damaged and cannot be served ({e}); register it again"
            ) from e

    def set_alias(self, name: str, version: str | int | None, *, note: str = "") -> Change:
        """Point the alias ``name`` at ``version`` (``None`` removes it). The champion is moved only by
        :meth:`promote` and :meth:`rollback`; here it can only be removed (recorded)."""
        return policy.set_alias(self, name, version, note=note)

    # --- register ---------------------------------------------------------------------------------------
    def register(
        self,
        detector_dir: str | os.PathLike[str],
        record: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        note: str = "",
        *,
        alias: str | None = None,
        load: bool = True,
        embedder: Any = None,
    ) -> str:
        """Copy a saved detector into the registry as a new version and return its number (``"0003"``).

        The detector is verified first (every checksum; with ``load`` also a full :func:`novelty.load`, which
        checks the backbone's weights are available — pass ``embedder`` to reuse one). A detector already in the
        registry (same artifact id) is not copied again: its version is returned. ``record`` is the training
        record (a dict or a path to ``record.json``); when it names an ``artifact_id`` it must be this detector's.
        ``alias`` (e.g. ``"challenger"``) is pointed at the version afterwards.
        """
        policy.check_register(alias, note)
        src, art, rec = prepare(detector_dir, record)
        existing = self.find(art.artifact_id)
        if existing is not None:
            log.info("%s: %s is already version %s", self.root, src, existing)
            if alias is not None:
                self.set_alias(alias, existing)
            return existing
        tmp = self._stage(art, src, rec, note, load=load, embedder=embedder)
        try:
            with policy.changing(self):
                version = self.find(art.artifact_id)  # registered by someone else meanwhile
                if version is None:
                    version = self._add_version(tmp, art.artifact_id, src, note)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if alias is not None:
            self.set_alias(alias, version)
        return version

    def _add_version(self, tmp: Path, artifact_id: str, src: Path, note: str) -> str:
        """Rename the staged directory to the next version number and record it (under the lock)."""
        versions = self._version_dirs()
        version = f"{int(versions[-1]) + 1 if versions else 1:04d}"
        info_path = tmp / "info.json"
        info = json.loads(info_path.read_text())
        info["version"] = version
        atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
        try:
            os.rename(tmp, self.root / VERSIONS / version)
        except OSError as e:
            raise RegistryError(f"cannot add version {version} to {self.root}: {e.strerror or e}") from e
        fsync_dir(self.root / VERSIONS)
        self.append_event("register", **policy.register_event(version, artifact_id, str(src.resolve()), note))
        log.info("%s: registered %s as version %s", self.root, src, version)
        return version

    def _stage(self, art: Artifact, src: Path, record: Any, note: str, *, load: bool, embedder: Any) -> Path:
        """A complete version directory in ``versions/`` under a temporary name, from the verified bytes."""
        tmp = self.root / VERSIONS / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            det_dir = tmp / DETECTOR
            det_dir.mkdir(parents=True)
            manifest = read_regular_file(src / MANIFEST)
            if sha256_bytes(manifest) != art.artifact_id:
                raise RegistryError(f"{src} changed while it was registered; register it again")
            for name, blob in {**art.files, MANIFEST: manifest}.items():
                _write_new(det_dir / name, blob)
            _write_new(det_dir / MANIFEST_HASH, f"{art.artifact_id}  {MANIFEST}\n".encode())
            fsync_dir(det_dir)
            try:
                copy = read_artifact(det_dir)
            except ArtifactError as e:
                raise RegistryError(f"the copy of {src} does not verify ({e}); is the disk healthy?") from e
            if copy.artifact_id != art.artifact_id:
                raise RegistryError(f"the copy of {src} is not the detector that was read; register it again")
            if load:
                check_loads(det_dir, src, embedder)
            info = {
                "version": None,
                "artifact_id": art.artifact_id,
                "registered": utc_now_iso(),
                "note": note,
                "source": str(src.resolve()),
            }
            if record is not None:
                for key in ("config_hash", "parent", "created"):
                    if key in record:
                        info[key if key != "created" else "trained"] = record[key]
                _write_new(tmp / "record.json", (json.dumps(record, indent=2) + "\n").encode())
            _write_new(tmp / "info.json", (json.dumps(info, indent=2) + "\n").encode())
            fsync_dir(tmp)
            return tmp
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise RegistryError(f"cannot copy {src} into {self.root}: {e.strerror or e}") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    # --- comparisons, promote / rollback: the shared policy --------------------------------------------
    def record_comparison(self, path: str | os.PathLike[str]) -> Event:
        """Record a comparison file written by ``novelty compare`` (the sha256 of its bytes, the two artifact
        ids, the verdict) as the event ``compared``: :meth:`promote` accepts only comparisons recorded so.
        Refused when the file does not hold together (its checks disagree with its numbers)."""
        return policy.record_comparison(self, path)

    def recorded_comparisons(self) -> set[str]:
        """The sha256 of every comparison file recorded by :meth:`record_comparison`."""
        return policy.recorded_comparisons(self.history())

    def promote(
        self,
        version: str | int,
        *,
        comparison: str | os.PathLike[str] | None = None,
        force: bool = False,
        reason: str = "",
        note: str = "",
    ) -> Change:
        """Make ``version`` the champion (:func:`novelty.flywheel.registry.policy.promote`): refused unless
        ``comparison`` (written by ``novelty compare`` and recorded here by :meth:`record_comparison`) holds up
        and passed for this version against the current champion; ``force=True`` with a ``reason`` promotes
        anyway, recorded as forced. The first champion needs no comparison."""
        return policy.promote(self, version, comparison=comparison, force=force, reason=reason, note=note)

    def rollback(self, *, note: str = "") -> Change:
        """Make the previous champion (in the history) the champion again; repeated calls walk further back."""
        return policy.rollback(self, note=note)


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _pid_alive(name: str) -> bool:
    """Whether the process that made a temporary entry (``.novelty-tmp-<pid>-…``) still runs."""
    try:
        pid = int(name[len(TMP_PREFIX) :].split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError as e:
        return e.errno == errno.EPERM
    return True
