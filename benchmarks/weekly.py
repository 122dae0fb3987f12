"""The flywheel as a weekly routine, unattended, as cron would run it: two turns a week for four weeks.

    .venv/bin/python -m benchmarks.weekly            # → benchmarks/results/weekly.json and weekly.md
    .venv/bin/python -m benchmarks.weekly --small    # reduced size (tests/flywheel/test_weekly_routine.py)

The windshield scenario (:mod:`novelty.datasets.windshield`): street video frames cut into 25-frame blocks dealt
to train / calibration / test parts, half the frames of every block wet (water drops), the rest dry.

- **Training set** (``data/train``): the *train* part, clean frames dry and wet (groups = blocks, condition
  ``clean``); the first champion is ``novelty fit --dataset`` on it (a third of its blocks held out to
  calibrate), registered and promoted.
- **Frozen test set** (``data/test``, the gate's): half of the *calibration* part's blocks, every frame clean
  and under tunnel, ice, fog and snow (severity 3), each frame dry or wet by its own label.
- **Evaluation set** (held out, never labelled or selected): the other half of the calibration part's blocks,
  the same five conditions; after each turn the running service scores it, and the accuracy per condition is
  the served champion's answers against the truth.
- **Production inbox**: each turn ("Monday", "Thursday") a new folder of image files made from the *test*
  part's frames: clean frames and the conditions that have arrived by then (week 1 tunnel, week 2 + ice,
  week 3 + fog, week 4 + snow; the newest condition twice as often), at severities 2–4, plus a few images sent
  again from earlier inboxes (identical bytes: a label for them must not be bought again).

The routine, per turn: the inbox is scored through the **running service** (``novelty serve REGISTRY/champion``
on a free port with a bearer token, :class:`novelty.Client`); every image it does not trust is flagged (and one
trusted image in ten, as a spot check), so flags accumulate in the service's flag store, which the flywheel
config names as ``[select] flags``. Then ``novelty flywheel run --config flywheel.toml`` as a subprocess, as cron
would run it; its ``[label_studio]`` section points at a real Label Studio server (``.venv-ls``, started
here); while a run exits 4 (waiting for labels) an **oracle** labels the project's unlabelled tasks through
Label Studio's API (it knows each image's true dry / wet label from a side table keyed by sha256), and
``flywheel run`` runs again until the turn ends, promoted or rejected. After a promotion the service must
serve the new champion (it follows ``REGISTRY/champion`` by itself: ``--watch-interval``).

Measured per turn: labels bought (human) and auto-accepted (with how many of those were right), compute
seconds per stage (``turn.json``), cost (labels × ``PRICE_LABEL`` + compute hours × ``PRICE_COMPUTE_HOUR``),
the decision and the gate's reasons, accuracy per condition on the evaluation set. Checked (the goals: all
zero, all true):

- **stalled**: a ``flywheel run`` that exits with neither 0 nor 4, or two runs in a row that leave the turn
  where it was although the oracle had nothing left to label;
- **bought twice**: an image sent to people (a task of the turn's export) whose sha256 the training set, the
  test set, the new slice or an earlier export already had when the turn began; an image the oracle is asked to
  label again; a sha256 twice in the Label Studio project;
- **auto-labels in the test set or the new slice**: entries with a ``model:`` labeller (``auto``) there;
- **status lines**: after every run, each line of ``novelty flywheel status`` (stage, champion, challenger,
  selected, human, auto, compute, cost) and the run's own summary and waiting message against what the files
  show (``selection.json``, ``export/``, the turn's labels, the registry, ``comparison.json``) and what the oracle
  did in Label Studio.

Prices (documented assumptions, the flywheel config's ``[cost]``): ``PRICE_LABEL`` = 0.08 USD per label bought
from a person (a binary image label through a labelling vendor), ``PRICE_COMPUTE_HOUR`` = 0.40 USD per hour of
this machine. The goals are measured, never assumed: the exit status is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import cpu_flags, cpu_model
from novelty.fileio import sha256_bytes, sha256_file

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# the throwaway servers of the tests: `novelty serve` (serve_support) and Label Studio (label_studio_server)
sys.path.insert(0, str(ROOT / "tests"))

CLASSES = ("dry", "wet")
CONDITIONS = ("tunnel", "ice", "fog", "snow")  # in the order they arrive, one a week
ALL_CONDITIONS = ("clean", *CONDITIONS)
SEVERITIES = (2, 3, 4)  # production images; the test and evaluation sets use the scenario's 3
PRICE_LABEL = 0.08  # USD per label bought from a person
PRICE_COMPUTE_HOUR = 0.40  # USD per hour of compute
SPOT_CHECK = 10  # one trusted image in ten is flagged too
PROJECT = "windshield"
EXIT_WAITING = 4
START = datetime(2027, 1, 4, 8, 0, tzinfo=timezone.utc)  # a Monday: the first turn's inbox
_T0 = time.perf_counter()


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.0f} s] {msg}", flush=True)


@dataclass(frozen=True)
class Size:
    """How big a routine is. ``train_stride`` keeps every such frame of the train part, ``test_stride`` of the
    test and evaluation blocks; ``per_condition`` inbox images per condition and turn; ``budget`` images selected
    per turn."""

    weeks: int = 4
    turns_per_week: int = 2
    train_stride: int = 1
    test_stride: int = 2
    per_condition: int = 30
    resent: float = 0.05  # share of an inbox sent again from earlier inboxes
    budget: int = 40
    n_boot: int = 1000
    # of the training blocks, held out to calibrate (as benchmarks/flywheel.py does)
    calibration_fraction: float = 0.33
    max_runs: int = 6  # `flywheel run` calls per turn before the routine gives up on it

    @property
    def turns(self) -> int:
        return self.weeks * self.turns_per_week


FULL = Size()
SMALL = Size(weeks=2, turns_per_week=1, train_stride=4, test_stride=8, per_condition=6, budget=10, n_boot=200)


# --- the images -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Truth:
    label: str
    condition: str
    frame: int
    block: int
    severity: int
    part: str


class World:
    """The scenario's frames and the truth of every image written (by sha256)."""

    def __init__(self, root: Path, size: Size) -> None:
        from novelty.datasets.windshield import street_frames, windshield_scenario

        self.root, self.size = root, size
        self.sc = windshield_scenario()
        self.frames = street_frames(self.sc.size)
        self.truth: dict[str, Truth] = {}
        self.inboxes: list[list[Path]] = []

    def image(self, frame: int, condition: str, label: int, severity: int) -> np.ndarray:
        from novelty.datasets.windshield import apply_condition

        if condition == "clean":
            name, severity = ("dry" if label == 0 else "wet"), 3
        else:
            name = condition if label == 0 else f"{condition}+wet"
        raw = self.frames[frame]
        return raw.copy() if name == "dry" else apply_condition(raw, name, severity, 0, frame_ids=[frame])

    def write(
        self, folder: Path, name: str, arr: np.ndarray, truth: Truth, *, data: bytes | None = None
    ) -> Path:
        from PIL import Image

        if data is None:
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=90)
            data = buf.getvalue()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_bytes(data)
        sha = sha256_bytes(data)
        known = self.truth.get(sha)
        if known is not None and known.label != truth.label:
            raise RuntimeError(f"{path}: the same image bytes with two labels ({known} and {truth})")
        self.truth.setdefault(sha, truth)
        return path

    def _rows(
        self, part: str, blocks: Sequence[int] | None, conditions: Sequence[str], folder: str
    ) -> list[dict[str, str]]:
        cs = getattr(self.sc, part)
        keep = np.ones(len(cs), bool) if blocks is None else np.isin(cs.groups, list(blocks))
        stride = self.size.train_stride if part == "train" else self.size.test_stride
        idx = np.flatnonzero(keep)[::stride]
        rows = []
        for i in idx:
            f, y, g = int(cs.frames[i]), int(cs.labels[i]), int(cs.groups[i])
            for cond in conditions:
                t = Truth(CLASSES[y], cond, f, g, 0 if cond == "clean" else 3, part)
                p = self.write(
                    self.root / "images" / folder, f"{cond}-f{f:04d}.jpg", self.image(f, cond, y, 3), t
                )
                rows.append({"path": str(p), "label": CLASSES[y], "group": f"b{g}", "condition": cond})
        return rows

    def datasets(self) -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
        """Rows (path, label, group, condition) of the training set, the frozen test set and the evaluation set."""
        train = self._rows("train", None, ("clean",), "train")
        blocks = sorted({int(g) for g in self.sc.calibration.groups})
        test = self._rows("calibration", blocks[0::2], ALL_CONDITIONS, "test")
        evaluation = self._rows("calibration", blocks[1::2], ALL_CONDITIONS, "evaluation")
        return train, test, evaluation

    def inbox(self, week: int, turn_in_week: int) -> list[Path]:
        """A new inbox folder: clean frames and the conditions arrived by ``week`` (1-based), plus images sent
        again from earlier inboxes."""
        rng = np.random.default_rng([7, week, turn_in_week])
        arrived = CONDITIONS[: min(week, len(CONDITIONS))]
        test = self.sc.test
        folder = self.root / "inbox" / f"week-{week}-turn-{turn_in_week}"
        out: list[Path] = []
        for cond in ("clean", *arrived):
            n = self.size.per_condition * (2 if arrived and cond == arrived[-1] else 1)
            for i in rng.choice(len(test), size=min(n, len(test)), replace=False):
                f, y, g = int(test.frames[i]), int(test.labels[i]), int(test.groups[i])
                sev = 0 if cond == "clean" else int(rng.choice(SEVERITIES))
                t = Truth(CLASSES[y], cond, f, g, sev, "test")
                name = f"{cond}-s{sev}-f{f:04d}.jpg"
                if (folder / name).exists():
                    continue
                out.append(self.write(folder, name, self.image(f, cond, y, max(sev, 1)), t))
        earlier = [p for box in self.inboxes for p in box]
        n_again = min(len(earlier), round(self.size.resent * len(out)))
        for k in rng.choice(len(earlier), size=n_again, replace=False) if n_again else []:
            src = earlier[int(k)]
            data = src.read_bytes()
            truth = self.truth[sha256_bytes(data)]
            out.append(self.write(folder, f"again-{int(k)}-{src.name}", np.empty(0), truth, data=data))
        self.inboxes.append(out)
        return out


def _csv(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


# --- commands -----------------------------------------------------------------------------------------------------
def novelty_cli(
    args: Sequence[Any], cwd: Path, log: Path, *, env: dict[str, str] | None = None, timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    """``novelty ARGS`` as a subprocess (as cron or a person would type it); output appended to ``log``."""
    cmd = [sys.executable, "-m", "novelty.cli", *map(str, args)]
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH", "")]))
    res = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ novelty {' '.join(map(str, args))}\n{res.stdout}{res.stderr}[exit {res.returncode}]\n\n")
    return res


def novelty_here(args: Sequence[Any], log: Path) -> tuple[int, str]:
    """``novelty ARGS`` in this process (exit status, stdout); the output appended to ``log``."""
    from novelty.cli import main as cli_main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli_main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = int(e.code or 0)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"$ novelty {' '.join(map(str, args))}\n{out.getvalue()}{err.getvalue()}[exit {code}]\n\n")
    if code not in (0, EXIT_WAITING) and not out.getvalue():
        out.write(err.getvalue())
    return code, out.getvalue()


def _must(res: subprocess.CompletedProcess[str], what: str) -> None:
    if res.returncode != 0:
        raise RuntimeError(f"{what} exited with {res.returncode}:\n{res.stdout[-2000:]}{res.stderr[-4000:]}")


class LabelStudioAPI:
    """The few calls of Label Studio's REST API the oracle and the checks need (a legacy token)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"Label Studio {method} {path}: HTTP {e.code}: {e.read()[:1000]!r}") from None
        return json.loads(payload) if payload else None

    def project_id(self, title: str) -> int | None:
        res = self.call("GET", "/api/projects?" + urllib.parse.urlencode({"title": title, "page_size": 100}))
        found = [
            p for p in (res.get("results", res) if isinstance(res, dict) else res) if p["title"] == title
        ]
        if len(found) > 1:
            raise RuntimeError(f"{len(found)} Label Studio projects named {title!r}")
        return int(found[0]["id"]) if found else None

    def tasks(self, pid: int) -> list[dict[str, Any]]:
        """Every task of the project with its annotations (the project's JSON export)."""
        out = self.call("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true")
        return list(out)

    def annotate(self, task_id: int, label: str) -> None:
        result = [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
        ]
        self.call("POST", f"/api/tasks/{task_id}/annotations", {"result": result, "lead_time": 3.0})


def _done(task: dict[str, Any]) -> bool:
    return any(a.get("result") or a.get("was_cancelled") for a in task.get("annotations") or [])


@dataclass
class Oracle:
    """A person who knows every image's true label (the side table ``truth``, by sha256) and labels every
    unlabelled task of the project through Label Studio's API."""

    api: LabelStudioAPI
    truth: dict[str, Truth]
    labelled: dict[str, int] = field(default_factory=dict)  # sha256 → how often the oracle was asked
    unknown: int = 0

    def label_all(self, project: str) -> int:
        pid = self.api.project_id(project)
        if pid is None:
            return 0
        n = 0
        for t in self.api.tasks(pid):
            if _done(t):
                continue
            sha = str((t.get("data") or {}).get("sha256") or "")
            known = self.truth.get(sha)
            if known is None:  # an image the routine never wrote: left for a person to look at
                self.unknown += 1
                continue
            self.api.annotate(int(t["id"]), known.label)
            self.labelled[sha] = self.labelled.get(sha, 0) + 1
            n += 1
        return n


# --- the checks -----------------------------------------------------------------------------------------------------
def _entries(path: Path) -> list[Any]:
    from novelty.flywheel.dataset import Dataset

    return list(Dataset.open(path).entries()) if (path / "dataset.json").is_file() else []


def _tasks_file(turn_dir: Path) -> list[dict[str, Any]]:
    p = turn_dir / "export" / "tasks.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else []


def _auto_rows(turn_dir: Path) -> list[dict[str, str]]:
    p = turn_dir / "export" / "auto_labels.csv"
    if not p.is_file():
        return []
    with open(p, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


_STATUS = re.compile(
    r"^\s*(?P<turn>\d+)\s+(?P<stage>\S+)\s+(?P<champ>\S+)\s+(?P<chall>\S+)\s+(?P<sel>\d+)\s+(?P<human>\d+)\s+"
    r"(?P<auto>\d+)\s+(?P<compute>[\d.]+)s\s+(?P<cost>[\d.]+)\s+(?P<currency>\S+)\s*$"
)
_SUMMARY = re.compile(
    r"turn (?P<turn>\d+): (?P<stage>[\w-]+); labels bought (?P<human>\d+), accepted from the model (?P<auto>\d+), "
    r"compute (?P<compute>[\d.]+) s, cost (?P<cost>[\d.]+)"
)
_WAITING = re.compile(r"(?P<done>\d+) of (?P<total>\d+) tasks done")
_NEXT = re.compile(r"^turn (?P<turn>\d+): (?P<rest>.*)$")
_ORDER = ("started", "selected", "exported", "waiting-for-labels", "imported", "retrained", "compared")


def _reached(stage: str, at_least: str) -> bool:
    """Whether a turn at ``stage`` has passed ``at_least`` (final stages have passed everything)."""
    if stage in ("promoted", "rejected"):
        return True
    if stage not in _ORDER:
        return False
    if at_least == "exported" and stage == "waiting-for-labels":
        return True
    return _ORDER.index(stage) >= _ORDER.index(at_least)


class Checker:
    """What the files say about each turn, held against what ``flywheel status`` and ``flywheel run`` say."""

    def __init__(self, work: Path, oracle: Oracle, champions_at_start: dict[int, str]) -> None:
        self.work, self.oracle, self.champions_at_start = work, oracle, champions_at_start
        self.asked_in_turn: dict[int, int] = {}  # turn → labels the oracle gave for its tasks

    def files(self, number: int) -> dict[str, Any]:
        """The turn's numbers as its files show them."""
        from novelty.flywheel.registry import Registry

        d = self.work / "turns" / f"{number:04d}"
        turn = json.loads((d / "turn.json").read_text(encoding="utf-8"))
        stage = turn["stage"]
        sel_path = d / "selection.json"
        selected = len(json.loads(sel_path.read_text())["items"]) if sel_path.is_file() else 0
        auto = len(_auto_rows(d)) if _reached(stage, "exported") else 0
        human = 0
        if _reached(stage, "imported"):
            human = sum(1 for e in _entries(d / "labels") if not e.auto)
        reg = Registry.open(self.work / "registry")
        chall = [v.version for v in reg.list_versions() if v.note == f"turn {number}"]
        compute = float(sum(turn.get("compute_s", {}).values()))
        return {
            "stage": stage,
            "champ": self.champions_at_start.get(number, turn.get("champion")),
            "chall": chall[-1] if chall and _reached(stage, "retrained") else "-",
            "sel": selected,
            "human": human,
            "auto": auto,
            "compute": compute,
            "cost": human * PRICE_LABEL + compute / 3600 * PRICE_COMPUTE_HOUR,
            "turn": turn,
            "dir": d,
        }

    def stage_consistent(self, number: int, f: dict[str, Any]) -> list[str]:
        """The stage against the files a stage leaves behind."""
        d, stage, out = f["dir"], f["stage"], []
        need = {
            "selected": [d / "selection.json"],
            "exported": [d / "export" / "export.json"],
            "imported": [d / "labels" / "dataset.json"],
            "retrained": [d / "challenger" / "record.json"],
            "compared": [d / "comparison.json"],
        }
        for at, paths in need.items():
            if _reached(stage, at) and not (
                at == "imported" and f["turn"].get("exported", 0) == 0 and not f["auto"]
            ):
                out += [
                    f"turn {number} is {stage} but {p.relative_to(self.work)} is missing"
                    for p in paths
                    if not p.exists()
                ]
        labels = d / "labels.json"
        if stage == "waiting-for-labels" and labels.exists():
            out.append(f"turn {number} waits for labels but {labels.relative_to(self.work)} exists")
        if stage in ("promoted", "rejected"):
            cmp_path = d / "comparison.json"
            if cmp_path.is_file():
                passed = bool(json.loads(cmp_path.read_text())["passed"])
                if passed != (stage == "promoted"):
                    out.append(f"turn {number} is {stage} but comparison.json says passed={passed}")
            from novelty.flywheel.registry import Registry

            reg = Registry.open(self.work / "registry")
            promoted = any(e.event == "promote" and e.version == f["chall"] for e in reg.history())
            if promoted != (stage == "promoted"):
                out.append(f"turn {number} is {stage} but the registry history has promoted={promoted}")
        return out

    def status_lines(self, text: str, api: LabelStudioAPI) -> tuple[int, list[str]]:
        """Each line of ``flywheel status`` against the files; (lines checked, what was false). The table's lines
        and the line on the last turn (its stage, or how many of its tasks are done)."""
        n, false = 0, []
        for line in text.splitlines():
            nxt = _NEXT.match(line)
            if nxt:
                n += 1
                number = int(nxt["turn"])
                f = self.files(number)
                rest = nxt["rest"]
                is_stage = re.match(rf"turn {number} is (?P<stage>[\w-]+);", rest)
                if is_stage and is_stage["stage"] != f["stage"]:
                    false.append(f"status: {line.strip()!r}, but turn.json says {f['stage']}")
                if _WAITING.search(rest):
                    false += [
                        f"status: {line.strip()!r}: {w}" for w in self.waiting_message(number, api, rest)
                    ]
                continue
            m = _STATUS.match(line)
            if not m:
                continue
            n += 1
            number = int(m["turn"])
            f = self.files(number)
            said = m.groupdict()
            for key in ("stage", "champ", "chall"):
                if said[key] != str(f[key]):
                    false.append(f"status turn {number}: {key} {said[key]!r}, the files say {f[key]!r}")
            for key in ("sel", "human", "auto"):
                if int(said[key]) != f[key]:
                    false.append(f"status turn {number}: {key} {said[key]}, the files say {f[key]}")
            if abs(float(said["compute"]) - f["compute"]) > 0.11:
                false.append(
                    f"status turn {number}: compute {said['compute']} s, turn.json {f['compute']:.1f} s"
                )
            if abs(float(said["cost"]) - f["cost"]) > 0.006:
                false.append(
                    f"status turn {number}: cost {said['cost']}, labels × {PRICE_LABEL} + compute × "
                    f"{PRICE_COMPUTE_HOUR}/h = {f['cost']:.3f}"
                )
            asked = self.asked_in_turn.get(number)
            if _reached(f["stage"], "imported") and asked is not None and int(said["human"]) != asked:
                false.append(f"status turn {number}: human {said['human']}, the oracle labelled {asked}")
            false += self.stage_consistent(number, f)
        return n, false

    def summary_line(self, number: int, stdout: str) -> list[str]:
        """The last line of ``flywheel run`` against the files."""
        m = _SUMMARY.search(stdout)
        if not m:
            return [f"turn {number}: `flywheel run` printed no summary line: {stdout[-300:]!r}"]
        f = self.files(int(m["turn"]))
        out = []
        if m["stage"] != f["stage"]:
            out.append(f"run summary turn {m['turn']}: stage {m['stage']}, turn.json {f['stage']}")
        for key in ("human", "auto"):
            if int(m[key]) != f[key]:
                out.append(f"run summary turn {m['turn']}: {key} {m[key]}, the files say {f[key]}")
        return out

    def waiting_message(self, number: int, api: LabelStudioAPI, msg: str | None = None) -> list[str]:
        """``N of M tasks done`` of a waiting turn (its message, or ``msg``) against the project in Label Studio."""
        f = self.files(number)
        msg = msg if msg is not None else (f["turn"].get("message") or "")
        m = _WAITING.search(msg)
        if f["stage"] != "waiting-for-labels":
            return [f"turn {number} is {f['stage']}, not waiting"] if m else []
        if not m:
            return [f"turn {number} waits, its message names no count: {msg!r}"]
        shas = {str(t["data"].get("sha256")) for t in _tasks_file(f["dir"])}
        pid = api.project_id(PROJECT)
        tasks = [t for t in api.tasks(pid) if str(t["data"].get("sha256")) in shas] if pid else []
        done = sum(_done(t) for t in tasks)
        out = []
        if int(m["total"]) != len(shas):
            out.append(f"turn {number} waits for {m['total']} tasks, its export holds {len(shas)}")
        if int(m["done"]) != done:
            out.append(f"turn {number} says {m['done']} tasks done, Label Studio shows {done}")
        return out


# --- the routine ------------------------------------------------------------------------------------------------------
def _cpu() -> dict[str, Any]:
    return {"model": cpu_model(), "cores": os.cpu_count(), "flags": cpu_flags()}


def _git() -> dict[str, Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    status = subprocess.run(
        ["git", "status", "--porcelain", "--", "novelty"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {
        "commit": run("rev-parse", "--short", "HEAD"),
        "novelty_tree": run(
            "rev-parse", "--short", "HEAD:novelty"
        ),  # the package's code, whatever else changed
        "novelty_files_changed_since": changed,
    }


def _same_code(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two :func:`_git` records name the same package code (older records: the same commit)."""
    keys = ("novelty_tree", "novelty_files_changed_since") if "novelty_tree" in a else ("commit",)
    return all(a.get(k) == b.get(k) for k in keys)


def _config(work: Path, size: Size, ls_url: str) -> Path:
    text = f"""\
registry = "registry"
dataset = "data/train"
test = "data/test"
new_slice = "data/new"
workdir = "turns"

[select]
flags = "flags"
strategy = "diversity"
budget = {size.budget}
seed = 0

[label]
format = "label-studio"
labels = "turns/{{turn}}/labels.json"
auto_accept = true
holdout = 0.2

[label_studio]
url = "{ls_url}"
project = "{PROJECT}"
document_root = "."
api_key_file = "ls-key"

[gate]
n_boot = {size.n_boot}

[cost]
currency = "USD"
label = {PRICE_LABEL}
compute_hour = {PRICE_COMPUTE_HOUR}
"""
    path = work / "flywheel.toml"
    path.write_text(text, encoding="utf-8")
    return path


def evaluate(client: Any, rows: Sequence[dict[str, str]], truth: dict[str, Truth]) -> dict[str, Any]:
    """The served champion on the evaluation set: accuracy, share trusted and share flagged per condition."""
    verdicts = client.score_batch([r["path"] for r in rows])
    by: dict[str, list[tuple[bool, bool, bool]]] = {c: [] for c in ALL_CONDITIONS}
    versions = set()
    for r, v in zip(rows, verdicts, strict=True):
        if v.error:
            raise RuntimeError(f"the service could not score {r['path']}: {v.error}")
        versions.add(v.detector_version)
        by[r["condition"]].append((v.prediction == r["label"], bool(v.trusted), bool(v.is_novel)))
    acc = {c: round(float(np.mean([a for a, _, _ in xs])), 4) for c, xs in by.items() if xs}
    return {
        "accuracy": acc,
        "mean_accuracy": round(float(np.mean(list(acc.values()))), 4),
        "trusted": {c: round(float(np.mean([t for _, t, _ in xs])), 4) for c, xs in by.items() if xs},
        "flagged": {c: round(float(np.mean([n for _, _, n in xs])), 4) for c, xs in by.items() if xs},
        "detector_versions": sorted(versions),
        "n": len(rows),
    }


def _wait_served(client_url: str, version: str, timeout_s: float = 120.0) -> float | None:
    """Seconds until the service's /healthz names ``version`` (``None``: it did not within ``timeout_s``)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        with (
            contextlib.suppress(OSError, ValueError),
            urllib.request.urlopen(client_url + "/healthz", timeout=10) as r,
        ):
            if json.loads(r.read()).get("detector_version") == version:
                return round(time.monotonic() - t0, 2)
        time.sleep(0.2)
    return None


def flag_inbox(client: Any, paths: Sequence[Path], truth: dict[str, Truth], when: datetime) -> dict[str, Any]:
    """Score the inbox through the service; flag what it does not trust (and a spot check of what it trusts)."""
    verdicts = client.score_batch(list(paths))
    flagged: dict[str, int] = {}
    created = 0
    for k, (p, v) in enumerate(zip(paths, verdicts, strict=True)):
        if v.error:
            raise RuntimeError(f"the service could not score {p}: {v.error}")
        if v.trusted and k % SPOT_CHECK:
            continue
        t = truth[sha256_file(p)]
        cond = t.condition
        # what a car knows of its own footage: which stretch of the drive (the block) it came from
        rec = client.flag(
            p,
            prediction=v.prediction,
            source=f"car-{k % 5}",
            captured_at=when,
            metadata={"group": f"b{t.block}"},
        )
        created += rec.created
        flagged[cond] = flagged.get(cond, 0) + 1
    return {
        "inbox": len(paths),
        "flagged": sum(flagged.values()),
        "new_flags": created,
        "by_condition": flagged,
    }


def _new_slice_leak(work: Path, truth: dict[str, Truth]) -> dict[str, Any]:
    """The new slice (the gate's fresh images) against the training set: its conditions and groups as recorded,
    and how many of its images show a video frame that a training image shows too (the same frame under another
    condition or severity: a near-duplicate that the split by group keeps apart only when groups are known)."""
    new = _entries(work / "data" / "new")
    train_frames = {truth[e.sha256].frame for e in _entries(work / "data" / "train") if e.sha256 in truth}
    known = [e for e in new if e.sha256 in truth]
    return {
        "n": len(new),
        "conditions": sorted({str(e.condition) for e in new}),
        "with_group": sum(e.group is not None for e in new),
        "frame_also_in_training": sum(truth[e.sha256].frame in train_frames for e in known),
    }


def _labelled_shas(work: Path) -> set[str]:
    return {e.sha256 for name in ("train", "test", "new") for e in _entries(work / "data" / name)}


def _turn_numbers(work: Path) -> list[int]:
    d = work / "turns"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def run_routine(
    size: Size, work: Path, *, progress: Callable[[str], None] = say, keep_going: bool = True
) -> dict[str, Any]:
    """Set up the flywheel in ``work`` and play ``size.turns`` turns; the results as a JSON-able dict."""
    import label_studio_server as lss
    from serve_support import ServerProcess, new_token

    from novelty.flywheel.registry import Registry
    from novelty.serve.client import Client

    if not lss.installed():
        raise RuntimeError(f"Label Studio is not installed in {lss.LS_VENV} (make label-studio)")
    t_start = time.perf_counter()
    code_at_start = _git()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commands.log"
    world = World(work, size)
    train_rows, test_rows, eval_rows = world.datasets()
    progress(f"images: {len(train_rows)} training, {len(test_rows)} test, {len(eval_rows)} evaluation")
    _csv(work / "train.csv", train_rows)
    _csv(work / "test.csv", test_rows)
    w = work
    setup = [
        ("dataset", "create", w / "data/train", "--classes", ",".join(CLASSES)),
        ("dataset", "add-csv", w / "data/train", w / "train.csv"),
        ("dataset", "create", w / "data/test", "--classes", ",".join(CLASSES)),
        ("dataset", "add-csv", w / "data/test", w / "test.csv"),
        (
            "fit",
            "--dataset",
            w / "data/train",
            "--calibration-fraction",
            size.calibration_fraction,
            "--out",
            w / "runs/v1",
        ),
        ("register", w / "registry", w / "runs/v1", "--note", "clean frames"),
        ("promote", w / "registry", "1"),
    ]
    token = new_token()
    ls = lss.LabelStudioServer(work / "label-studio", work)
    api = LabelStudioAPI("", lss.TOKEN)
    (work / "ls-key").write_text(lss.TOKEN)
    oracle = Oracle(api, world.truth)
    turns: list[dict[str, Any]] = []
    stalled_total = 0
    with contextlib.ExitStack() as stack:
        # Label Studio starts (a minute or more) while the datasets and the first champion are made
        started: list[BaseException | None] = []

        def start_ls() -> None:
            try:
                ls.start()
                started.append(None)
            except BaseException as e:  # handed to the main thread
                started.append(e)

        t0 = time.perf_counter()
        starter = threading.Thread(target=start_ls, daemon=True)
        starter.start()
        stack.callback(ls.stop)
        for args in setup:
            code, out = novelty_here(args, log)
            if code != 0:
                raise RuntimeError(f"novelty {' '.join(map(str, args))} exited with {code}: {out[-2000:]}")
        setup_s = time.perf_counter() - t0
        progress(f"datasets, first champion fitted and promoted ({setup_s:.0f} s)")
        starter.join()
        if started[0] is not None:
            raise started[0]
        api.url = ls.url
        progress(f"Label Studio at {ls.url} ({time.perf_counter() - t0:.0f} s since the setup began)")
        srv = ServerProcess(
            work / "registry" / "champion",
            flag_store=str(work / "flags"),
            token=token,
            log_path=work / "service.log",
            extra_args=["--watch-interval", "0.5"],
        ).start()
        stack.callback(srv.stop)
        client = Client(srv.url, token)
        config = _config(work, size, ls.url)
        reg = Registry.open(work / "registry")
        baseline = evaluate(client, eval_rows, world.truth)
        progress(f"the first champion on the evaluation set: {baseline['accuracy']}")
        checker = Checker(work, oracle, {})
        can_retry = "--retry" in novelty_here(["flywheel", "run", "--help"], log)[1]
        exported_before: set[str] = set()
        status_checked = 0
        for k in range(size.turns):
            week, day = k // size.turns_per_week + 1, k % size.turns_per_week
            when = START + timedelta(days=7 * (week - 1) + 3 * day)
            inbox = world.inbox(week, day)
            flags = flag_inbox(client, inbox, world.truth, when)
            progress(
                f"week {week} turn {day + 1}: inbox {len(inbox)}, flagged {flags['flagged']} {flags['by_condition']}"
            )
            labelled_before = _labelled_shas(work)
            champion_before = reg.resolve("champion")
            champion_id_before = reg.get("champion").artifact_id
            numbers_before = _turn_numbers(work)
            number = (numbers_before[-1] + 1) if numbers_before else 1
            checker.champions_at_start[number] = champion_before
            runs: list[dict[str, Any]] = []
            stalls: list[str] = []
            false_lines: list[str] = []
            asked = 0
            last_sig: tuple[Any, ...] | None = None
            t_turn = time.perf_counter()
            finished = False
            retry = False
            for r in range(size.max_runs):
                t0 = time.perf_counter()
                argv = ["flywheel", "run", "--config", config, *(["--retry"] if retry else [])]
                res = novelty_cli(argv, work, log)
                dt = round(time.perf_counter() - t0, 1)
                numbers = _turn_numbers(work)
                if numbers and numbers[-1] != number and r == 0:
                    number = numbers[-1]  # a turn left unfinished before: this run went on with it
                turn_json = (
                    json.loads((work / "turns" / f"{number:04d}" / "turn.json").read_text())
                    if numbers
                    else {}
                )
                stage = turn_json.get("stage", "-")
                runs.append({"exit": res.returncode, "stage": stage, "seconds": dt, "retry": retry})
                # after an error the next run retries the failed stage, when the command offers that (the way
                # `flywheel status` says to go on)
                retry = res.returncode not in (0, EXIT_WAITING) and can_retry
                if res.returncode not in (0, EXIT_WAITING):
                    stalls.append(
                        f"run {r + 1} exited {res.returncode}: {res.stderr.strip().splitlines()[-3:]}"
                    )
                else:
                    false_lines += checker.summary_line(number, res.stdout)
                if stage == "waiting-for-labels":
                    false_lines += checker.waiting_message(number, api)
                _, st = novelty_here(["flywheel", "status", "--config", config], log)
                n_lines, wrong = checker.status_lines(st, api)
                status_checked += n_lines
                false_lines += wrong
                if res.returncode == 0:
                    finished = True
                    break
                made = oracle.label_all(PROJECT)
                asked += made
                checker.asked_in_turn[number] = asked
                sig = (
                    res.returncode,
                    stage,
                    json.dumps({k2: v for k2, v in turn_json.items() if k2 != "updated"}, sort_keys=True),
                )
                if last_sig == sig and made == 0:
                    stalls.append(f"runs {r} and {r + 1} left the turn at {stage} with nothing left to label")
                last_sig = sig if made == 0 else None
            turn_s = time.perf_counter() - t_turn
            stalled_total += bool(stalls) or not finished
            d = work / "turns" / f"{number:04d}"
            tj = json.loads((d / "turn.json").read_text())
            # labels bought twice: the turn's tasks whose image was labelled or exported before the turn began
            task_shas = [str(t["data"].get("sha256")) for t in _tasks_file(d)]
            twice = sorted(
                (set(task_shas) & (labelled_before | exported_before))
                | {s for s in task_shas if task_shas.count(s) > 1}
            )
            exported_before |= set(task_shas)
            # auto-labels where only people's labels belong
            auto_misplaced = {
                name: sum(
                    1 for e in _entries(work / "data" / name) if e.auto or e.labeller.startswith("model:")
                )
                for name in ("test", "new")
            }
            auto_rows = _auto_rows(d)
            auto_right = sum(
                1
                for a in auto_rows
                if world.truth.get(a.get("sha256", ""), None) and world.truth[a["sha256"]].label == a["label"]
            )
            reloaded: float | None = None
            champion_now = reg.resolve("champion")
            if champion_now != champion_before:
                reloaded = _wait_served(srv.url, reg.get("champion").artifact_id)
            ev = evaluate(client, eval_rows, world.truth)
            served_ok = ev["detector_versions"] == [reg.get("champion").artifact_id]
            compute = {k2: round(v, 1) for k2, v in (tj.get("compute_s") or {}).items()}
            compute_total = float(sum((tj.get("compute_s") or {}).values()))
            human = int(tj.get("labels_bought", 0))
            row = {
                "week": week,
                "turn": number,
                "inbox": flags,
                "runs": runs,
                "finished": finished,
                "stage": tj["stage"],
                "champion_before": champion_before,
                "challenger": tj.get("challenger"),
                "champion_after": champion_now,
                "selected": tj.get("selected"),
                "already_labelled_left_out": tj.get("already_labelled"),
                "exported_to_people": len(task_shas),
                "labels_bought": human,
                "oracle_labels": asked,
                "auto_accepted": int(tj.get("auto_accepted", 0)),
                "auto_right": auto_right,
                "audit": tj.get("audit"),
                "held_out_new_slice": tj.get("held_out"),
                "compute_s": compute,
                "compute_total_s": round(compute_total, 1),
                "cost_usd": round(human * PRICE_LABEL + compute_total / 3600 * PRICE_COMPUTE_HOUR, 3),
                "wall_s": round(turn_s, 1),
                "reasons": tj.get("reasons", []),
                "evaluation": ev,
                "checks": {
                    "stalled": stalls
                    if (stalls or finished)
                    else [*stalls, f"not finished after {size.max_runs} runs"],
                    "bought_twice": twice,
                    "auto_labels_in": auto_misplaced,
                    "status_false": false_lines,
                    "service_reload_s": reloaded,
                    "served_champion": served_ok,
                    "champion_changed_from": champion_id_before if champion_now != champion_before else None,
                },
            }
            turns.append(row)
            progress(
                f"turn {number}: {tj['stage']} in {len(runs)} runs; bought {human}, auto {row['auto_accepted']} "
                f"({auto_right} right); accuracy {ev['accuracy']}; stalled {len(row['checks']['stalled'])}, "
                f"twice {len(twice)}, auto in test/new {auto_misplaced}, status false {len(false_lines)}"
            )
            if not finished and not keep_going:
                break
            if not finished:  # the turn is stuck: the next `flywheel run` would only go on with it
                progress(f"turn {number} did not finish; the routine stops here")
                break
        asked_twice = sorted(s for s, n in oracle.labelled.items() if n > 1)
        leak = _new_slice_leak(work, world.truth)
        pid = api.project_id(PROJECT)
        project_shas = [str(t["data"].get("sha256")) for t in api.tasks(pid)] if pid else []
        project_twice = sorted({s for s in project_shas if project_shas.count(s) > 1})
    (work / "truth.json").write_text(json.dumps({k: asdict(v) for k, v in world.truth.items()}))
    wall = time.perf_counter() - t_start
    goals = {
        "stalled_turns": stalled_total,
        "labels_bought_twice": sum(len(t["checks"]["bought_twice"]) for t in turns)
        + len(asked_twice)
        + len(project_twice),
        "auto_labels_in_test_or_new_slice": max(
            (sum(t["checks"]["auto_labels_in"].values()) for t in turns), default=0
        ),
        "status_lines_false": sum(len(t["checks"]["status_false"]) for t in turns),
        "status_lines_checked": status_checked,
        "turns_played": len(turns),
        "turns_planned": size.turns,
        "service_served_every_champion": all(t["checks"]["served_champion"] for t in turns),
    }
    goals["met"] = (
        goals["stalled_turns"] == 0
        and goals["labels_bought_twice"] == 0
        and goals["auto_labels_in_test_or_new_slice"] == 0
        and goals["status_lines_false"] == 0
        and goals["turns_played"] == size.turns
        and goals["service_served_every_champion"]
    )
    return {
        "benchmark": "weekly routine",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "size": asdict(size),
        "prices": {"label_usd": PRICE_LABEL, "compute_hour_usd": PRICE_COMPUTE_HOUR},
        "machine": _cpu(),
        "code": code_at_start,
        "code_at_end": _git(),
        "wall_s": round(wall, 1),
        "setup_s": round(setup_s, 1),
        "data": {"train": len(train_rows), "test": len(test_rows), "evaluation": len(eval_rows)},
        "baseline": baseline,
        "turns": turns,
        "labels_asked_twice_of_the_oracle": asked_twice,
        "project_tasks_twice": project_twice,
        "new_slice": leak,
        "oracle_unknown_tasks": oracle.unknown,
        "totals": {
            "labels_bought": sum(t["labels_bought"] for t in turns),
            "auto_accepted": sum(t["auto_accepted"] for t in turns),
            "compute_s": round(sum(t["compute_total_s"] for t in turns), 1),
            "cost_usd": round(sum(t["cost_usd"] for t in turns), 2),
        },
        "goals": goals,
    }


# --- the report -----------------------------------------------------------------------------------------------------
def _decision(turn: dict[str, Any]) -> str:
    """``promoted``, or ``rejected (accuracy a → b; failed: the gate's checks that failed)``."""
    if turn["stage"] != "rejected":
        return str(turn["stage"])
    reasons = [str(r) for r in turn["reasons"]]
    failed = [m[1] for r in reasons if (m := re.match(r"\s*FAIL ([^:]+):", r))]
    gain = next((m for r in reasons if (m := re.search(r"(\d\.\d+) → (\d\.\d+)", r))), None)
    acc = f"accuracy {gain[1]} → {gain[2]}; " if gain else ""
    return f"rejected ({acc}failed: {', '.join(failed) or '?'})"


def markdown(res: dict[str, Any]) -> str:
    g, m = res["goals"], res["machine"]
    stages = ("select", "export", "import", "retrain", "compare")
    changed = res["code"]["novelty_files_changed_since"]
    lines = [
        f"{res['size']['weeks']} weeks × {res['size']['turns_per_week']} turns, budget {res['size']['budget']} "
        f"per turn; {res['data']['train']} training, {res['data']['test']} test, {res['data']['evaluation']} "
        f"evaluation images. Run time {res['wall_s'] / 60:.1f} min on {m['cores']} cores ({m['model']}; "
        f"AVX-512/AMX flags: {' '.join(m['flags']) or 'none'}); code {res['code']['commit']}"
        + (f" + uncommitted {', '.join(changed)}" if changed else "")
        + (
            f" (the package's code changed while it ran: {res['code_at_end']['commit']} at the end)"
            if not _same_code(res["code"], res.get("code_at_end", res["code"]))
            else ""
        )
        + ".",
        "",
        "| week | turn | flagged / inbox | runs | bought | auto / audited | compute s ("
        + " / ".join(stages)
        + ") | cost USD | decision | "
        + " | ".join(ALL_CONDITIONS)
        + " | checks |",
        "|---" * (10 + len(ALL_CONDITIONS)) + "|",
    ]
    b = res["baseline"]["accuracy"]
    lines.append(
        "| 0 | champion v1 | | | | | | | | "
        + " | ".join(f"{b.get(c, float('nan')):.2f}" for c in ALL_CONDITIONS)
        + " | |"
    )
    for t in res["turns"]:
        c = t["checks"]
        problems = []
        if c["stalled"]:
            problems.append(f"stalled: {len(c['stalled'])}")
        if c["bought_twice"]:
            problems.append(f"bought twice: {len(c['bought_twice'])}")
        if sum(c["auto_labels_in"].values()):
            problems.append(f"auto in test/new: {c['auto_labels_in']}")
        if c["status_false"]:
            problems.append(f"status false: {len(c['status_false'])}")
        if not c["served_champion"]:
            problems.append("service not on the champion")
        acc = t["evaluation"]["accuracy"]
        audited = (t["audit"] or {}).get("n", 0)
        lines.append(
            f"| {t['week']} | {t['turn']} | {t['inbox']['flagged']} / {t['inbox']['inbox']} | {len(t['runs'])} | "
            f"{t['labels_bought']} | {t['auto_accepted']} / {audited} | "
            + " / ".join(f"{t['compute_s'].get(s, 0):.0f}" for s in stages)
            + f" | {t['cost_usd']:.2f} | {_decision(t)} | "
            + " | ".join(f"{acc.get(c2, float('nan')):.2f}" for c2 in ALL_CONDITIONS)
            + f" | {'; '.join(problems) or 'ok'} |"
        )
    tot = res["totals"]
    lines += [
        "",
        f"Totals: {tot['labels_bought']} labels bought, {tot['auto_accepted']} auto-accepted, "
        f"{tot['compute_s']:.0f} s of flywheel compute, {tot['cost_usd']:.2f} USD "
        f"(labels × {res['prices']['label_usd']} + compute hours × {res['prices']['compute_hour_usd']}).",
        f"Goals: stalled turns {g['stalled_turns']}, labels bought twice {g['labels_bought_twice']}, "
        f"auto-labels in the test set or new slice {g['auto_labels_in_test_or_new_slice']}, status lines false "
        f"{g['status_lines_false']} of {g['status_lines_checked']} checked; turns played {g['turns_played']} of "
        f"{g['turns_planned']}; service served every champion: {g['service_served_every_champion']} → "
        f"**{'met' if g['met'] else 'NOT met'}**.",
    ]
    ns = res.get("new_slice")
    if ns:
        lines.append(
            f"New slice: {ns['n']} images, conditions {', '.join(ns['conditions']) or '-'}, {ns['with_group']} with "
            f"a group; {ns['frame_also_in_training']} show a video frame that a training image shows too."
        )
    details = [
        f"- turn {t['turn']}: {kind}: {item}"
        for t in res["turns"]
        for kind in ("stalled", "status_false", "bought_twice")
        for item in t["checks"][kind][:5]
    ]
    if details:
        lines += ["", "What was found:", "", *details]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--weeks", type=int, help=f"weeks to play (default {FULL.weeks}; --small {SMALL.weeks})")
    ap.add_argument("--turns-per-week", type=int, help=f"turns a week (default {FULL.turns_per_week})")
    ap.add_argument("--small", action="store_true", help="a reduced size (the test's)")
    ap.add_argument(
        "--workdir", type=Path, help="where the routine runs (default: a temporary folder, removed)"
    )
    ap.add_argument(
        "--out", type=Path, help="the results JSON (default benchmarks/results/weekly[-small].json)"
    )
    args = ap.parse_args(argv)
    size = SMALL if args.small else FULL
    if args.weeks is not None:
        size = Size(**{**asdict(size), "weeks": args.weeks})
    if args.turns_per_week is not None:
        size = Size(**{**asdict(size), "turns_per_week": args.turns_per_week})
    if size.weeks < 1 or size.turns_per_week < 1:
        ap.error("--weeks and --turns-per-week must be at least 1")
    out = args.out or RESULTS / ("weekly-small.json" if args.small else "weekly.json")
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="weekly-")))
        else:
            work = args.workdir
            if work.exists() and any(work.iterdir()):
                ap.error(f"--workdir {work} is not empty")
        res = run_routine(size, work)
        res["command"] = "python -m benchmarks.weekly " + " ".join(argv if argv is not None else sys.argv[1:])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    md = markdown(res)
    out.with_suffix(".md").write_text(md, encoding="utf-8")
    print(md)
    return 0 if res["goals"]["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
