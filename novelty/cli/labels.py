"""``novelty export``, ``novelty import-labels`` and ``novelty dataset``: labelling and the labelled dataset.

novelty export SELECTION --format label-studio|cvat|csv --out DIR [--dataset DS] [--document-root DIR]
               [--auto-accept [--auto-risk EPS] [--auto-min-p P] [--auto-min-prob Q] [--audit auto|SHARE]]
novelty export SELECTION --to-label-studio URL --project NAME [--document-root DIR] [--api-key-file PATH]
               [--out DIR] [...the options above]
novelty import-labels DATASET FILE --selection SELECTION [--format auto|label-studio|csv|cvat]
               [--labeller NAME] [--condition NAME]
novelty import-labels DATASET --from-label-studio URL --project NAME --selection SELECTION
               [--api-key-file PATH] [--save FILE] [--labeller NAME] [--condition NAME]
novelty dataset create DATASET --classes a,b
novelty dataset add-csv DATASET labels.csv [--source train] [--labeller NAME] [--allow-outside-root]
novelty dataset add-classes DATASET --classes c
novelty dataset show DATASET [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from novelty.cli.common import UsageError, real_arg
from novelty.errors import InvalidInputError
from novelty.fileio import atomic_write_text
from novelty.flywheel.dataset import Dataset

# import_labels, entries_from_csv and export_selection are looked up in their modules when called, so that a
# function replaced there (monkeypatch) is the one that runs
from novelty.flywheel.labels import labelimport, labelling
from novelty.flywheel.labels.labelstudio_api import pull_labels, push_export
from novelty.flywheel.labels.labelstudio_client import LabelStudio, LabelStudioAuthError, read_api_key
from novelty.flywheel.selection import read_selection

_KEY_HELP = """Label Studio's API key comes from the environment variable LABEL_STUDIO_API_KEY or the file --api-key-file
(never a command-line value): a personal access token (Account & Settings) or a legacy token, which the server
accepts only when started with `label-studio start --enable-legacy-api-token`."""

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS: tuple[str, ...] = ("export", "import-labels", "dataset")

_AUTO_HELP = """assisted labelling (--auto-accept): an image whose head answer is trusted (not novel AND the head
competent there, at the detector's own error rate ε, or at --auto-risk EPS, one of the ε the selection's trust
decision records) AND whose p-value is ≥ --auto-min-p (default: the selection's alpha) AND whose head probability
is ≥ --auto-min-prob (default 0.9) gets the head's prediction as its label (labeller model:<model_version>)
without a human; it goes into --dataset, or into DIR/auto_labels.csv to import later, and is not sent to the
tool. Selections made before the trust decision keep the old rule (p-value and probability alone). DIR/export.json
records the ε and the competence threshold used.

the audit (--audit, default auto with --auto-accept): some of the answers the rule would take go to people
instead, listed in DIR/export.json, so that the rule's error rate is measured on every export. auto sends the
smallest number n whose clean audit (no answer wrong) bounds the error rate by ε at confidence 1 − δ (exact
one-sided Clopper–Pearson bound): n = ceil(ln δ / ln(1 − ε)), 45 at ε = 0.05, δ = 0.1 (one wrong of 45 bounds it
by 8.4 % only); ε is the one auto-accept holds, δ the trust decision's (0.05 and 0.1 for selections without
one); when the rule takes fewer than n, all of them go to people. A number SHARE in [0, 1] sends that share
instead (at least one; 0: no audit)"""


def _classes(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give class names separated by commas, e.g. dry,wet")
    return names


_unit = real_arg(0.0, 1.0)


def _audit(text: str) -> float | str:
    """``--audit``: ``auto`` or a share in [0, 1]."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return _unit(text)
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"give auto or a share in [0, 1] ({e})") from None


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    e = sub.add_parser(
        "export",
        help="export a selection to a labelling tool (Label Studio, CVAT, CSV)",
        description="Write the selected images for a labelling tool: Label Studio tasks (local-file URLs, the "
        "head's answer as a pre-annotation with model_version and the head's probability as its score; the "
        "novelty score, group and condition in the task data) and labelling config; "
        "CVAT for images 1.1 XML with tag pre-annotations and the image list; or a CSV with an empty label "
        "column. DIR/export.json records what was written. With --to-label-studio URL --project NAME the export "
        "goes on into Label Studio through its API: the project (created, or given the classes it lacks), a "
        "local-files storage over the images' folder, and the tasks it does not have yet (matched by sha256 and "
        "id; annotations already made stay).",
        epilog=f"{_AUTO_HELP}\n\n{_KEY_HELP}\n\n{epilog}",
        formatter_class=fmt,
    )
    e.add_argument("selection", metavar="SELECTION", help="selection.json written by `novelty select`")
    e.add_argument("--format", default="label-studio", choices=("label-studio", "cvat", "csv"))
    e.add_argument(
        "--out",
        metavar="DIR",
        help="folder to write the export into (with --to-label-studio: optional, by default SELECTION's name "
        "with .export, e.g. selection.export/ beside selection.json)",
    )
    e.add_argument(
        "--dataset",
        metavar="DS",
        help="the labelled dataset: images it already labels are left out; auto-accepted labels go into it",
    )
    e.add_argument(
        "--labelled",
        action="append",
        default=[],
        metavar="DATASET",
        help="another dataset whose images are labelled already (a test set, a new slice): left out, never "
        "bought twice (repeatable)",
    )
    e.add_argument(
        "--classes",
        type=_classes,
        metavar="A,B",
        help="classes to label with (default: the head's, else the dataset's)",
    )
    e.add_argument(
        "--document-root",
        metavar="DIR",
        help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the parent of the images' common "
        "folder, which becomes the project's local-files storage path); every image must lie below it",
    )
    e.add_argument(
        "--to-label-studio",
        metavar="URL",
        help="create or update a Label Studio project through its API (e.g. http://localhost:8080)",
    )
    e.add_argument(
        "--project", metavar="NAME", help="the Label Studio project's name (with --to-label-studio)"
    )
    e.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="a file holding the Label Studio API key (else $LABEL_STUDIO_API_KEY)",
    )
    e.add_argument("--auto-accept", action="store_true", help="accept the head's trusted, confident answers")
    e.add_argument(
        "--auto-risk",
        type=real_arg(0.0, 1.0, low_open=True, high_open=True),
        default=None,
        metavar="EPS",
        help="the error rate auto-accepted answers are held to (default: the detector's own); one the selection's "
        "trust decision records (selection.json 'trust' thresholds)",
    )
    e.add_argument(
        "--auto-min-p", type=_unit, default=None, metavar="P", help="default: the selection's alpha"
    )
    e.add_argument("--auto-min-prob", type=_unit, default=0.9, metavar="Q", help="default: %(default)s")
    e.add_argument(
        "--audit",
        type=_audit,
        default=None,
        metavar="auto|SHARE",
        help="how many of the answers --auto-accept would take go to people instead, listed in export.json, so "
        "the rule's error rate is measured: auto (default), as many as a clean audit needs to bound it by ε "
        "(see below); or a share in [0, 1] (0: no audit)",
    )

    i = sub.add_parser(
        "import-labels",
        help="import finished labels (Label Studio JSON export or project, CSV, CVAT XML) into a labelled dataset",
        description="Match each label to its selection item and add all of them to the dataset as one new version, "
        "or nothing: unknown files, unknown classes, conflicting labels for one image and duplicates are reported "
        "together. Images without a label are counted as unlabelled. With --from-label-studio URL --project NAME "
        "instead of FILE, the annotations are pulled from the project through Label Studio's API (its JSON "
        "export, the tasks of this selection only), counting labelled, skipped and unlabelled tasks.",
        epilog=f"{_KEY_HELP}\n\n{epilog}",
        formatter_class=fmt,
    )
    i.add_argument("dataset", metavar="DATASET", help="the labelled dataset directory")
    i.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        help="the labels: Label Studio JSON export, CSV, or CVAT XML (or --from-label-studio)",
    )
    i.add_argument("--from-label-studio", metavar="URL", help="pull the annotations from Label Studio's API")
    i.add_argument(
        "--project", metavar="NAME", help="the Label Studio project's name (with --from-label-studio)"
    )
    i.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="a file holding the Label Studio API key (else $LABEL_STUDIO_API_KEY)",
    )
    i.add_argument(
        "--save",
        metavar="FILE",
        help="with --from-label-studio: keep the pulled annotations there (a Label Studio JSON export)",
    )
    i.add_argument(
        "--selection", required=True, metavar="SELECTION", help="the selection.json that was exported"
    )
    i.add_argument("--format", default="auto", choices=("auto", "label-studio", "csv", "cvat"))
    i.add_argument(
        "--labeller",
        metavar="NAME",
        help="who labelled (human:NAME), for every label; default: from the file (Label Studio's user)",
    )
    i.add_argument("--condition", metavar="NAME", help="condition for images that have none (e.g. tunnel)")
    i.add_argument("--note", default="", help="a note for the new version")
    i.add_argument(
        "--on-conflict",
        choices=("fail", "latest", "skip"),
        default="fail",
        help="two people's different labels for one image: fail (list them, add nothing), latest (the newer "
        "label stands, the older stays as history) or skip (keep the label already there); a person's label "
        "always replaces an automatic one",
    )

    d = sub.add_parser(
        "dataset",
        help="create, fill and show a labelled dataset",
        description="The labelled dataset: a versioned, append-only directory (dataset.json + entries.jsonl).",
        epilog=epilog,
        formatter_class=fmt,
    )
    dsub = d.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    c = dsub.add_parser("create", help="create an empty dataset with fixed classes")
    c.add_argument("dataset", metavar="DATASET")
    c.add_argument("--classes", type=_classes, required=True, metavar="A,B")
    a = dsub.add_parser(
        "add-csv",
        help="add labelled images from a CSV (path,label[,group,condition]); each file is hashed",
        description="Add an initial training set: a UTF-8 CSV with columns path and label, optional group, condition, "
        "id, labeller, time. Relative paths are taken from the CSV's folder; a path outside it is refused unless "
        "--allow-outside-root. Every file is decoded: one that is not an image is refused, and then nothing is added.",
    )
    a.add_argument("dataset", metavar="DATASET")
    a.add_argument("csv", metavar="CSV")
    a.add_argument("--source", default="train", help="where the images came from (default: %(default)s)")
    a.add_argument("--labeller", default=None, metavar="NAME", help="for rows without a labeller column")
    a.add_argument("--note", default="")
    a.add_argument(
        "--on-conflict",
        choices=("fail", "latest", "skip"),
        default="fail",
        help="an image the dataset labels differently already: fail, latest (this label stands) or skip",
    )
    a.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept paths outside the CSV's folder (refused by default: ../../etc/passwd is no training image)",
    )
    k = dsub.add_parser("add-classes", help="add classes (a new version)")
    k.add_argument("dataset", metavar="DATASET")
    k.add_argument("--classes", type=_classes, required=True, metavar="A,B")
    s = dsub.add_parser("show", help="classes, versions and counts per class")
    s.add_argument("dataset", metavar="DATASET")
    s.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    if args.command == "export":
        return _export(args)
    if args.command == "import-labels":
        return _import(args)
    return _dataset(args)


def _label_studio(url: str | None, project: str | None, key_file: str | None, flag: str) -> Any:
    """The Label Studio client of ``--to/--from-label-studio`` (``None`` without it); bad arguments and a
    missing or unreadable key are usage errors, found before any work."""
    if url is None:
        if project is not None or key_file is not None:
            raise UsageError(f"--project and --api-key-file apply only with {flag}")
        return None
    if not project:
        raise UsageError(f"{flag} needs --project NAME (the Label Studio project)")
    try:
        return LabelStudio(url, read_api_key(key_file))
    except (LabelStudioAuthError, InvalidInputError) as e:
        raise UsageError(str(e)) from None


def _export(args: argparse.Namespace) -> int:
    client = _label_studio(args.to_label_studio, args.project, args.api_key_file, "--to-label-studio")
    if client is None and args.out is None:
        raise UsageError("give --out DIR (or --to-label-studio URL --project NAME)")
    if client is not None and args.format != "label-studio":
        raise UsageError(f"--to-label-studio exports the label-studio format, not {args.format}")
    if client is None:
        return _export_to(args, args.out, None)
    if args.out is not None:
        return _export_to(args, args.out, client)
    # the export's record (export.json: what went to people, what was audited) is kept beside the selection
    sel = Path(args.selection)
    return _export_to(args, str(sel.with_name(sel.stem + ".export")), client)


def _export_to(args: argparse.Namespace, out: str, client: Any) -> int:
    if (
        args.auto_min_p is not None
        or args.auto_min_prob != 0.9
        or args.audit not in (None, 0.0)
        or args.auto_risk is not None
    ) and not args.auto_accept:
        raise UsageError(
            "--auto-risk, --auto-min-p, --auto-min-prob and --audit only apply with --auto-accept"
        )
    res = labelling.export_selection(
        args.selection,
        out,
        format=args.format,
        classes=args.classes,
        document_root=args.document_root,
        auto_accept=args.auto_accept,
        auto_min_p=args.auto_min_p,
        auto_min_prob=args.auto_min_prob,
        audit=("auto" if args.auto_accept else 0.0) if args.audit is None else args.audit,
        dataset=args.dataset,
        labelled=args.labelled or None,
        auto_risk=args.auto_risk,
    )
    print(
        f"exported {res.n_exported} image(s) for {res.format} to {res.out_dir}: "
        f"{', '.join(f.name for f in res.files)}"
    )
    if client is not None:
        print(push_export(client, res.out_dir, args.project).summary(args.project))
    if res.n_already_labelled:
        print(f"left out {res.n_already_labelled} image(s) the dataset already labels")
    if args.auto_accept:
        where = (
            f"dataset version {res.auto_version}"
            if res.auto_version is not None
            else (str(res.auto_file) if res.auto_file else "nowhere (none qualified)")
        )
        print(f"auto-accepted {len(res.auto)} head answer(s) without a human → {where}")
        lam = res.auto_threshold
        if lam is None:
            print("  rule: not novel, p-value and probability (the selection records no trust decision)")
        else:
            eps = "the detector's own ε" if res.auto_risk is None else f"ε = {res.auto_risk:g}"
            print(
                f"  rule: trusted at {eps}, competence ≥ {lam:g}"
                if not math.isinf(lam)
                else f"  rule: trusted at {eps}, which the calibration split cannot certify: none accepted"
            )
        if res.audit_size:
            print(
                f"  audit: {res.audit_size} answer(s) the rule would take sent to people instead "
                "(export.json auto_accept.audit)"
            )
    return 0


def _import(args: argparse.Namespace) -> int:
    client = _label_studio(args.from_label_studio, args.project, args.api_key_file, "--from-label-studio")
    if client is None:
        if args.file is None:
            raise UsageError("give the labels FILE, or --from-label-studio URL --project NAME")
        if args.save is not None:
            raise UsageError("--save applies only with --from-label-studio")
        res = labelimport.import_labels(
            args.dataset,
            args.file,
            args.selection,
            format=args.format,
            labeller=args.labeller,
            condition=args.condition,
            note=args.note,
            on_conflict=args.on_conflict,
        )
    else:
        if args.file is not None:
            raise UsageError("give the labels FILE or --from-label-studio, not both")
        if args.format not in ("auto", "label-studio"):
            raise UsageError(f"--from-label-studio reads Label Studio's JSON, not {args.format}")
        res = _import_from_label_studio(args, client)
    print(res.summary())
    for label, n in res.counts().items():
        print(f"  {label}: {n}")
    return 0


def _import_from_label_studio(args: argparse.Namespace, client: Any) -> Any:
    """Pull the selection's tasks from the project, write them as a Label Studio JSON export (``--save FILE``,
    else a temporary file) and import that file: one reader of Label Studio's JSON."""
    sel = read_selection(args.selection)
    pulled = pull_labels(client, args.project, sel.items)
    print(pulled.summary(args.project))

    def run(path: Path) -> Any:
        atomic_write_text(path, pulled.to_json_text())
        return labelimport.import_labels(
            args.dataset,
            path,
            sel,
            format="label-studio",
            labeller=args.labeller,
            condition=args.condition,
            note=args.note,
            on_conflict=args.on_conflict,
        )

    if args.save is not None:
        return run(Path(args.save))
    with tempfile.TemporaryDirectory(prefix="novelty-label-studio-") as tmp:
        return run(Path(tmp) / f"label-studio-project-{pulled.project_id}.json")


def _dataset(args: argparse.Namespace) -> int:
    action = args.dataset_command
    if action == "create":
        ds = Dataset.create(args.dataset, args.classes)
        print(f"created {ds.path} with classes {', '.join(ds.classes)}")
        return 0
    if action == "add-csv":
        ds = Dataset.open(args.dataset)  # a missing dataset fails before any file is hashed
        entries = labelimport.entries_from_csv(
            args.csv, source=args.source, labeller=args.labeller, allow_outside_root=args.allow_outside_root
        )
        res = ds.add_entries(entries, source=f"csv:{args.csv}", note=args.note, on_conflict=args.on_conflict)
        per = ", ".join(f"{k}: {v}" for k, v in res.counts().items()) or "none"
        print(
            f"version {res.version}: added {len(res.added)} ({per}); skipped {len(res.skipped)} already labelled so"
        )
        return 0
    if action == "add-classes":
        ds = Dataset.open(args.dataset)
        version = ds.add_classes(args.classes)
        print(f"version {version}: classes are now {', '.join(ds.classes)}")
        return 0
    ds = Dataset.open(args.dataset)
    entries = ds.entries()
    counts: dict[str, int] = {c: 0 for c in ds.classes}
    for en in entries:
        counts[en.label] += 1
    n_auto = sum(en.auto for en in entries)
    if args.json:
        out = {
            "path": str(ds.path),
            "classes": ds.classes,
            "latest_version": ds.latest_version,
            "identity": ds.identity(),
            "n": len(entries),
            "n_auto": n_auto,
            "counts": counts,
            "versions": ds.versions,
        }
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return 0
    print(
        f"{ds.path}: {len(entries)} labelled image(s), version {ds.latest_version}, identity {ds.identity()[:16]}…"
    )
    print("classes: " + ", ".join(f"{c} ({n})" for c, n in counts.items()))
    if n_auto:
        print(f"auto-accepted (labeller model:…): {n_auto}")
    for v in ds.versions:
        note = f" — {v['note']}" if v["note"] else ""
        print(f"  v{v['version']}  {v['created']}  +{v['n_added']:<6} {v['source']}{note}")
    return 0
