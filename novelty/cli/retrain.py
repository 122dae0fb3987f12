"""``novelty retrain`` and ``novelty compare``: retrain a champion with its own parameters, compare the two.

    novelty retrain CHAMPION --dataset DS [--version V] [--window 30d] [--versions 2,3] [--new-only] --out DIR
    novelty compare CHAMPION CHALLENGER --test DS[:V] [--new DS[:V]] [--min-gain 0.01] [--margin 0.02]
                    [--out comparison.json] [--report comparison.html]

``retrain`` writes ``DIR/detector/`` and ``DIR/record.json`` (the layout of a registry version).
``compare`` exits 0 when the gate passes (promote), 3 when it does not (keep the champion), 1 on a failure,
2 on bad arguments; the gate's checks are printed either way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from novelty.artifact import registry_root
from novelty.cli.common import UsageError, int_arg, real_arg
from novelty.cli.registry import backend_options, open_backend
from novelty.errors import InvalidInputError
from novelty.flywheel.comparison.compare import GateRule, compare, parse_dataset_arg
from novelty.flywheel.retrain import parse_window, retrain, save_retrained

__all__ = ["COMMANDS", "EXIT_GATE_FAILED", "add_parsers", "run"]

COMMANDS: tuple[str, ...] = ("retrain", "compare")

#: ``novelty compare``: the comparison finished and the gate did not pass
EXIT_GATE_FAILED = 3

_COMPARE_EPILOG = """exit codes: 0 the gate passed (promote) · 3 the gate did not pass (keep the champion) ·
1 failure · 2 usage error
differences are challenger − champion; intervals: paired bootstrap, clusters of near-duplicates drawn together"""


def _versions(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of versions, e.g. 2,3"
        ) from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"versions are integers ≥ 1, got {text!r}")
    return out


def _window(text: str) -> float:
    try:
        return parse_window(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    r = sub.add_parser(
        "retrain",
        help="retrain a champion on a labelled dataset with exactly its parameters",
        description="Fit a new detector with the champion's parameters (same backbone, scorers, head, "
        "calibration; a config hash proves it) on a labelled dataset: index, autoencoder, calibration and "
        "head are all refitted. Writes OUT/detector/ and OUT/record.json.",
        epilog=epilog,
        formatter_class=fmt,
    )
    r.add_argument("champion", metavar="CHAMPION", help="the champion: a detector directory or DIR/detector/")
    r.add_argument("--dataset", required=True, metavar="DS", help="the labelled dataset directory")
    r.add_argument(
        "--version", type=int_arg(1), default=None, help="the dataset version to read (default: latest)"
    )
    r.add_argument(
        "--window",
        type=_window,
        default=None,
        metavar="DURATION",
        help="only entries labelled in the last 30d, 12h, 2w",
    )
    r.add_argument(
        "--versions", type=_versions, default=None, help="only the entries these versions added: 2,3"
    )
    r.add_argument(
        "--new-only",
        action="store_true",
        help="only the entries added after the champion's dataset version (needs its record.json)",
    )
    r.add_argument(
        "--seed",
        type=int_arg(0),
        default=None,
        help="every seed of the new detector (default: the champion's)",
    )
    r.add_argument(
        "--allow-new-classes",
        action="store_true",
        help="train the head on labels the champion's head does not know (refused by default)",
    )
    r.add_argument("--out", required=True, metavar="DIR", help="writes DIR/detector/ and DIR/record.json")

    c = sub.add_parser(
        "compare",
        help="compare a champion and a challenger on the same test data; exit 0 when the gate passes",
        description="Score the same frozen test set (and the new slice) with both detectors, per condition: head "
        "accuracy, ECE, novelty AUROC, false-alarm rate at alpha; paired bootstrap intervals of each difference, "
        "McNemar's test on the head; the promotion gate.",
        epilog=_COMPARE_EPILOG,
        formatter_class=fmt,
    )
    c.add_argument("champion", metavar="CHAMPION", help="detector directory or DIR/detector/")
    c.add_argument("challenger", metavar="CHALLENGER", help="detector directory or DIR/detector/")
    c.add_argument(
        "--test",
        required=True,
        metavar="DS[:VERSION]",
        help="the frozen test set: every entry of the dataset up to VERSION (default: its latest)",
    )
    c.add_argument(
        "--new",
        default=None,
        metavar="DS[:VERSION]",
        help="the new slice: newly labelled images held out from training (with :VERSION only those it added)",
    )
    c.add_argument(
        "--nominal",
        default="clean",
        help="comma-separated nominal conditions: their flags are false alarms (default: clean)",
    )
    c.add_argument(
        "--alpha", type=real_arg(1e-6, 0.999999), default=None, help="default: each detector's own"
    )
    c.add_argument(
        "--min-gain", type=real_arg(-1.0, 1.0), default=0.01, help="minimum overall gain (default 0.01)"
    )
    c.add_argument(
        "--margin",
        type=real_arg(0.0, 1.0),
        default=0.02,
        help="largest drop allowed on any condition (default 0.02)",
    )
    c.add_argument(
        "--fa-tolerance",
        type=real_arg(0.0, 1.0),
        default=None,
        help="false alarms allowed above max(alpha, champion's); default the binomial 95 %% margin",
    )
    c.add_argument(
        "--n-boot", type=int_arg(100), default=1000, help="bootstrap replicates (default 1000, at least 100)"
    )
    c.add_argument("--seed", type=int_arg(0), default=0, help="bootstrap seed (default 0, at least 0)")
    c.add_argument(
        "--allow-config-change",
        action="store_true",
        help="compare detectors trained with different parameters (refused by default: only the data may change)",
    )
    c.add_argument("--out", metavar="JSON", help="write the comparison (JSON; read by novelty promote)")
    c.add_argument("--report", metavar="HTML", help="write the HTML comparison report")
    c.add_argument(
        "--registry",
        metavar="REGISTRY",
        default=None,
        help="record the comparison written by --out in this registry, so that promote accepts it (default: the "
        "registry the champion or the challenger lies in, if any)",
    )
    backend_options(c)


def _comparison_registry(args: argparse.Namespace) -> Any:
    """The registry to record the comparison in: --registry / --mlflow, else the one the detectors lie in."""
    if args.registry is None and not args.mlflow:
        if args.model:
            raise UsageError("--model goes with --mlflow URI")
        roots = {r for r in (registry_root(args.champion), registry_root(args.challenger)) if r is not None}
        if len(roots) > 1:
            raise UsageError(
                f"the champion and the challenger lie in two registries ({', '.join(map(str, sorted(roots)))}); "
                "name the one to record the comparison in with --registry"
            )
        if not roots or not args.out:
            return None
        args.registry = str(roots.pop())
    elif not args.out:
        raise UsageError("--registry / --mlflow record the comparison file: give --out JSON too")
    return open_backend(args)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.command == "retrain":
        return _retrain(args)
    if args.command == "compare":
        return _compare(args)
    raise ValueError(f"not a command of this module: {args.command}")


def _retrain(args: argparse.Namespace) -> int:
    out = Path(args.out)
    reg = registry_root(out)
    if reg is not None:
        raise UsageError(
            f"--out {out} lies inside the model registry {reg}: registered versions never change; write the new "
            f"detector elsewhere, then `novelty register {reg} {out}`"
        )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory (it will hold detector/ and record.json)")
    if (out / "manifest.json").exists():
        raise UsageError(f"--out {out} is a detector directory; give a new directory")
    det, rec = retrain(
        args.champion,
        args.dataset,
        version=args.version,
        window_days=args.window,
        versions=args.versions,
        new_only=args.new_only,
        seed=args.seed,
        allow_new_classes=args.allow_new_classes,
        progress=_say,
    )
    rec = save_retrained(det, rec, out)
    ds = rec.dataset
    print(
        f"retrained on {ds.n if ds else '?'} images ({'window ' + ds.window if ds and ds.window else 'all entries'}"
        f", dataset version {ds.version if ds else '?'}) in {rec.compute_s:.1f} s; config hash {rec.config_hash[:12]}…"
    )
    print(f"saved {out / 'detector'} (artifact {rec.artifact_id}) and {out / 'record.json'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    for flag, path in (("--out", args.out), ("--report", args.report)):
        if path and Path(path).is_dir():
            raise UsageError(f"{flag} {path} is a directory; give the file to write")
    nominal = tuple(x.strip() for x in args.nominal.split(",") if x.strip())
    if not nominal:
        raise UsageError("--nominal needs at least one condition, e.g. clean")
    reg = _comparison_registry(args)  # opened before the long part: a wrong registry fails at once
    test, test_version = parse_dataset_arg(args.test)
    new, new_version = parse_dataset_arg(args.new) if args.new else (None, None)
    rule = GateRule(min_gain=args.min_gain, margin=args.margin, fa_tolerance=args.fa_tolerance)
    c = compare(
        args.champion,
        args.challenger,
        test,
        test_version=test_version,
        new_slice=new,
        new_version=new_version,
        alpha=args.alpha,
        nominal=nominal,
        n_boot=args.n_boot,
        seed=args.seed,
        rule=rule,
        allow_config_change=args.allow_config_change,
        progress=_say,
    )
    print(c.table())
    print()
    for line in c.reasons:
        print(line)
    print(f"verdict: {'PROMOTE the challenger' if c.passed else 'KEEP the champion'}")
    if args.out:
        written = c.save(args.out)
        print(f"comparison written to {written}")
        if reg is not None:
            reg.record_comparison(written)
            print(
                f"comparison recorded in the registry {getattr(reg, 'root', None) or reg!r}: novelty promote accepts it"
            )
        else:
            print(
                "note: the comparison is not recorded in a registry (the detectors are not registry versions): "
                "novelty promote accepts only recorded comparisons; pass --registry REGISTRY",
                file=sys.stderr,
            )
    if args.report:
        print(f"report written to {c.write_report(args.report)}")
    return 0 if c.passed else EXIT_GATE_FAILED
