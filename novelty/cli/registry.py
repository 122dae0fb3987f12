"""``novelty register | promote | rollback | registry``: the model registry from the command line.

The local registry (a directory, :mod:`novelty.flywheel.registry.store`) by default; ``--mlflow URI --model NAME`` uses
an MLflow model registry instead (:mod:`novelty.flywheel.registry.mlflow_backend`, needs ``pip install 'novelty[mlflow]'``),
and then the REGISTRY argument is left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from novelty.cli.common import UsageError
from novelty.flywheel.registry.store import Registry, RegistryError, RegistryNotFoundError

__all__ = ["COMMANDS", "add_parsers", "backend_options", "open_backend", "run"]

COMMANDS: tuple[str, ...] = ("register", "promote", "rollback", "registry")

_REGISTRY_HELP = "the registry directory (created by register when missing); left out with --mlflow"


def backend_options(p: argparse.ArgumentParser) -> None:
    """``--mlflow URI`` and ``--model NAME``: an MLflow model registry instead of a directory."""
    g = p.add_argument_group("MLflow backend")
    g.add_argument(
        "--mlflow",
        metavar="URI",
        help="use the MLflow model registry at this tracking URI (e.g. sqlite:///mlflow.db) instead of a directory",
    )
    g.add_argument("--model", metavar="NAME", help="the registered model's name in MLflow (with --mlflow)")


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    r = sub.add_parser(
        "register",
        help="add a saved detector to a model registry as a new version",
        description="Verify a saved detector (checksums and a full load), copy it into the registry as a new "
        "version with its training record, and print the version. A detector already registered keeps its version.",
        epilog=epilog,
        formatter_class=fmt,
    )
    r.add_argument("registry", nargs="?", metavar="REGISTRY", help=_REGISTRY_HELP)
    r.add_argument(
        "detector", metavar="DETECTOR_DIR", help="a saved detector (novelty fit --out, novelty retrain)"
    )
    r.add_argument(
        "--record", metavar="JSON", help="the training record (record.json) written with the detector"
    )
    r.add_argument("--note", default="", help="a note stored with the version")
    r.add_argument(
        "--alias",
        metavar="NAME",
        help="also point this alias at the version (e.g. challenger); the champion changes only by promote",
    )
    r.add_argument(
        "--no-load",
        action="store_true",
        help="verify the checksums only, without a full load (which needs the backbone's weights here)",
    )
    backend_options(r)

    p = sub.add_parser(
        "promote",
        help="make a registered version the champion (needs a passing comparison, or --force)",
        description="Point the champion alias at VERSION in one atomic step (a service started on "
        "REGISTRY/champion reloads). Refused unless --comparison names a `novelty compare` file, recorded in this "
        "registry, in which this version passed against the current champion; its gate is judged again from its "
        "numbers, so an edited file is refused. --force --reason 'why' promotes anyway and is recorded as forced, "
        "with the reason. The first champion needs no comparison.",
        epilog=epilog,
        formatter_class=fmt,
    )
    p.add_argument("registry", nargs="?", metavar="REGISTRY", help=_REGISTRY_HELP)
    p.add_argument("version", metavar="VERSION", help="a version number (3 or 0003) or an alias (challenger)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--comparison", metavar="JSON", help="the comparison file written by novelty compare")
    how.add_argument(
        "--force", action="store_true", help="promote without a passing comparison (needs --reason; recorded)"
    )
    p.add_argument("--reason", default="", help="why a forced promotion is right (required with --force)")
    p.add_argument("--note", default="", help="a note stored in the history")
    backend_options(p)

    b = sub.add_parser(
        "rollback",
        help="make the previous champion the champion again",
        description="Point the champion alias back at the champion before it in the history; run it again to "
        "walk further back. Fails when there is no earlier champion.",
        epilog=epilog,
        formatter_class=fmt,
    )
    b.add_argument("registry", nargs="?", metavar="REGISTRY", help=_REGISTRY_HELP)
    b.add_argument("--note", default="", help="a note stored in the history")
    backend_options(b)

    s = sub.add_parser(
        "registry",
        help="list the versions of a model registry (or its history)",
        description="A table of the registered versions: version, artifact id, aliases, when registered, note. "
        "--history lists the events (register, alias, promote, rollback) instead.",
        epilog=epilog,
        formatter_class=fmt,
    )
    s.add_argument(
        "registry", nargs="?", metavar="REGISTRY", help="the registry directory; left out with --mlflow"
    )
    s.add_argument(
        "--history", action="store_true", help="list the history of events instead of the versions"
    )
    backend_options(s)


def open_backend(args: argparse.Namespace, *, create: bool = False) -> Any:
    """The registry named by ``REGISTRY`` or ``--mlflow URI --model NAME`` (see :func:`backend_options`)."""
    if args.mlflow:
        if args.registry is not None:
            raise UsageError(f"give either REGISTRY ({args.registry}) or --mlflow URI, not both")
        if not args.model:
            raise UsageError("--mlflow needs --model NAME (the registered model's name)")
        try:
            from novelty.flywheel.registry.mlflow_backend import MlflowRegistry  # lazy: mlflow (~1.5 s)
        except ImportError as e:
            if "mlflow" not in str(e):
                raise
            raise RegistryError(
                f"the MLflow backend needs mlflow: pip install 'novelty[mlflow]' ({e})"
            ) from None
        return MlflowRegistry(args.mlflow, args.model)
    if args.model:
        raise UsageError("--model goes with --mlflow URI")
    if args.registry is None:
        raise UsageError("give the REGISTRY directory (or --mlflow URI --model NAME)")
    path = Path(args.registry)
    if create and (not path.exists() or (path.is_dir() and not any(path.iterdir()))):
        reg = Registry.create(path)
        print(f"created registry {path}", file=sys.stderr)
        return reg
    return Registry.open(path)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _cmd_register(args: argparse.Namespace) -> int:
    reg = open_backend(args, create=True)
    try:
        before = {v.version for v in reg.list_versions()}
    except RegistryNotFoundError:  # an MLflow model not created yet
        before = set()
    version = reg.register(
        args.detector, record=args.record, note=args.note, alias=args.alias, load=not args.no_load
    )
    info = reg.get(version)
    aliases = f" ({', '.join(info.aliases)})" if info.aliases else ""
    again = " (already registered; nothing copied)" if version in before else ""
    print(f"version {version}{aliases}: artifact {info.artifact_id[:12]} from {args.detector}{again}")
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    if args.force and not args.reason.strip():
        raise UsageError("--force needs --reason 'why': a forced promotion is recorded with its reason")
    if args.reason and not args.force:
        raise UsageError("--reason goes with --force")
    reg = open_backend(args)
    change = reg.promote(
        args.version, comparison=args.comparison, force=args.force, reason=args.reason, note=args.note
    )
    if not change.changed:
        print(f"version {change.version} is already the champion; nothing changed")
    else:
        forced = " [forced]" if change.forced else ""
        print(f"champion: version {change.version} (was {change.previous or 'none'}){forced}")
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    reg = open_backend(args)
    change = reg.rollback(note=args.note)
    print(f"champion: version {change.version} (rolled back from {change.previous})")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    reg = open_backend(args)
    if args.history:
        rows = []
        for ev in reg.history():
            d = ev.data
            what = ev.event + (" [forced]" if d.get("forced") else "")
            if ev.event == "compared":
                what += " (passed)" if d.get("passed") else " (not passed)"
            note = str(d.get("note") or "")
            if d.get("reason"):
                note = f"reason: {d['reason']}" + (f"; {note}" if note else "")
            rows.append(
                [
                    ev.time,
                    what,
                    str(d.get("alias") or ""),
                    str(d.get("version") or ""),
                    str(d.get("previous") or ""),
                    str(d.get("user") or ""),
                    note,
                ]
            )
        print(_table(rows, ["time", "event", "alias", "version", "previous", "user", "note"]))
        return 0
    rows = [
        [v.version, v.artifact_id[:12], ",".join(v.aliases), v.registered, v.note]
        for v in reg.list_versions()
    ]
    print(_table(rows, ["version", "artifact", "aliases", "registered", "note"]))
    for name, problem in getattr(reg, "broken_aliases", dict)().items():
        print(f"warning: alias {name}: {problem}", file=sys.stderr)
    if not rows:
        print("(no versions yet: novelty register REGISTRY DETECTOR_DIR)", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    commands = {
        "register": _cmd_register,
        "promote": _cmd_promote,
        "rollback": _cmd_rollback,
        "registry": _cmd_list,
    }
    return commands[args.command](args)
