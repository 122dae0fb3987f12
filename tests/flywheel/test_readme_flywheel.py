"""The README's flywheel walkthrough, run as written: its commands are read from the README's code block, so the
README cannot drift from what works.

From scratch, at a reduced size, with the real parts: street frames (the windshield scenario) as image files and
CSVs; the block's commands in order (datasets, fit, register, promote, serve, select, export into Label Studio,
import the labels from it, retrain, compare, register, promote, forced promote, rollback), each through the CLI.
Between them what the block leaves to people and production: the service flags the inbox frames it does not
trust through :class:`novelty.Client` (among them images the training and test sets label already, which must
not be selected), and an oracle labels the project's tasks through Label Studio's API (a real server from
``.venv-ls``). Label Studio is reached by ``novelty`` only through ``export --to-label-studio``
and ``import-labels --from-label-studio``. What is replaced in the commands, and why, is :data:`REPLACE`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from novelty.cli import main

lss = pytest.importorskip("label_studio_server")

REPO = Path(__file__).resolve().parents[2]
SECTION = "## The flywheel: select, label, retrain, compare, promote"
#: the walkthrough's verbs, in order: the block must keep them (a new one is run too; a missing one fails)
VERBS = (
    "dataset create",
    "dataset add-csv",
    "fit",
    "register",
    "promote",
    "serve",
    "select",
    "export",
    "import-labels",
    "retrain",
    "compare",
    "register",
    "promote",
    "rollback",
)
#: what the block leaves to the reader, by option: the server's address, its document root, the reduced size
REPLACE = {
    "--to-label-studio": "{ls_url}",  # http://localhost:8080: the throwaway Label Studio server
    "--from-label-studio": "{ls_url}",
    "--document-root": "{root}",  # /data: the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT
    "--budget": "16",  # 50: reduced size, an inbox of 52 frames
}


def readme_commands(readme: Path = REPO / "README.md") -> list[list[str]]:
    """The commands of the flywheel section's first ``bash`` block, each as its argv: continuation lines joined,
    comments and blank lines dropped, ``a && b`` two commands."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(SECTION)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.S)
    assert block, f"no ```bash block under {SECTION!r}"
    out: list[list[str]] = []
    for line in re.sub(r"\\\n\s*", " ", block.group(1)).splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        argv: list[str] = []
        for token in [*lex, "&&"]:
            if token == "&&":
                if argv:
                    out.append(argv)
                argv = []
            else:
                argv.append(token)
    return out


def _verb(argv: list[str]) -> str:
    return " ".join(argv[1:3]) if argv[1] == "dataset" else argv[1]


def _jpeg(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    return path


def _csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _data(root: Path) -> dict[str, str]:
    """train/ + train.csv (clean frames, dry and wet), test/ + test.csv (clean and ice), inbox/ (ice, production);
    the true label of every inbox image by sha256."""
    from novelty.datasets.windshield import apply_condition, windshield_scenario
    from novelty.fileio import sha256_file

    sc = windshield_scenario()
    rows = []
    for img, y, g, f in list(
        zip(sc.train.images, sc.train.labels, sc.train.groups, sc.train.frames, strict=True)
    )[::4]:
        p = _jpeg(img, root / "train" / f"f{f:04d}.jpg")
        rows.append(
            {
                "path": str(p.relative_to(root)),
                "label": ("dry", "wet")[y],
                "group": f"b{g}",
                "condition": "clean",
            }
        )
    _csv(root / "train.csv", rows)
    ice = sc.production["ice"]
    test_rows = []
    cal = sc.calibration
    for i in range(0, len(cal), 8):
        f, y, g = int(cal.frames[i]), int(cal.labels[i]), int(cal.groups[i])
        for cond, img in (
            ("clean", cal.images[i]),
            ("ice", apply_condition(cal.images[i], "ice", 3, 0, frame_ids=[f])),
        ):
            p = _jpeg(img, root / "test" / f"{cond}-f{f:04d}.jpg")
            test_rows.append(
                {
                    "path": str(p.relative_to(root)),
                    "label": ("dry", "wet")[y],
                    "group": f"b{g}",
                    "condition": cond,
                }
            )
    _csv(root / "test.csv", test_rows)
    truth = {}
    for i in range(0, len(ice), 4):
        p = _jpeg(ice.images[i], root / "inbox" / f"ice-f{int(ice.frames[i]):04d}.jpg")
        truth[sha256_file(p)] = ("dry", "wet")[int(ice.labels[i])]
    # production sends again two images the test set and one the training set labels: never bought
    for row in [*test_rows[1:4:2], rows[0]]:
        data = (root / row["path"]).read_bytes()
        (root / "inbox" / f"again-{Path(row['path']).name}").write_bytes(data)
        truth[sha256_file(root / row["path"])] = row["label"]
    return truth


class _Service:
    """``novelty serve …`` from the README, in the background, on a free port with a token."""

    def __init__(self, argv: list[str], root: Path, token: str) -> None:
        port = lss._free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "NOVELTY_API_TOKENS": token, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        self.log = open(root / "serve.log", "wb")  # noqa: SIM115 (the service writes to it until stop)
        cmd = [sys.executable, "-m", "novelty.cli", *argv[1:], "--port", str(port), "--no-access-log"]
        self.proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = root / "serve.log"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(
            "the service did not get ready:\n" + self.log_path.read_text(errors="replace")[-3000:]
        )

    def version(self) -> str:
        with urllib.request.urlopen(self.url + "/healthz", timeout=30) as r:
            return str(json.loads(r.read())["detector_version"])

    def wait_for(self, version: str, timeout_s: float = 120.0) -> None:
        """The service follows models/champion by itself (README: "follows promote/rollback by itself")."""
        deadline = time.monotonic() + timeout_s
        while self.version() != version:
            assert time.monotonic() < deadline, f"the service still serves {self.version()}, not {version}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()


def _oracle(server: lss.LabelStudioServer, project: str, truth: dict[str, str]) -> int:
    """Label every unlabelled task of the project with its image's true label, as a person would in the UI."""
    found = [p for p in server.api("GET", "/api/projects?page_size=100")["results"] if p["title"] == project]
    assert len(found) == 1, found
    pid = found[0]["id"]
    n = 0
    for t in server.api("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true"):
        if t["annotations"]:
            continue
        label = truth[t["data"]["sha256"]]
        result = [
            {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
        ]
        server.api("POST", f"/api/tasks/{t['id']}/annotations", {"result": result, "lead_time": 2.0})
        n += 1
    return n


def test_readme_commands_parse():
    """The block holds the walkthrough's verbs in order (a fast check of the extraction itself)."""
    argvs = [a for a in readme_commands() if a[0] == "novelty"]
    verbs = [_verb(a) for a in argvs]
    it = iter(verbs)
    assert all(v in it for v in VERBS), f"the README's flywheel block lost a step: {verbs}"
    assert any("--to-label-studio" in a for a in argvs) and any("--from-label-studio" in a for a in argvs)


@pytest.mark.slow
@pytest.mark.skipif(
    not lss.installed(), reason="Label Studio is not installed in .venv-ls (make label-studio)"
)
def test_readme_flywheel_walkthrough(tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from novelty.flywheel.dataset import Dataset
    from novelty.flywheel.registry import Registry
    from novelty.serve.client import Client

    root = tmp_path / "data-root"  # everything below the Label Studio server's document root
    root.mkdir()
    ls = lss.LabelStudioServer(tmp_path / "ls", root)
    failed: list[BaseException] = []

    def start() -> None:
        try:
            ls.start()
        except BaseException as e:
            failed.append(e)

    starter = threading.Thread(target=start, daemon=True)
    starter.start()  # a minute or more: while the datasets are made and the champion is fitted
    truth = _data(root)
    monkeypatch.chdir(root)
    token = "readme-walkthrough-token-0123456789"
    service: _Service | None = None
    said: list[str] = []
    passed: bool | None = None
    try:
        for argv in readme_commands():
            command = shlex.join(argv)
            if argv[0] == "export" and "=" in argv[1]:  # the shell's export: Label Studio's key
                name = argv[1].split("=")[0]
                assert name == "LABEL_STUDIO_API_KEY", command
                monkeypatch.setenv(name, lss.TOKEN)
                continue
            if "--to-label-studio" in argv or "--from-label-studio" in argv:
                starter.join()
                if failed:
                    raise failed[0]
            for k in range(1, len(argv)):
                if argv[k - 1] in REPLACE:
                    argv[k] = REPLACE[argv[k - 1]].format(ls_url=ls.url, root=root)
            assert argv[0] == "novelty", f"not a novelty command in the README's block: {command}"
            verb = _verb(argv)
            said.append(verb)
            if verb == "serve":
                service = _Service(argv, root, token)
                client = Client(service.url, token)
                inbox = sorted((root / "inbox").iterdir())
                verdicts = client.score_batch(inbox)
                flagged = 0
                for p, v in zip(inbox, verdicts, strict=True):
                    assert not v.error, v.error
                    if not v.trusted:  # production flags what the model cannot vouch for
                        client.flag(p, prediction=v.prediction, source="car-17")
                        flagged += 1
                assert flagged >= len(inbox) // 2, "ice frames should mostly be flagged by the clean champion"
                assert len(client.flags()) == flagged
                continue
            code = main(argv[1:])
            if verb == "compare":
                assert code in (0, 3), f"{command} → {code}"
                passed = json.loads((root / "comparison.json").read_text())["passed"]
                assert (code == 0) == passed
            elif verb == "promote" and "--comparison" in argv:
                assert (code == 0) == passed, f"{command} → {code}, the comparison passed: {passed}"
            else:
                assert code == 0, f"{command} → exit {code}"
            if verb == "export" and "--to-label-studio" in argv:
                sel = json.loads((root / "selection.json").read_text())
                assert sel["items"] and all(it["sha256"] in truth for it in sel["items"])
                project = argv[argv.index("--project") + 1]
                labelled = _oracle(ls, project, truth)
                assert 0 < labelled <= len(sel["items"])
                known = {
                    e.sha256 for d in ("data/train", "data/test") for e in Dataset.open(root / d).entries()
                }
                assert not {it["sha256"] for it in sel["items"]} & known, "a labelled image selected again"
                train_before = len(Dataset.open(root / "data/train"))
            if verb == "import-labels":
                assert len(Dataset.open(root / "data/train")) == train_before + labelled
            if verb == "promote" and service is not None:
                reg = Registry.open(root / "models")
                service.wait_for(reg.get("champion").artifact_id)
            if verb == "rollback":
                assert service is not None
                reg = Registry.open(root / "models")
                assert reg.resolve("champion") == "0001"
                service.wait_for(reg.get("champion").artifact_id)
                assert (
                    Client(service.url, token).score(inbox[0]).detector_version == reg.get("0001").artifact_id
                )
    finally:
        if service is not None:
            service.stop()
        starter.join(timeout=600)
        ls.stop()
    it = iter(said)
    assert all(v in it for v in VERBS), said
    history = [e.event for e in Registry.open(root / "models").history()]
    assert history.count("promote") >= 2 and "rollback" in history, history
