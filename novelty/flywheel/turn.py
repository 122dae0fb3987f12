"""One turn of the flywheel, as far as it can go without a human: ``novelty flywheel run --config flywheel.toml``.

    turn = run_turn(load_config("flywheel.toml"))
    turn.stage       # "waiting-for-labels", "promoted", "rejected", …
    turn.cost        # labels bought, compute seconds, money

A turn moves through these stages, each recorded in ``WORKDIR/NNNN/turn.json`` before the next begins, so a
turn stopped anywhere (a crash, a kill, a missing labels file) is picked up where it stopped by the next run:

1. **selected**: the champion (the registry's ``champion`` alias) scores the sources (results files, folders,
   the flag store) and ``select`` picks ``budget`` images with the configured strategy → ``selection.json``,
   leaving out (by sha256) the images that the training set, the test set or the new slice label already, so
   no label is bought twice (``turn.json`` ``already_labelled``; export leaves out any labelled since);
2. **exported**: the selection is exported for the labelling tool (``export/``); with ``auto_accept`` the
   images whose head answer the champion trusts (not novel and competent there, at ``auto_risk``) get the head's
   answer without a human (into the turn's labels);
3. **waiting-for-labels**: the run stops here until the finished labels file exists (the config's ``labels``
   path, e.g. a Label Studio JSON export); a cron job simply runs the turn again later. With a
   ``[label_studio]`` section the export goes into the project through Label Studio's API, and each run pulls
   the annotations: once every exported task is labelled or skipped they are written to ``labels`` and
   imported; until then the turn waits and says how many are done;
4. **imported**: the labels (and the auto-accepted ones) are read into the turn's own dataset, validated
   all-or-nothing, and split by group: ``holdout`` of the people's labels go to the *new slice* (held out from
   training, so the comparison sees fresh images of the new conditions), the rest to the training dataset.
   Automatic labels go to training only, never into the new slice (nor into the test set, which a turn never
   writes); those in a held-out group stay out of both (``turn.json`` ``withheld``);
5. **retrained**: a challenger with the champion's parameters (same config hash) is fitted on the training
   dataset and registered with the alias ``challenger``;
6. **compared**: champion and challenger on the frozen test dataset plus the new slice; the gate decides;
7. **promoted** or **rejected**: a passing challenger becomes the champion (a service that serves
   ``REGISTRY/champion`` reloads by itself); a failing one stays registered for inspection.

A stage that fails leaves the turn where it stood and records the failure in ``turn.json`` (``error``: the
stage, the message, the time); ``novelty flywheel status`` shows it with the command to run next. The next run
tries the stage again; ``novelty flywheel run --retry`` does so explicitly, first clearing what the failed
stage left half-done (the import stages its labels in a folder of its own, ``labels.staging/``, renamed to
``labels/`` when complete, and rebuilt on every try, so a failed import is never in the way);
``--abort [--reason TEXT]`` ends the turn (stage ``aborted``, logged; the next run starts a new turn); and
``--skip-stage STAGE`` goes on without the next stage where that is safe: ``import`` (stop waiting for the
people's labels and import only those accepted from the model) and ``promote`` (end the turn rejected); the
others are refused with the reason (a turn without a selection, an export, a challenger or a comparison has
nothing sound to go on with).

Each turn also appends a line to ``WORKDIR/turns.jsonl``: labels bought (human) and accepted automatically,
the candidates left out as labelled already, the compute seconds of each stage, and their cost at the prices
of ``[cost]``.

The config (TOML; relative paths are relative to the config file)::

    registry = "registry"          # novelty registry (its champion is where a turn starts)
    dataset = "data/train"         # the labelled training dataset (novelty dataset create …)
    test = "data/test"             # the frozen test dataset (with conditions; "clean" is nominal)
    new_slice = "data/new"         # held-out new labels (created on first use)
    workdir = "turns"

    [select]
    sources = ["incoming/"]        # results files and image folders / lists
    flags = "novelty-flags"        # optional: the service's flag store (its folder, or a PostgreSQL DSN)
    strategy = "diversity"         # the best compromise on pools of 10-86 % new frames (RESULTS "Flywheel")
    budget = 50
    seed = 0

    [label]
    format = "label-studio"        # label-studio | cvat | csv
    labels = "turns/{turn}/labels.json"   # the finished labels of turn {turn}
    labeller = "alice"             # optional: recorded as the labeller of every imported label, instead of
                                   # the file's own
    auto_accept = true             # only answers the champion trusts (not novel, competent: novelty.trust)
    auto_risk = 0.05               # optional: the error rate ε auto-accepted answers are held to, one that
                                   # selection.json's trust header records (0.01, 0.02, 0.05, 0.1 or the
                                   # detector's own); default: the detector's own ε
    auto_min_p = 0.05              # optional: the least p-value of an auto-accepted image; default: the
                                   # detector's alpha (not flagged as novel)
    auto_min_prob = 0.9            # the least head probability of an auto-accepted answer
    audit = "auto"                 # answers the rule would accept sent to people instead, so the rule's
                                   # error rate is measured every turn (turn.json "audit"): "auto", as many
                                   # as a clean audit needs to bound it by ε at 1 − δ (ceil(ln δ / ln(1 − ε)):
                                   # 45 at ε 0.05, δ 0.1; labelling.audit_size), or a share in [0, 1]
    holdout = 0.2                  # share of the new labels (by group) kept out of training
    on_conflict = "fail"           # two people's different labels for one image: "fail" (the import stops,
                                   # listing them), "latest" (the label given last stands) or "skip" (the
                                   # image keeps its label, or none); a person's label always replaces an
                                   # automatic one (logged, recorded in the dataset version and turn.json)

    [label_studio]                 # optional: export to and import from Label Studio through its API
    url = "http://localhost:8080"
    project = "windshield"         # created on the first turn; "{turn}" in the name: one project per turn
    document_root = "."            # the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: every exported image
                                   # must lie below it (an image outside is refused)
    api_key_file = "~/.label-studio-key"   # or api_key_env = "LABEL_STUDIO_API_KEY" (the default)

    [retrain]
    window = ""                    # e.g. "90d": only labels of the last 90 days
    new_only = false

    [gate]
    min_gain = 0.01
    margin = 0.02
    nominal = ["clean"]
    n_boot = 1000                  # bootstrap replicates of the comparison (≥ 100)

    [cost]
    currency = "USD"
    label = 0.08                   # per label bought from a human
    compute_hour = 0.40            # per hour of compute on this machine
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import novelty
from novelty.artifact import read_artifact
from novelty.errors import ArtifactError, NoveltyError
from novelty.flywheel.comparison.compare import GateRule, compare
from novelty.flywheel.config import FlywheelConfig, FlywheelConfigError, load_config
from novelty.flywheel.dataset import Dataset
from novelty.flywheel.labels.labelimport import import_labels
from novelty.flywheel.labels.labelling import audit_result, export_selection
from novelty.flywheel.pools import build_pool
from novelty.flywheel.registry.store import Registry
from novelty.flywheel.routing import _route
from novelty.flywheel.selection import Selection, select
from novelty.flywheel.turn_state import (
    ACTIONS,
    STAGES,
    STAGING,
    STAGING_TMP,
    WAITING,
    Turn,
    TurnActionError,
    _log_turn,
    _now,
    _retry,
    _skip,
    _Timer,
    _turn_dirs,
    abort_turn,
    next_step,
    turn_history,
)

log = logging.getLogger("novelty.flywheel")

__all__ = [
    "ACTIONS",
    "STAGES",
    "FlywheelConfig",
    "FlywheelConfigError",
    "Turn",
    "TurnActionError",
    "abort_turn",
    "load_config",
    "next_step",
    "run_turn",
    "turn_history",
]


# --- the stages -----------------------------------------------------------------------------------------
def run_turn(
    config: FlywheelConfig,
    *,
    say: Callable[[str], None] | None = None,
    new_turn: bool = True,
    retry: bool = False,
    skip_stage: str | None = None,
) -> Turn:
    """Advance the current turn as far as it goes (or start a new one when the last is finished and
    ``new_turn``); returns the turn's state. Never waits for a human: a missing labels file leaves the turn at
    ``waiting-for-labels``.

    A stage that fails leaves the turn where it stood, with the failure in ``turn.json`` (``error``: the stage,
    the message, the time; :func:`next_step` says what to run); the exception is raised again. The next run
    tries that stage again; ``retry=True`` says so explicitly (refused when nothing failed) and first clears
    what the failed stage left half-done. ``skip_stage``: go on without the next stage, where that is safe
    (``"import"``: the people's labels are not waited for, only the automatic ones are imported;
    ``"promote"``: the turn ends rejected, the champion stays); a stage that cannot be skipped, or is not the
    next one, is refused with the reason (:class:`TurnActionError`). :func:`abort_turn` ends a turn."""
    say = say or (lambda msg: log.info("%s", msg))
    registry = Registry.open(config.registry)
    config.workdir.mkdir(parents=True, exist_ok=True)
    dirs = _turn_dirs(config.workdir)
    turn = Turn.load(dirs[-1]) if dirs else None
    if retry or skip_stage is not None:
        what = "--retry" if retry else f"--skip-stage {skip_stage}"
        if turn is None or turn.done:
            raise TurnActionError(
                f"{what}: no unfinished turn"
                + ("" if turn is None else f" (turn {turn.number} is {turn.stage})")
                + "; run without it to start the next turn"
            )
        if retry:
            _retry(turn, say)
        if skip_stage is not None:
            _skip(turn, skip_stage, say)
        turn.save()
        if turn.done:  # skipping the promotion ends the turn
            _log_turn(config, turn)
            return turn
    if turn is None or turn.done:
        if not new_turn:
            if turn is None:
                raise NoveltyError(f"{config.workdir}: no turn yet")
            return turn
        number = 1 if turn is None else turn.number + 1
        d = config.workdir / f"{number:04d}"
        d.mkdir(parents=True, exist_ok=True)
        turn = Turn(number=number, dir=d, champion=registry.resolve("champion"))
        turn.save()
        say(f"turn {number}: started from champion version {turn.champion}")
    steps = {
        "started": _select,
        "selected": _export,
        "exported": _import,
        WAITING: _import,
        "imported": _retrain,
        "retrained": _compare,
        "compared": _decide,
    }
    while not turn.done:
        before = turn.stage
        try:
            steps[turn.stage](config, registry, turn, say)
        except Exception as e:  # recorded for `flywheel status`, then raised as it was
            turn.error = {"stage": ACTIONS[before], "message": str(e) or type(e).__name__, "at": _now()}
            turn.stage = before
            turn.save()
            raise
        turn.error = None
        turn.save()
        if turn.stage in (before, WAITING):
            break
    if turn.done:
        _log_turn(config, turn)
    return turn


def _champion(registry: Registry, turn: Turn) -> Path:
    return registry.path(str(turn.champion))


def _select(config: FlywheelConfig, registry: Registry, turn: Turn, say: Callable[[str], None]) -> None:
    with _Timer(turn, "select"):
        det = novelty.load(_champion(registry, turn))
        pool = build_pool(
            det,
            config.sources,
            flags=config.flags,
            images_dir=turn.dir / "images",
            progress=False,
            # the training set's cache: last week's flags are not embedded again, and retrain finds the labelled
            # ones there
            embedding_cache=Dataset.open(config.dataset).embeddings_dir,
        )
        if len(pool) == 0:
            raise NoveltyError(
                "the sources hold no scorable image; nothing to select (the turn stays started)"
            )
        sel = select(
            pool,
            config.budget,
            config.strategy,
            seed=config.seed + turn.number,
            model_version=det.artifact_id_,
            dataset=_labelled_datasets(config),
        )
        sel.save(turn.dir / "selection.json")
    turn.selected = len(sel)
    turn.already_labelled = sel.n_already_labelled or 0
    turn.stage = "selected"
    say(
        f"turn {turn.number}: selected {len(sel)} of {len(pool)} images ({config.strategy}); "
        f"{turn.already_labelled} labelled already left out"
    )


def _labelled_datasets(config: FlywheelConfig) -> list[Path]:
    """The flywheel's datasets whose images are labelled already: the training set, the test set and the new
    slice (when it exists). Buying a label again for one of them is waste, and for a test image a leak."""
    return [config.dataset, config.test, config.new_slice]


def _export(config: FlywheelConfig, registry: Registry, turn: Turn, say: Callable[[str], None]) -> None:
    with _Timer(turn, "export"):
        sel = Selection.load(turn.dir / "selection.json")
        classes = Dataset.open(config.dataset).classes
        auto_file = turn.dir / "export" / "auto_labels.csv"
        res = export_selection(
            sel,
            turn.dir / "export",
            format=config.label_format,
            classes=classes,
            auto_accept=config.auto_accept,
            auto_min_p=config.auto_min_p,
            auto_min_prob=config.auto_min_prob,
            audit=config.audit,
            auto_risk=config.auto_risk if config.auto_accept else None,
            labelled=_labelled_datasets(config),
            document_root=None if config.label_studio is None else config.label_studio.document_root,
        )
        ls = config.label_studio
        if ls is not None and res.n_exported:  # into the project; the turn stays selected if this fails
            say(
                f"turn {turn.number}: {ls.push(res.out_dir, turn.number).summary(ls.project_name(turn.number))}"
            )
    turn.already_labelled += res.n_already_labelled
    turn.exported = res.n_exported
    turn.auto_accepted = len(res.auto)
    turn.stage = "exported"
    say(
        f"turn {turn.number}: exported {res.n_exported} images for people ({config.label_format}, in "
        f"{turn.dir / 'export'}); {len(res.auto)} accepted from the model"
        + (f" ({auto_file.name})" if res.auto else "")
        + (f"; {res.audit_size} it would accept audited by people" if res.audit_size else "")
        + (f"; {res.n_already_labelled} labelled meanwhile left out" if res.n_already_labelled else "")
    )


def _import(config: FlywheelConfig, registry: Registry, turn: Turn, say: Callable[[str], None]) -> None:
    import shutil

    labels = config.labels_path(turn.number)
    auto_file = turn.dir / "export" / "auto_labels.csv"
    from_people = turn.exported > 0 and "import" not in turn.skipped  # --skip-stage import: without them
    ls = config.label_studio
    if ls is not None and from_people and not labels.is_file():
        pulled = ls.pull(turn.dir / "export", turn.number, labels)  # writes labels once every task is done
        if not pulled.finished:
            turn.stage = WAITING
            turn.waiting_for = f"{ls.url} project {ls.project_name(turn.number)!r}"
            turn.message = f"waiting for labels in Label Studio at {turn.waiting_for}: " + (
                f"{pulled.labelled + pulled.skipped} of {turn.exported} tasks done ({pulled.labelled} labelled, "
                f"{pulled.skipped} skipped, {pulled.unlabelled} unlabelled"
                + (f", {len(pulled.missing)} missing from the project" if pulled.missing else "")
                + ")"
            )
            say(f"turn {turn.number}: {turn.message}; run again when they are done")
            return
    if from_people and not labels.is_file():
        turn.stage = WAITING
        turn.waiting_for = str(labels)
        turn.message = f"waiting for the finished labels at {labels}"
        say(f"turn {turn.number}: {turn.message}; run again when they are there")
        return
    with _Timer(turn, "import"):
        sel = Selection.load(turn.dir / "selection.json")
        train_ds = Dataset.open(config.dataset)
        # the turn's labels are staged afresh on every try, in a folder of their own renamed when complete:
        # what a failed try left is removed, never read again
        tmp = turn.dir / STAGING_TMP
        if tmp.exists():
            shutil.rmtree(tmp)
        staging = Dataset.create(tmp, train_ds.classes)
        human = 0
        audit = None
        conflicts: list[Any] = []
        if from_people:
            res = import_labels(
                staging,
                labels,
                sel,
                labeller=config.labeller,
                note=f"turn {turn.number}",
                on_conflict=config.on_conflict,
            )
            human = len(res.added) + len(res.skipped)
            conflicts += res.conflicts
        if from_people:
            people = {e.id: e.label for e in staging.entries() if not e.auto}
            audit = audit_result(turn.dir / "export", people)
            turn.audit = audit.to_json()
        if auto_file.is_file():
            res = import_labels(
                staging, auto_file, sel, format="csv", note=f"turn {turn.number}: auto-accepted"
            )
            conflicts += res.conflicts
        entries = list(staging.entries())
        final = turn.dir / STAGING
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        evaluated = [
            e.group
            for d in (config.new_slice, config.test)
            if (d / "dataset.json").is_file()
            for e in Dataset.open(d).entries()
            if e.group
        ]
        train, held, withheld = _route(
            entries,
            config.holdout,
            config.seed + turn.number,
            trained=(e.group for e in train_ds.entries() if e.group),
            evaluated=evaluated,
        )
        source = f"flywheel turn {turn.number}"
        added = train_ds.add_entries(
            [replace(e, version=0, supersedes=None) for e in train],
            source=source,
            note=f"turn {turn.number}",
            on_conflict=config.on_conflict,
        )
        version = added.version
        conflicts += added.conflicts
        if held:
            new_ds = (
                Dataset.open(config.new_slice)
                if (config.new_slice / "dataset.json").is_file()
                else Dataset.create(config.new_slice, train_ds.classes)
            )
            conflicts += new_ds.add_entries(
                [replace(e, version=0, supersedes=None) for e in held],
                source=source,
                note=f"turn {turn.number}",
                on_conflict=config.on_conflict,
            ).conflicts
    turn.labels_bought = human
    turn.conflicts = [c.describe() for c in conflicts]
    turn.trained_on = len(train)
    turn.held_out = len(held)
    turn.withheld = len(withheld)
    turn.dataset_version = version
    turn.waiting_for = None
    turn.message = ""
    turn.stage = "imported"
    if audit is not None and audit.n:
        say(f"turn {turn.number}: audit of the auto-accepted answers: {audit.describe()}")
    say(
        f"turn {turn.number}: imported {len(entries)} labels ({human} from people, "
        f"{len(entries) - human} accepted from the model); {len(train)} to training (dataset version "
        f"{version}), {len(held)} of the people's held out as the new slice"
        + (
            f"; {len(withheld)} accepted from the model in the slice's groups left out of both"
            if withheld
            else ""
        )
    )
    for text in turn.conflicts:
        say(f"turn {turn.number}: different labels for one image settled: {text}")


def _retrain(config: FlywheelConfig, registry: Registry, turn: Turn, say: Callable[[str], None]) -> None:
    import shutil

    from novelty.flywheel.retrain import parse_window, retrain, save_retrained  # lazy: pulls in torch

    out = turn.dir / "challenger"
    with _Timer(turn, "retrain"):
        record = _finished_retrain(out)
        if record is None:
            if out.exists():
                shutil.rmtree(out)  # a retrain that was stopped halfway: start it again
            det, record = retrain(
                _champion(registry, turn),
                config.dataset,
                version=turn.dataset_version,
                window_days=None if config.window is None else parse_window(config.window),
                new_only=config.new_only,
            )
            record = save_retrained(det, record, out)
        else:
            say(f"turn {turn.number}: the challenger was already trained ({out}); not training it again")
        # registering the same artifact again gives the version it already has: a re-run after a crash
        # between register and the turn's save registers nothing new
        version = registry.register(
            out / "detector", out / "record.json", f"turn {turn.number}", alias="challenger"
        )
    turn.challenger = version
    turn.stage = "retrained"
    n = record.dataset.n if record.dataset is not None else "?"
    say(f"turn {turn.number}: retrained on {n} images → registered as version {version}")


def _finished_retrain(out: Path) -> Any:
    """The training record of a challenger saved completely in ``out`` (detector verified, record naming its
    artifact id), or ``None``."""
    from novelty.flywheel.record import TrainingRecord  # lazy: pulls in torch

    if not (out / "record.json").is_file():
        return None
    try:
        art = read_artifact(out / "detector")
        record = TrainingRecord.load(out / "record.json")
    except (ArtifactError, NoveltyError, OSError, ValueError):
        return None
    return record if record.artifact_id == art.artifact_id else None


def _compare(config: FlywheelConfig, registry: Registry, turn: Turn, say: Callable[[str], None]) -> None:
    with _Timer(turn, "compare"):
        new_slice = config.new_slice if (config.new_slice / "dataset.json").is_file() else None
        c = compare(
            registry.version_dir(str(turn.champion)),
            registry.version_dir(str(turn.challenger)),
            config.test,
            new_slice=new_slice,
            nominal=config.nominal,
            n_boot=config.n_boot,
            seed=config.seed,
            rule=GateRule(min_gain=config.min_gain, margin=config.margin),
        )
        registry.record_comparison(c.save(turn.dir / "comparison.json"))  # promote accepts only recorded ones
        c.write_report(turn.dir / "comparison.html")
    turn.passed = bool(c.passed)
    # every check with its numbers; a failed one names the compare option that sets its threshold
    turn.reasons = [ch.failure() if ch.passed is False else ch.line() for ch in c.checks]
    turn.stage = "compared"
    say(
        f"turn {turn.number}: the gate {'passes' if c.passed else 'does not pass'} ({turn.dir / 'comparison.html'})"
    )


def _decide(config: FlywheelConfig, registry: Registry, turn: Turn, say: Callable[[str], None]) -> None:
    if turn.passed:
        registry.promote(
            str(turn.challenger), comparison=turn.dir / "comparison.json", note=f"turn {turn.number}"
        )
        turn.stage = "promoted"
        say(f"turn {turn.number}: version {turn.challenger} promoted to champion")
    else:
        turn.stage = "rejected"
        failed = [r for r in turn.reasons if r.startswith("FAIL")]
        say(
            f"turn {turn.number}: version {turn.challenger} not promoted; the champion stays {turn.champion}"
            + "".join(f"\n  {r}" for r in failed)
        )
