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
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novelty.artifact import MANIFEST, MANIFEST_HASH, Artifact, read_artifact
from novelty.clock import utc_now_iso
from novelty.errors import ArtifactError, NoveltyError
from novelty.fileio import (
    TMP_PREFIX,
    ExclusiveFileLock,
    atomic_write_text,
    fsync_dir,
    read_regular_file,
    sha256_bytes,
)
from novelty.flywheel.comparison.compare import ComparisonError, ComparisonFile, load_comparison

__all__ = [
    "CHALLENGER",
    "CHAMPION",
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
CHAMPION = "champion"
CHALLENGER = "challenger"
REGISTRY_FILE = "registry.json"
HISTORY = "history.jsonl"
LOCK = ".lock"
VERSIONS = "versions"
DETECTOR = "detector"
_RESERVED = {REGISTRY_FILE, HISTORY, LOCK, VERSIONS}
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_VERSION_RE = re.compile(r"^\d{4,}$")
_MAX_JSON = 16 << 20


# --- errors -----------------------------------------------------------------------------------------------
class RegistryError(NoveltyError):
    """Something about a model registry is wrong; the message says what and how to fix it."""


class RegistryNotFoundError(RegistryError, FileNotFoundError):
    """No registry at the path given."""


class NotARegistryError(RegistryError):
    """The path exists but is not a novelty registry (or its marker file is damaged)."""


class UnknownVersionError(RegistryError, KeyError):
    """No such version (or alias) in the registry; the message lists what exists."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AliasError(RegistryError):
    """An alias name is invalid, or an alias points nowhere (a dangling or foreign symlink)."""


class PromotionRefusedError(RegistryError):
    """``promote`` without a passing comparison of this challenger against the current champion."""


class RollbackError(RegistryError):
    """``rollback`` with no earlier champion to go back to."""


# --- records ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionInfo:
    """One registered version: its number, the detector's artifact id (sha256 of its manifest), when it was
    registered, the note, the training record (or ``None``) and the aliases that point to it now."""

    version: str
    artifact_id: str
    registered: str
    note: str
    path: Path
    record: dict[str, Any] | None = None
    aliases: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """One line of ``history.jsonl``."""

    event: str
    time: str
    data: dict[str, Any]

    @property
    def version(self) -> str | None:
        v = self.data.get("version")
        return v if isinstance(v, str) else None

    @property
    def alias(self) -> str | None:
        a = self.data.get("alias")
        return a if isinstance(a, str) else None

    @property
    def previous(self) -> str | None:
        p = self.data.get("previous")
        return p if isinstance(p, str) else None


@dataclass(frozen=True)
class Change:
    """What an alias change did: ``alias`` now names ``version`` (was ``previous``); ``changed`` is False when it
    already did."""

    alias: str
    version: str
    previous: str | None
    changed: bool
    forced: bool = False


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without /etc/passwd entry)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def _read_json(path: Path, what: str, error: type[RegistryError]) -> Any:
    try:
        data = read_regular_file(path, max_bytes=_MAX_JSON)
    except FileNotFoundError:
        raise error(f"{path}: {what} is missing") from None
    except OverflowError:
        raise error(f"{path}: {what} is larger than {_MAX_JSON >> 20} MiB; not a file of ours") from None
    except OSError as e:
        raise error(f"{path}: {what} cannot be read ({e.strerror or e})") from e
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{path}: {what} is not valid JSON ({e})") from e


def _check_alias_name(name: str) -> str:
    if not isinstance(name, str) or not _ALIAS_RE.match(name) or name in _RESERVED:
        raise AliasError(
            f"{name!r} is not a valid alias name: lowercase letters, digits, '-' and '_', starting with a letter "
            f"(e.g. {CHAMPION}, {CHALLENGER}); not one of {', '.join(sorted(_RESERVED))}"
        )
    return name


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
        doc = _read_json(marker, REGISTRY_FILE, NotARegistryError)
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

    # --- locking and history ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the registry's lock (waiting for it without limit), with the leftovers of a crashed change
        cleaned up and the history reconciled first."""
        with ExclusiveFileLock(
            self.root / LOCK, timeout=None, what=f"the registry {self.root}", error=RegistryError
        ):
            self._clean_stale()
            self._reconcile()
            yield

    def _append(self, event: str, **data: Any) -> Event:
        """Append one event to the history (under the lock) and fsync it. A torn last line left by a crash
        mid-write is cut off first, so it never merges with the new line."""
        ev = Event(event=event, time=utc_now_iso(), data=data)
        line = json.dumps({"event": event, "time": ev.time, **data}, sort_keys=False, allow_nan=False) + "\n"
        path = self.root / HISTORY
        try:
            with open(path, "a+b") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                if size:
                    fh.seek(size - 1)
                    if fh.read(1) != b"\n":
                        fh.seek(0)
                        content = fh.read()
                        keep = content.rfind(b"\n") + 1
                        log.warning("%s: cutting off a torn last line (%d bytes)", path, size - keep)
                        fh.truncate(keep)
                fh.seek(0, os.SEEK_END)
                fh.write(line.encode())
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as e:
            raise RegistryError(f"cannot append to {path}: {e.strerror or e}") from e
        return ev

    def history(self) -> list[Event]:
        """Every event, oldest first. A torn last line (a crash while it was written) is skipped."""
        path = self.root / HISTORY
        try:
            data = read_regular_file(path)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise RegistryError(f"cannot read {path}: {e.strerror or e}") from e
        events = []
        lines = data.split(b"\n")
        if lines[-1]:  # no newline after it: torn by a crash (even if it parses), cut off by the next change
            log.warning("%s: skipping a torn last line", path)
        for i, raw in enumerate(lines[:-1]):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
                    raise ValueError("not an event object")
            except (ValueError, UnicodeDecodeError) as e:
                raise RegistryError(
                    f"{path}, line {i + 1}: not a history event ({e}); the file is damaged"
                ) from e
            ev, t = doc.pop("event"), doc.pop("time", "")
            events.append(Event(event=ev, time=str(t), data=doc))
        return events

    def champions(self) -> list[str]:
        """The champions the history went through that a rollback can return to, oldest first; the last one is
        the current champion."""
        return replay(self.history())[1]

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

    def _reconcile(self) -> None:
        """An alias changed on disk without its history event (a crash between the rename and the append):
        record it as it is, so the history and the links agree again (under the lock)."""
        events = self.history()
        recorded, stack = replay(events)
        names = set(recorded) | {n for n in self._link_names()}
        for name in sorted(names):
            try:
                actual = self.alias(name)
            except AliasError:
                continue  # a dangling link is reported where it is used
            if actual == recorded.get(name):
                continue
            data: dict[str, Any] = {"alias": name, "version": actual, "previous": recorded.get(name)}
            if name == CHAMPION and len(stack) >= 2 and actual == stack[-2]:
                data["as"] = "rollback"
            log.warning(
                "%s: alias %s points to %s but the history says %s (an interrupted change); recording it",
                self.root,
                name,
                actual,
                recorded.get(name),
            )
            self._append("recovered", **data, user=_user())

    def _link_names(self) -> list[str]:
        out = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root):
                if entry.is_symlink() and not entry.name.startswith(".") and _ALIAS_RE.match(entry.name):
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
        if _ALIAS_RE.match(text) and text not in _RESERVED:
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

    def get(self, spec: str | int) -> VersionInfo:
        version = self.resolve(spec)
        return self._info(version, self._aliases_by_version())

    def _info(self, version: str, by_version: Mapping[str, list[str]]) -> VersionInfo:
        vdir = self.root / VERSIONS / version
        info = _read_json(vdir / "info.json", "info.json", RegistryError)
        if not isinstance(info, dict) or not isinstance(info.get("artifact_id"), str):
            raise RegistryError(f"{vdir / 'info.json'}: not a registry version file (no artifact_id)")
        record = None
        if (vdir / "record.json").exists():
            record = _read_json(vdir / "record.json", "record.json", RegistryError)
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
                info = _read_json(self.root / VERSIONS / v / "info.json", "info.json", RegistryError)
                if isinstance(info, dict) and info.get("artifact_id") == artifact_id:
                    return v
        return None

    # --- aliases ----------------------------------------------------------------------------------------
    def aliases(self) -> dict[str, str]:
        """``{alias: version}`` of every alias that points to a version."""
        out = {}
        for name in self._link_names():
            with contextlib.suppress(AliasError):
                v = self.alias(name)
                if v is not None:
                    out[name] = v
        return dict(sorted(out.items()))

    def broken_aliases(self) -> dict[str, str]:
        """``{alias: what is wrong}`` for every alias link that points nowhere or outside ``versions/``."""
        out = {}
        for name in self._link_names():
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
        _check_alias_name(name)
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

    def _swap_link(self, name: str, version: str | None) -> None:
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

    def _check_entry(self, name: str) -> None:
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
        _check_alias_name(name)
        with self._locked():
            self._check_entry(name)
            v = None if version is None else self.resolve(version)
            check_alias_change(name, v)
            if v is not None:
                self._verify(v)
            previous = self._current(name)
            if previous == v:
                return Change(name, v or "", previous, changed=False)
            self._swap_link(name, v)
            self._append("alias", alias=name, version=v, previous=previous, note=note, user=_user())
            log.info("%s: %s → %s (was %s)", self.root, name, v, previous)
            return Change(name, v or "", previous, changed=True)

    def _current(self, name: str) -> str | None:
        try:
            return self.alias(name)
        except AliasError:
            return None  # a dangling alias is replaced

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
        if alias is not None:
            _check_alias_name(alias)
            if alias == CHAMPION:
                raise AliasError(
                    "register cannot set the champion; register, then promote (with a comparison, or --force)"
                )
        if not isinstance(note, str):
            raise RegistryError(f"note must be a string, got {type(note).__name__}")
        src, art, rec = prepare(detector_dir, record)
        existing = self.find(art.artifact_id)
        if existing is not None:
            log.info("%s: %s is already version %s", self.root, src, existing)
            if alias is not None:
                self.set_alias(alias, existing)
            return existing
        tmp = self._stage(art, src, rec, note, load=load, embedder=embedder)
        try:
            with self._locked():
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
        self._append(
            "register",
            version=version,
            artifact_id=artifact_id,
            source=str(src.resolve()),
            note=note,
            user=_user(),
        )
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

    # --- comparisons, promote / rollback ---------------------------------------------------------------
    def record_comparison(self, path: str | os.PathLike[str]) -> Event:
        """Record a comparison file written by ``novelty compare`` (the sha256 of its bytes, the two artifact
        ids, the verdict) as the event ``compared``: :meth:`promote` accepts only comparisons recorded so.
        Refused when the file does not hold together (its checks disagree with its numbers)."""
        comp = load_comparison(path)
        problems = comp.problems()
        if problems:
            raise ComparisonError(f"refusing to record {comp.path}: " + "; ".join(problems))
        with self._locked():
            return self._append("compared", **compared_event(comp), user=_user())

    def recorded_comparisons(self) -> set[str]:
        """The sha256 of every comparison file recorded by :meth:`record_comparison`."""
        return {str(ev.data.get("sha256")) for ev in self.history() if ev.event == "compared"}

    def promote(
        self,
        version: str | int,
        *,
        comparison: str | os.PathLike[str] | None = None,
        force: bool = False,
        reason: str = "",
        note: str = "",
    ) -> Change:
        """Make ``version`` the champion.

        Refused unless ``comparison`` (a file written by ``novelty compare`` and recorded in this registry by
        :meth:`record_comparison`) holds up when judged again and passed for this version's detector as the
        challenger against the current champion's detector. ``force=True`` promotes anyway and needs a
        ``reason``; the history records it as forced, with the reason and the refusal it overrode. The first
        champion needs no comparison. The previous champion stays in the history, so :meth:`rollback` returns
        to it.
        """
        check_force(force, reason)
        comp = load_comparison(comparison) if comparison is not None else None
        with self._locked():
            self._check_entry(CHAMPION)
            v = self.resolve(version)
            art = self._verify(v)
            current = self._current(CHAMPION)
            if current == v:
                log.info("%s: version %s is already the champion", self.root, v)
                return Change(CHAMPION, v, current, changed=False)
            champion_id = self.get(current).artifact_id if current is not None else None
            why = refusal(comp, art.artifact_id, champion_id, v, current, self.recorded_comparisons())
            if why is not None and not force:
                raise PromotionRefusedError(why)
            self._swap_link(CHAMPION, v)
            data = promote_event(v, art.artifact_id, current, comp, why, force, reason)
            self._append("promote", **data, note=note, user=_user())
            forced = bool(data["forced"])
            log.info("%s: champion → %s (was %s)%s", self.root, v, current, " [forced]" if forced else "")
            return Change(CHAMPION, v, current, changed=True, forced=forced)

    def rollback(self, *, note: str = "") -> Change:
        """Make the previous champion (in the history) the champion again; repeated calls walk further back."""
        with self._locked():
            self._check_entry(CHAMPION)
            current = self._current(CHAMPION)
            stack = self.champions()
            if current is None:
                raise RollbackError(f"{self.root} has no champion; there is nothing to roll back")
            if len(stack) < 2:
                raise RollbackError(
                    f"{self.root}: version {current} is the first champion in the history; there is no earlier "
                    "champion to roll back to"
                )
            target = stack[-2]
            if not (self.root / VERSIONS / target).is_dir():
                raise RollbackError(f"{self.root}: the previous champion, version {target}, is missing")
            art = self._verify(target)
            self._swap_link(CHAMPION, target)
            self._append(
                "rollback",
                alias=CHAMPION,
                version=target,
                artifact_id=art.artifact_id,
                previous=current,
                note=note,
                user=_user(),
            )
            log.info("%s: champion rolled back to %s (was %s)", self.root, target, current)
            return Change(CHAMPION, target, current, changed=True)


def verify_detector(src: Path) -> Artifact:
    """Read and verify a saved detector (every checksum) before it enters a registry."""
    try:
        return read_artifact(src)
    except ArtifactError as e:
        raise RegistryError(f"refusing to register {src}: {e}") from e


def prepare(
    path: str | os.PathLike[str], record: Mapping[str, Any] | str | os.PathLike[str] | None
) -> tuple[Path, Artifact, Any]:
    """The detector to register, verified, and its training record.

    ``path`` is a detector directory or a directory holding ``detector/`` and ``record.json`` (what
    ``novelty retrain --out`` writes, and the layout of a registry version). Without ``record``, a
    ``record.json`` found there (or beside the detector directory) is used when it names this detector's
    artifact id, and ignored otherwise; an explicit ``record`` must match."""
    p = Path(path)
    found: Path | None = None
    if not (p / MANIFEST).exists() and (p / DETECTOR / MANIFEST).exists():
        found = p / "record.json"
        p = p / DETECTOR
    elif (p / MANIFEST).exists():
        found = p.resolve().parent / "record.json"
    art = verify_detector(p)
    if record is None and found is not None and found.is_file():
        doc = _read_json(found, "training record", RegistryError)
        if isinstance(doc, dict) and doc.get("artifact_id") == art.artifact_id:
            record = doc
            log.info("using the training record %s", found)
        else:
            log.warning("%s is not the training record of %s (another artifact id): ignored", found, p)
    return p, art, check_record(record, art.artifact_id)


def check_loads(det_dir: Path, src: Path, embedder: Any = None) -> None:
    """A full :func:`novelty.load` of ``det_dir`` (a copy of ``src``): the backbone's weights must be there."""
    from novelty.detector import NoveltyDetector

    try:
        NoveltyDetector.load(det_dir, device="cpu", embedder=embedder)
    except NoveltyError as e:
        raise RegistryError(f"refusing to register {src}: it does not load ({e})") from e


def check_record(record: Mapping[str, Any] | str | os.PathLike[str] | None, artifact_id: str) -> Any:
    """The training record as a dict (``None`` when none): a JSON object whose ``artifact_id``, when it names
    one, is this detector's."""
    if record is None:
        return None
    if isinstance(record, (str, os.PathLike)):
        rec = _read_json(Path(record), "training record", RegistryError)
    elif isinstance(record, Mapping):
        rec = dict(record)
    else:
        rec = record
    if not isinstance(rec, dict):
        raise RegistryError(f"the training record must be a JSON object, got {type(rec).__name__}")
    rid = rec.get("artifact_id")
    if rid is not None and rid != artifact_id:
        raise RegistryError(
            f"the training record is for detector {str(rid)[:12]}…, not for this one ({artifact_id[:12]}…); "
            "give the record.json written with this detector"
        )
    try:
        json.dumps(rec, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"the training record is not plain JSON ({e})") from e
    return rec


def replay(events: list[Event]) -> tuple[dict[str, str | None], list[str]]:
    """Replay a registry's history (every backend's): each alias's version, and the stack of champions a rollback
    walks back through (oldest first; the last is the current champion). A ``recovered`` event counts as the
    change it recovers; removing the champion empties the stack."""
    aliases: dict[str, str | None] = {}
    stack: list[str] = []
    for ev in events:
        name, version = ev.alias, ev.version
        if ev.event not in ("alias", "promote", "rollback", "recovered") or name is None:
            continue
        aliases[name] = version
        if name != CHAMPION:
            continue
        if ev.event == "rollback" or (ev.event == "recovered" and ev.data.get("as") == "rollback"):
            if stack:
                stack.pop()
            if version is not None and (not stack or stack[-1] != version):
                stack.append(version)
        elif version is not None:
            stack.append(version)
        elif stack:
            stack.clear()  # champion removed
    return aliases, stack


def check_alias_change(name: str, version: str | None) -> None:
    """``set_alias`` may point any alias anywhere but the champion, which only ``promote`` (checked, or forced
    with a reason) moves; removing the champion is allowed and recorded."""
    if name == CHAMPION and version is not None:
        raise PromotionRefusedError(
            "the champion changes only by promote (with a comparison, or --force with a reason) or rollback"
        )


def compared_event(comp: ComparisonFile) -> dict[str, Any]:
    """The data of a ``compared`` event (both registry backends record the same)."""
    return {
        "sha256": comp.sha256,
        "path": str(comp.path),
        "champion_artifact_id": comp.champion_id,
        "challenger_artifact_id": comp.challenger_id,
        "passed": comp.passed,
    }


def check_force(force: bool, reason: str) -> None:
    """A forced promotion needs a reason (it is recorded in the history)."""
    if force and not (isinstance(reason, str) and reason.strip()):
        raise PromotionRefusedError(
            "a forced promotion needs a reason, recorded in the history: --force --reason 'why'"
        )


def promote_event(
    version: str,
    artifact_id: str,
    previous: str | None,
    comp: ComparisonFile | None,
    refused: str | None,
    force: bool,
    reason: str,
) -> dict[str, Any]:
    """The data of a ``promote`` event (both registry backends record the same)."""
    forced = refused is not None and force
    data: dict[str, Any] = {
        "alias": CHAMPION,
        "version": version,
        "artifact_id": artifact_id,
        "previous": previous,
        "forced": forced,
    }
    if forced:
        data["refusal"] = refused
        data["reason"] = reason.strip()
    if comp is not None:
        data["comparison"] = {"path": str(comp.path), "sha256": comp.sha256, "passed": comp.passed}
    return data


def refusal(
    comp: ComparisonFile | None,
    challenger_id: str,
    champion_id: str | None,
    version: str,
    current: str | None,
    recorded: Collection[str] = (),
) -> str | None:
    """Why a promotion is refused (``None``: it may go ahead). ``recorded``: the sha256 of the comparison files
    recorded in the registry."""
    if comp is None:
        if champion_id is None:
            return None  # the first champion: nothing to compare with
        return (
            f"promoting version {version} needs a comparison against the champion (version {current}): run "
            "`novelty compare` and pass its file with --comparison, or --force --reason 'why' to promote without one"
        )
    if comp.challenger_id != challenger_id:
        return (
            f"the comparison {comp.path} is for challenger {comp.challenger_id[:12]}…, not for version {version} "
            f"({challenger_id[:12]}…)"
        )
    if champion_id is not None and comp.champion_id != champion_id:
        got = f"{comp.champion_id[:12]}…" if comp.champion_id else "no champion"
        return (
            f"the comparison {comp.path} compares against {got}, not against the current champion (version "
            f"{current}, {champion_id[:12]}…); compare with the current champion again"
        )
    problems = comp.problems()
    if problems:
        return f"the comparison {comp.path} does not hold up when judged again: " + "; ".join(problems)
    if comp.sha256 not in recorded:
        return (
            f"the comparison {comp.path} (sha256 {comp.sha256[:12]}…) was not recorded by this registry: it was "
            "edited after `novelty compare` wrote it, or written without the registry. Compare the registry's "
            "versions (or pass --registry to novelty compare) and promote with the file it writes"
        )
    if not comp.passed:
        failed = [c.failure() for c in comp.comparison.checks if c.passed is False]
        return (
            f"version {version} not promoted: the comparison {comp.path} did not pass the gate: "
            + "; ".join(failed)
            + " (--force --reason 'why' promotes anyway, recorded as forced)"
        )
    return None


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
