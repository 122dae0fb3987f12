"""The state of a flywheel turn (``WORKDIR/NNNN/turn.json``): its stages, :class:`Turn` (saved and loaded),
the log of finished turns (``WORKDIR/turns.jsonl``), and what an operator does with a turn besides running it:
retry a failed stage, skip one where that is safe, abort it, and read what to do next (:func:`next_step`).
The stages themselves and :func:`~novelty.flywheel.turn.run_turn` are in :mod:`novelty.flywheel.turn`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novelty.clock import utc_now_iso
from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import JsonlLineError, append_jsonl, atomic_write_text, read_jsonl
from novelty.flywheel.config import FlywheelConfig

log = logging.getLogger("novelty.flywheel")

__all__ = [
    "ACTIONS",
    "STAGES",
    "Turn",
    "TurnActionError",
    "abort_turn",
    "next_step",
    "turn_history",
]

STAGES = (
    "started",
    "selected",
    "exported",
    "imported",
    "retrained",
    "compared",
    "promoted",
    "rejected",
    "aborted",
)
FINAL = ("promoted", "rejected", "aborted")
WAITING = "waiting-for-labels"
#: what a turn does next from each unfinished state, by the name an operator uses (``--skip-stage``, the
#: ``error`` of ``turn.json``)
ACTIONS: dict[str, str] = {
    "started": "select",
    "selected": "export",
    "exported": "import",
    WAITING: "import",
    "imported": "retrain",
    "retrained": "compare",
    "compared": "promote",
}
#: why a stage cannot be skipped (``--skip-stage``); the others: :func:`_skip`
NOT_SKIPPABLE: dict[str, str] = {
    "select": "a turn without a selection has nothing to label; end it with --abort",
    "export": "people cannot label what was not exported; end the turn with --abort",
    "retrain": "without a challenger there is nothing to compare or promote; end the turn with --abort",
    "compare": "a challenger is promoted only on a recorded comparison; --skip-stage promote keeps the "
    "champion (`novelty promote --force --reason` overrides the gate, recorded)",
}
TURN_FILE = "turn.json"
LOG_FILE = "turns.jsonl"
STAGING = "labels"  # the turn's own dataset of the labels it imported (WORKDIR/NNNN/labels/)
STAGING_TMP = "labels.staging"  # where it is built, renamed to STAGING when complete


class TurnActionError(InvalidInputError):
    """A retry, abort or skip that does not apply to the turn as it stands (the message says why)."""


def _now() -> str:
    return utc_now_iso()


@dataclass
class Turn:
    """The state of one turn (``WORKDIR/NNNN/turn.json``)."""

    number: int
    dir: Path
    stage: str = "started"
    champion: str | None = None  # registry version the turn started from
    challenger: str | None = None
    started: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    selected: int = 0
    already_labelled: int = 0  # candidates left out because a dataset of the flywheel labels them already
    exported: int = 0  # images sent to people
    auto_accepted: int = 0
    labels_bought: int = 0  # human labels imported
    trained_on: int = 0
    held_out: int = 0  # people's labels held out as the new slice (automatic ones never are)
    withheld: int = 0  # automatic labels of a held-out group: neither trained on nor in the slice
    audit: dict[str, Any] | None = (
        None  # auto-accepted answers checked by people (see labelling.audit_result)
    )
    conflicts: list[str] = field(default_factory=list)  # different labels for one image, each as settled
    dataset_version: int | None = None
    passed: bool | None = None
    reasons: list[str] = field(default_factory=list)
    compute_s: dict[str, float] = field(default_factory=dict)
    waiting_for: str | None = None
    message: str = ""
    error: dict[str, Any] | None = None  # the last failure: {"stage", "message", "at"}; None once it passed
    skipped: list[str] = field(default_factory=list)  # stages skipped (--skip-stage)
    aborted_at: str | None = None  # the stage an aborted turn stood at

    @property
    def done(self) -> bool:
        return self.stage in FINAL

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "dir"}
        return d

    def save(self) -> None:
        self.updated = _now()
        atomic_write_text(self.dir / TURN_FILE, json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Turn:
        try:
            data = json.loads((path / TURN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise NoveltyError(f"{path / TURN_FILE}: cannot be read ({e})") from None
        if not isinstance(data, dict) or data.get("stage") not in (*STAGES, WAITING):
            raise NoveltyError(f"{path / TURN_FILE}: not a flywheel turn file")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "dir"}
        return cls(dir=path, **known)

    def cost(self, config: FlywheelConfig) -> dict[str, Any]:
        compute = float(sum(self.compute_s.values()))
        labels = self.labels_bought * config.price_label
        machine = compute / 3600.0 * config.price_compute_hour
        return {
            "labels_bought": self.labels_bought,
            "auto_accepted": self.auto_accepted,
            "compute_s": round(compute, 3),
            "labels_cost": round(labels, 4),
            "compute_cost": round(machine, 4),
            "total_cost": round(labels + machine, 4),
            "currency": config.currency,
        }


def _turn_dirs(workdir: Path) -> list[Path]:
    if not workdir.is_dir():
        return []
    return sorted(
        p for p in workdir.iterdir() if p.is_dir() and p.name.isdigit() and (p / TURN_FILE).is_file()
    )


def turn_history(config: FlywheelConfig) -> list[Turn]:
    """Every turn so far, oldest first."""
    return [Turn.load(p) for p in _turn_dirs(config.workdir)]


class _Timer:
    """Adds the seconds of a stage to the turn's compute time (also when the stage fails)."""

    def __init__(self, turn: Turn, stage: str):
        self.turn, self.stage = turn, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        dt = time.perf_counter() - self.t0
        self.turn.compute_s[self.stage] = round(self.turn.compute_s.get(self.stage, 0.0) + dt, 3)


def _retry(turn: Turn, say: Callable[[str], None]) -> None:
    """Clear the failure of ``turn`` and what its stage left half-done (a partial export, the import's
    staging), so that the next step runs the stage again from its start."""
    import shutil

    if turn.error is None:
        raise TurnActionError(
            f"--retry: nothing failed in turn {turn.number} (it is {turn.stage}, next: "
            f"{ACTIONS[turn.stage]}); run without --retry to go on"
        )
    stage = turn.error.get("stage")
    for name in {"export": ("export",), "import": (STAGING, STAGING_TMP)}.get(str(stage), ()):
        if (turn.dir / name).is_dir():
            shutil.rmtree(turn.dir / name)
    say(
        f"turn {turn.number}: retrying {stage} (it failed at {turn.error.get('at')}: {turn.error.get('message')})"
    )
    turn.error = None


def _skip(turn: Turn, stage: str, say: Callable[[str], None]) -> None:
    """Go on without ``stage`` where that is safe (see :func:`run_turn`), or :class:`TurnActionError` naming why
    not."""
    nxt = ACTIONS[turn.stage]
    if stage not in ACTIONS.values():
        raise TurnActionError(
            f"--skip-stage {stage}: no such stage; the stages are {', '.join(dict.fromkeys(ACTIONS.values()))}"
        )
    if stage != nxt:
        raise TurnActionError(
            f"--skip-stage {stage}: turn {turn.number} is {turn.stage}; its next stage is {nxt}"
        )
    if stage in NOT_SKIPPABLE:
        raise TurnActionError(f"--skip-stage {stage} refused: {NOT_SKIPPABLE[stage]}")
    if stage == "import" and turn.auto_accepted == 0:
        raise TurnActionError(
            "--skip-stage import refused: without the people's labels this turn has none at all (nothing was "
            "accepted from the model), and a retrain on the same data learns nothing; end it with --abort"
        )
    turn.skipped.append(stage)
    turn.error = None
    if stage == "promote":
        turn.stage = "rejected"
        turn.reasons = [*turn.reasons, "promotion skipped (--skip-stage promote)"]
        say(f"turn {turn.number}: promotion skipped; the champion stays {turn.champion}")
    else:
        say(
            f"turn {turn.number}: going on without the people's labels: only the {turn.auto_accepted} accepted from the model are imported"
        )


def abort_turn(config: FlywheelConfig, *, reason: str = "", say: Callable[[str], None] | None = None) -> Turn:
    """End the current turn where it stands (stage ``"aborted"``, recorded in ``turn.json`` and
    ``turns.jsonl``); the next run starts a new turn. Labels already imported stay in the datasets and a
    registered challenger stays registered. :class:`TurnActionError` when no turn is unfinished."""
    say = say or (lambda msg: log.info("%s", msg))
    dirs = _turn_dirs(config.workdir)
    turn = Turn.load(dirs[-1]) if dirs else None
    if turn is None or turn.done:
        raise TurnActionError(
            "--abort: no unfinished turn" + ("" if turn is None else f" (turn {turn.number} is {turn.stage})")
        )
    turn.aborted_at = turn.stage
    turn.stage = "aborted"
    turn.waiting_for = None
    turn.message = reason or f"aborted at {turn.aborted_at}"
    turn.save()
    _log_turn(config, turn)
    kept = f"; the labels it imported stay in {config.dataset}" if turn.dataset_version is not None else ""
    say(f"turn {turn.number}: aborted at {turn.aborted_at}{kept}; the next run starts turn {turn.number + 1}")
    return turn


def next_step(config: FlywheelConfig, turn: Turn | None) -> str:
    """What to do next with the flywheel whose last turn is ``turn``: one line, with the command to run."""
    run = f"novelty flywheel run --config {config.path}"
    if turn is None:
        return f"run `{run}` to start turn 1"
    if turn.done:
        return f"turn {turn.number} is {turn.stage}; `{run}` starts turn {turn.number + 1}"
    if turn.error is not None:
        stage = turn.error.get("stage")
        fix = {
            "import": "fix the labels file (or set [label] on_conflict)",
            "select": "check the sources and the champion",
        }.get(str(stage), "fix the cause")
        skip = f", or `{run} --skip-stage {stage}`" if stage not in NOT_SKIPPABLE else ""
        return (
            f"{stage} failed: {turn.error.get('message')}\n"
            f"  next: {fix}, then `{run} --retry`{skip}; or end the turn with `{run} --abort`"
        )
    if turn.stage == WAITING:
        skip = (
            f", or go on with the labels accepted from the model: `{run} --skip-stage import`"
            if turn.auto_accepted
            else ""
        )
        return f"{turn.message or 'waiting for labels'}\n  next: `{run}` once they are there{skip}; or `{run} --abort`"
    return f"turn {turn.number} is {turn.stage}; `{run}` goes on with {ACTIONS[turn.stage]}"


def _log_turn(config: FlywheelConfig, turn: Turn) -> None:
    path = config.workdir / LOG_FILE
    try:
        seen = {doc.get("turn") for _, doc in read_jsonl(path, log=log)}
    except JsonlLineError as e:  # a line edited by hand: the turn is logged again rather than lost
        log.warning("%s; logging turn %d anyway", e, turn.number)
        seen = set()
    if turn.number in seen:
        return
    line: dict[str, Any] = {
        "turn": turn.number,
        "finished": _now(),
        "stage": turn.stage,
        "champion": turn.champion,
        "challenger": turn.challenger,
        "selected": turn.selected,
        "already_labelled": turn.already_labelled,
        "audit": turn.audit,
        "compute_by_stage_s": turn.compute_s,
        **turn.cost(config),
    }
    append_jsonl(path, line, log=log, allow_nan=True)
