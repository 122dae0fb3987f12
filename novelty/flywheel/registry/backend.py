"""What a registry backend stores, and the records it hands back: the storage under the one registry policy.

:class:`RegistryBackend` is the set of storage operations a backend implements (the local folder,
:mod:`novelty.flywheel.registry.store`; an MLflow model registry, :mod:`novelty.flywheel.registry.mlflow_backend`):
versions and their artifact ids, aliases, the event history and a lock. Everything decided from them (the
champion stack replayed from the history, promote and rollback with their refusals, the recovery of an alias
change whose event was lost) is :mod:`novelty.flywheel.registry.policy`, written once for every backend.
"""

from __future__ import annotations

import getpass
import os
import re
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from novelty.flywheel.registry.errors import AliasError

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "RESERVED",
    "Change",
    "Event",
    "RegistryBackend",
    "VersionInfo",
    "check_alias_name",
    "current_user",
]

CHAMPION = "champion"
CHALLENGER = "challenger"
#: names an alias may not take: the entries of a local registry directory
RESERVED = frozenset({"registry.json", "history.jsonl", ".lock", "versions"})
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


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
    """One event of a registry's history (a line of ``history.jsonl``, a tag of an MLflow model)."""

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


def check_alias_name(name: str) -> str:
    """``name`` when it is a valid alias name, else :class:`AliasError` saying what a valid one is."""
    if not isinstance(name, str) or not ALIAS_RE.match(name) or name in RESERVED:
        raise AliasError(
            f"{name!r} is not a valid alias name: lowercase letters, digits, '-' and '_', starting with a letter "
            f"(e.g. {CHAMPION}, {CHALLENGER}); not one of {', '.join(sorted(RESERVED))}"
        )
    return name


def current_user() -> str:
    """The user recorded in the history with every change."""
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container without /etc/passwd entry)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


class RegistryBackend(Protocol):
    """The storage operations of a registry backend; the policy (:mod:`novelty.flywheel.registry.policy`) is
    built on these alone. Reads may be called without the lock; ``write_alias`` and ``append_event`` are called
    by the policy with it held."""

    @property
    def label(self) -> str:
        """How messages name this registry (the local folder, ``model 'NAME'``)."""
        ...

    def locked(self) -> AbstractContextManager[None]:
        """Hold the registry's lock around one change (a backend without one serialises nothing)."""
        ...

    # --- versions -------------------------------------------------------------------------------------------
    def resolve(self, spec: str | int) -> str:
        """A version named by number or by alias → the version; :class:`UnknownVersionError` otherwise."""
        ...

    def get(self, spec: str | int) -> VersionInfo:
        """A version's record (its artifact id as registered)."""
        ...

    def list_versions(self) -> list[VersionInfo]:
        """Every version, oldest first, with the aliases pointing to it now."""
        ...

    def find(self, artifact_id: str) -> str | None:
        """The version holding the detector with this artifact id, if any."""
        ...

    def has_version(self, version: str) -> bool:
        """Whether ``version`` (as :meth:`resolve` returns it) is still stored."""
        ...

    def verify(self, version: str) -> str:
        """The artifact id of a version about to be served, checked as far as the storage allows
        (:class:`RegistryError` when it is damaged)."""
        ...

    # --- aliases --------------------------------------------------------------------------------------------
    def alias(self, name: str) -> str | None:
        """The version an alias points to, ``None`` when it does not exist; :class:`AliasError` when it points
        nowhere."""
        ...

    def aliases(self) -> dict[str, str]:
        """``{alias: version}`` of every alias that points to a version."""
        ...

    def alias_names(self) -> list[str]:
        """The name of every alias entry in the storage, broken ones included."""
        ...

    def check_alias_slot(self, name: str) -> None:
        """Refuse (:class:`AliasError`) when the storage holds something under ``name`` that is no alias."""
        ...

    def write_alias(self, name: str, version: str | None) -> None:
        """Point ``name`` at ``version`` in one store update (``None``: remove it). Under the lock."""
        ...

    # --- history --------------------------------------------------------------------------------------------
    def history(self) -> list[Event]:
        """Every event, oldest first."""
        ...

    def append_event(self, event: str, **data: Any) -> Event:
        """Append one event to the history, durably. Under the lock."""
        ...
