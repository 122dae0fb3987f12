"""The registry policy, written once for every backend: the champion stack replayed from the history, promote
and rollback with their refusals, alias changes, recorded comparisons, and the recovery of an alias change whose
event was lost.

Every function here works on a :class:`~novelty.flywheel.registry.backend.RegistryBackend` (the local folder,
an MLflow model registry) and reads and writes only through it, so both backends refuse the same promotions with
the same messages, record the same events and walk back through the same champions.

- **The champion stack** (:func:`replay`): the champions a rollback walks back through, replayed from the
  history. ``promote`` pushes, ``rollback`` pops, removing the champion empties the stack, and a ``recovered``
  event counts as the change it recovers.
- **Recovery** (:func:`reconcile`, run by :func:`changing` before every change): an alias that was moved in the
  storage without its event (a crash, a lost connection between the two) is recorded as it is, as a
  ``recovered`` event, so the history and the aliases agree again before anything else changes.
- **Promotion** (:func:`promote`, :func:`refusal`): the first champion needs nothing; every later one needs a
  comparison recorded in this registry (:func:`record_comparison`) that holds up when judged again and passed
  for this challenger against the current champion. ``force`` promotes anyway, only with a ``reason``, recorded
  with the refusal it overrode.
- **Aliases** (:func:`set_alias`): any alias may point anywhere except the champion, which only promote and
  rollback move; removing the champion is allowed and recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from novelty.flywheel.comparison.result import ComparisonError, ComparisonFile, load_comparison
from novelty.flywheel.registry.backend import (
    CHAMPION,
    Change,
    Event,
    RegistryBackend,
    check_alias_name,
    current_user,
)
from novelty.flywheel.registry.errors import (
    AliasError,
    PromotionRefusedError,
    RegistryError,
    RollbackError,
)

__all__ = [
    "champions",
    "changing",
    "check_alias_change",
    "check_force",
    "check_register",
    "compared_event",
    "current",
    "promote",
    "promote_event",
    "reconcile",
    "record_comparison",
    "recorded_comparisons",
    "refusal",
    "register_event",
    "replay",
    "rollback",
    "set_alias",
]

log = logging.getLogger("novelty.flywheel.registry")

_ALIAS_EVENTS = ("alias", "promote", "rollback", "recovered")


# --- the history ------------------------------------------------------------------------------------------
def replay(events: Iterable[Event]) -> tuple[dict[str, str | None], list[str]]:
    """Replay a registry's history: each alias's version, and the stack of champions a rollback walks back
    through (oldest first; the last is the current champion). A ``recovered`` event counts as the change it
    recovers; removing the champion empties the stack; a champion change recorded twice (a ``recovered`` event
    beside the change's own, where a backend has no lock) is pushed once."""
    aliases: dict[str, str | None] = {}
    stack: list[str] = []
    for ev in events:
        name, version = ev.alias, ev.version
        if ev.event not in _ALIAS_EVENTS or name is None:
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
            if not stack or stack[-1] != version:
                stack.append(version)
        elif stack:
            stack.clear()  # champion removed
    return aliases, stack


def champions(backend: RegistryBackend) -> list[str]:
    """The champions the history went through that a rollback can return to, oldest first; the last one is
    the current champion."""
    return replay(backend.history())[1]


def recorded_comparisons(events: Iterable[Event]) -> set[str]:
    """The sha256 of every comparison file recorded by :func:`record_comparison`."""
    return {str(ev.data.get("sha256")) for ev in events if ev.event == "compared"}


def current(backend: RegistryBackend, name: str) -> str | None:
    """The version ``name`` points to; ``None`` also when it points nowhere (a dangling alias is replaced)."""
    try:
        return backend.alias(name)
    except AliasError:
        return None


def reconcile(backend: RegistryBackend) -> list[Event]:
    """Record every alias that changed in the storage without its history event (a crash between the two) as
    it is now, as a ``recovered`` event (a champion moved back to the one before it as a recovered rollback),
    so that the history and the aliases agree again. Under the lock; returns the events recorded."""
    recorded, stack = replay(backend.history())
    out = []
    for name in sorted(set(recorded) | set(backend.alias_names())):
        try:
            actual = backend.alias(name)
        except AliasError:
            continue  # a dangling alias is reported where it is used
        if actual == recorded.get(name):
            continue
        data: dict[str, Any] = {"alias": name, "version": actual, "previous": recorded.get(name)}
        if name == CHAMPION and len(stack) >= 2 and actual == stack[-2]:
            data["as"] = "rollback"
        log.warning(
            "%s: alias %s points to %s but the history says %s (an interrupted change); recording it",
            backend.label,
            name,
            actual,
            recorded.get(name),
        )
        out.append(backend.append_event("recovered", **data, user=current_user()))
    return out


@contextlib.contextmanager
def changing(backend: RegistryBackend) -> Iterator[None]:
    """Hold the backend's lock for one change, with the history reconciled with the aliases first."""
    with backend.locked():
        reconcile(backend)
        yield


# --- checks and event data --------------------------------------------------------------------------------
def check_alias_change(name: str, version: str | None) -> None:
    """``set_alias`` may point any alias anywhere but the champion, which only ``promote`` (checked, or forced
    with a reason) moves; removing the champion is allowed and recorded."""
    if name == CHAMPION and version is not None:
        raise PromotionRefusedError(
            "the champion changes only by promote (with a comparison, or --force with a reason) or rollback"
        )


def check_force(force: bool, reason: str) -> None:
    """A forced promotion needs a reason (it is recorded in the history)."""
    if force and not (isinstance(reason, str) and reason.strip()):
        raise PromotionRefusedError(
            "a forced promotion needs a reason, recorded in the history: --force --reason 'why'"
        )


def check_register(alias: str | None, note: str) -> None:
    """The arguments of ``register``: a valid alias that is not the champion (a new version becomes champion
    only by promote), a string note."""
    if alias is not None:
        check_alias_name(alias)
        if alias == CHAMPION:
            raise AliasError(
                "register cannot set the champion; register, then promote (with a comparison, or --force)"
            )
    if not isinstance(note, str):
        raise RegistryError(f"note must be a string, got {type(note).__name__}")


def register_event(version: str, artifact_id: str, source: str, note: str) -> dict[str, Any]:
    """The data of a ``register`` event."""
    return {
        "version": version,
        "artifact_id": artifact_id,
        "source": source,
        "note": note,
        "user": current_user(),
    }


def compared_event(comp: ComparisonFile) -> dict[str, Any]:
    """The data of a ``compared`` event."""
    return {
        "sha256": comp.sha256,
        "path": str(comp.path),
        "champion_artifact_id": comp.champion_id,
        "challenger_artifact_id": comp.challenger_id,
        "passed": comp.passed,
    }


def promote_event(
    version: str,
    artifact_id: str,
    previous: str | None,
    comp: ComparisonFile | None,
    refused: str | None,
    force: bool,
    reason: str,
) -> dict[str, Any]:
    """The data of a ``promote`` event."""
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


# --- the changes ------------------------------------------------------------------------------------------
def record_comparison(backend: RegistryBackend, path: str | os.PathLike[str]) -> Event:
    """Record a comparison file written by ``novelty compare`` (the sha256 of its bytes, the two artifact ids,
    the verdict) as the event ``compared``: :func:`promote` accepts only comparisons recorded so. Refused when
    the file does not hold together (its checks disagree with its numbers)."""
    comp = load_comparison(path)
    problems = comp.problems()
    if problems:
        raise ComparisonError(f"refusing to record {comp.path}: " + "; ".join(problems))
    with changing(backend):
        return backend.append_event("compared", **compared_event(comp), user=current_user())


def set_alias(backend: RegistryBackend, name: str, version: str | int | None, *, note: str = "") -> Change:
    """Point the alias ``name`` at ``version`` (``None`` removes it). The champion is moved only by
    :func:`promote` and :func:`rollback`; here it can only be removed (recorded)."""
    check_alias_name(name)
    with changing(backend):
        backend.check_alias_slot(name)
        v = None if version is None else backend.resolve(version)
        check_alias_change(name, v)
        if v is not None:
            backend.verify(v)
        previous = current(backend, name)
        if previous == v:
            return Change(name, v or "", previous, changed=False)
        backend.write_alias(name, v)
        backend.append_event(
            "alias", alias=name, version=v, previous=previous, note=note, user=current_user()
        )
        log.info("%s: %s → %s (was %s)", backend.label, name, v, previous)
        return Change(name, v or "", previous, changed=True)


def promote(
    backend: RegistryBackend,
    version: str | int,
    *,
    comparison: str | os.PathLike[str] | None = None,
    force: bool = False,
    reason: str = "",
    note: str = "",
) -> Change:
    """Make ``version`` the champion.

    Refused unless ``comparison`` (a file written by ``novelty compare`` and recorded in this registry by
    :func:`record_comparison`) holds up when judged again and passed for this version's detector as the
    challenger against the current champion's detector. ``force=True`` promotes anyway and needs a ``reason``;
    the history records it as forced, with the reason and the refusal it overrode. The first champion needs no
    comparison. The previous champion stays in the history, so :func:`rollback` returns to it.
    """
    check_force(force, reason)
    comp = load_comparison(comparison) if comparison is not None else None
    with changing(backend):
        backend.check_alias_slot(CHAMPION)
        v = backend.resolve(version)
        artifact_id = backend.verify(v)
        was = current(backend, CHAMPION)
        if was == v:
            log.info("%s: version %s is already the champion", backend.label, v)
            return Change(CHAMPION, v, was, changed=False)
        champion_id = backend.get(was).artifact_id if was is not None else None
        why = refusal(comp, artifact_id, champion_id, v, was, recorded_comparisons(backend.history()))
        if why is not None and not force:
            raise PromotionRefusedError(why)
        backend.write_alias(CHAMPION, v)
        data = promote_event(v, artifact_id, was, comp, why, force, reason)
        backend.append_event("promote", **data, note=note, user=current_user())
        forced = bool(data["forced"])
        log.info("%s: champion → %s (was %s)%s", backend.label, v, was, " [forced]" if forced else "")
        return Change(CHAMPION, v, was, changed=True, forced=forced)


def rollback(backend: RegistryBackend, *, note: str = "") -> Change:
    """Make the previous champion (in the history) the champion again; repeated calls walk further back."""
    with changing(backend):
        backend.check_alias_slot(CHAMPION)
        was = current(backend, CHAMPION)
        stack = champions(backend)
        if was is None:
            raise RollbackError(f"{backend.label} has no champion; there is nothing to roll back")
        if len(stack) < 2:
            raise RollbackError(
                f"{backend.label}: version {was} is the first champion in the history; there is no earlier "
                "champion to roll back to"
            )
        target = stack[-2]
        if not backend.has_version(target):
            raise RollbackError(f"{backend.label}: the previous champion, version {target}, is missing")
        artifact_id = backend.verify(target)
        backend.write_alias(CHAMPION, target)
        backend.append_event(
            "rollback",
            alias=CHAMPION,
            version=target,
            artifact_id=artifact_id,
            previous=was,
            note=note,
            user=current_user(),
        )
        log.info("%s: champion rolled back to %s (was %s)", backend.label, target, was)
        return Change(CHAMPION, target, was, changed=True)
