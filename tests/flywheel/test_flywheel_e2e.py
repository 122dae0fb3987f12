"""The flywheel end to end, through the CLI, with the real parts: the wipers-in-tunnels story closed.

A dry/wet windshield classifier is fitted on clean street frames and served. Production brings frames seen
through iced glass, where the head is right about half the time (checkpoints/windshield_metrics.json);
the service flags the novel ones; `novelty select` picks what to label; `novelty export` writes Label Studio
tasks; a real Label Studio server takes them and an annotator labels them through its API; the export comes back
through `novelty import-labels`; `novelty retrain` fits a challenger with the champion's parameters; `novelty
compare` runs both on the same frozen test set; `novelty promote` makes it the champion and the running service
answers with it; `novelty rollback` brings the old one back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from novelty.cli import main

pytestmark = pytest.mark.slow

lss = pytest.importorskip("label_studio_server")


def _jpeg(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_bytes(data)
    return p


def _csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _cli(*argv: str) -> int:
    return main([str(a) for a in argv])


@pytest.mark.skipif(not lss.installed(), reason="Label Studio is not installed (make label-studio)")
def test_flag_select_label_retrain_compare_promote_rollback(tmp_path, capsys):
    pytest.importorskip("fastapi")
    from serve_support import ServerProcess, new_token

    from novelty.datasets.windshield import windshield_scenario
    from novelty.flywheel.registry.store import Registry
    from novelty.serve.client import Client

    sc = windshield_scenario()
    label = {0: "dry", 1: "wet"}

    # the training data: the train and calibration parts (clean frames, dry and wet), 25-frame blocks as groups
    rows = []
    for part in (sc.train, sc.calibration):
        for img, y, g, f in zip(part.images, part.labels, part.groups, part.frames, strict=True):
            p = _write(tmp_path / "train", f"frame-{f:04d}.jpg", _jpeg(img))
            rows.append({"path": str(p), "label": label[int(y)], "group": f"b{g}", "condition": "clean"})
    train_csv = _csv(tmp_path / "train.csv", rows)

    # the test part's blocks: half make the frozen test set (clean + ice), half are production
    test = sc.test
    blocks = np.unique(test.groups)
    test_blocks = set(blocks[::2].tolist())
    ice = sc.production["ice"]
    test_rows, production, truth = [], [], {}
    for i, (g, f, y) in enumerate(zip(test.groups, test.frames, test.labels, strict=True)):
        if int(g) in test_blocks:
            for cond, img in (("clean", test.images[i]), ("ice", ice.images[i])):
                p = _write(tmp_path / "test", f"{cond}-{f:04d}.jpg", _jpeg(img))
                test_rows.append(
                    {"path": str(p), "label": label[int(y)], "group": f"b{g}", "condition": cond}
                )
        else:
            data = _jpeg(ice.images[i])
            production.append(data)
            truth[hashlib.sha256(data).hexdigest()] = label[int(y)]
    test_csv = _csv(tmp_path / "test.csv", test_rows)

    # 1. the datasets and the first champion (novelty fit), registered and promoted
    assert _cli("dataset", "create", tmp_path / "ds", "--classes", "dry,wet") == 0
    assert _cli("dataset", "add-csv", tmp_path / "ds", train_csv) == 0
    assert _cli("dataset", "create", tmp_path / "testset", "--classes", "dry,wet") == 0
    assert _cli("dataset", "add-csv", tmp_path / "testset", test_csv) == 0
    fit_labels = _csv(
        tmp_path / "fit.csv", [{"path": r["path"], "label": r["label"], "group": r["group"]} for r in rows]
    )
    assert (
        _cli("fit", tmp_path / "train", "--labels", fit_labels, "--groups", "group", "--out", tmp_path / "v1")
        == 0
    )
    reg_dir = tmp_path / "registry"
    assert _cli("register", reg_dir, tmp_path / "v1", "--note", "clean frames") == 0
    assert _cli("promote", reg_dir, "1") == 0
    reg = Registry.open(reg_dir)
    v1 = reg.get("champion").artifact_id

    token = new_token()
    flags = tmp_path / "flags"
    with ServerProcess(
        reg_dir / "champion",
        flag_store=str(flags),
        token=token,
        log_path=tmp_path / "server.log",
        extra_args=["--watch-interval", "0.2"],
    ) as srv:
        client = Client(srv.url, token)

        # 2. production: the model scores each frame and flags the novel ones (iced glass it never saw)
        verdicts = client.score_batch(production)
        assert {v.detector_version for v in verdicts} == {v1}
        flagged = [d for d, v in zip(production, verdicts, strict=True) if v.is_novel]
        assert len(flagged) >= 0.5 * len(production), "iced frames should look novel to the clean champion"
        for d, v in zip(production, verdicts, strict=True):
            if v.is_novel:
                client.flag(d, prediction=v.prediction, source="camera-7")

        # 3. select under a budget, export for Label Studio
        sel = tmp_path / "selection.json"
        assert (
            _cli(
                "select",
                reg_dir / "champion",
                "--flags",
                flags,
                "--budget",
                40,
                "--strategy",
                "hybrid",
                "--images-dir",
                tmp_path / "selected",
                "--out",
                sel,
            )
            == 0
        )
        items = json.loads(sel.read_text())["items"]
        assert len(items) == 40 and all(it["source"].startswith("flag:") for it in items)
        assert _cli("export", sel, "--format", "label-studio", "--out", tmp_path / "ls") == 0
        manifest = json.loads((tmp_path / "ls" / "export.json").read_text())

        # 4. a real Label Studio: project, tasks, an annotator's labels through the API, the JSON export
        ls = lss.LabelStudioServer(tmp_path / "ls-data", Path(manifest["document_root"])).start()
        try:
            project = ls.api(
                "POST",
                "/api/projects",
                {"title": "iced glass", "label_config": (tmp_path / "ls" / "label_config.xml").read_text()},
            )
            pid = project["id"]
            ls.api(
                "POST",
                "/api/storages/localfiles",
                {
                    "project": pid,
                    "path": manifest["local_storage_path"],
                    "use_blob_urls": False,
                    "title": "s",
                },
            )
            tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
            assert ls.api("POST", f"/api/projects/{pid}/import", tasks)["task_count"] == 40
            right = 0
            for t in ls.api("GET", f"/api/tasks?project={pid}&page_size=100")["tasks"]:
                y = truth[t["data"]["sha256"]]
                pre = ls.api("GET", f"/api/predictions?task={t['id']}")[0]["result"][0]["value"]["choices"][0]
                right += pre == y
                ls.api(
                    "POST",
                    f"/api/tasks/{t['id']}/annotations",
                    {
                        "result": [
                            {
                                "from_name": "label",
                                "to_name": "image",
                                "type": "choices",
                                "value": {"choices": [y]},
                            }
                        ],
                        "lead_time": 3.0,
                    },
                )
            export = ls.api("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true")
        finally:
            ls.stop()
        (tmp_path / "labels.json").write_text(json.dumps(export))
        print(f"pre-annotations right: {right}/40")

        # 5. import, retrain with the champion's parameters, compare on the frozen test set
        assert _cli("import-labels", tmp_path / "ds", tmp_path / "labels.json", "--selection", sel) == 0
        assert (
            _cli("retrain", reg_dir / "champion", "--dataset", tmp_path / "ds", "--out", tmp_path / "v2") == 0
        )
        code = _cli(
            "compare",
            reg_dir / "champion",
            tmp_path / "v2",
            "--test",
            tmp_path / "testset",
            "--out",
            tmp_path / "cmp.json",
            "--report",
            tmp_path / "cmp.html",
        )
        cmp = json.loads((tmp_path / "cmp.json").read_text())
        print("comparison:", json.dumps(cmp.get("reasons", cmp.get("checks")), indent=1))
        assert code == 0 and cmp["passed"], capsys.readouterr().out

        # 6. register, promote: the running service answers with the new champion; roll back: the old again
        assert _cli("register", reg_dir, tmp_path / "v2", "--alias", "challenger") == 0
        assert _cli("promote", reg_dir, "challenger", "--comparison", tmp_path / "cmp.json") == 0
        v2 = Registry.open(reg_dir).get("champion").artifact_id
        assert v2 != v1

        def served(version: str) -> None:
            deadline = time.monotonic() + 180
            while True:
                with urllib.request.urlopen(srv.url + "/healthz", timeout=30) as r:
                    if json.loads(r.read())["detector_version"] == version:
                        break
                assert time.monotonic() < deadline, srv.log_tail()
                time.sleep(0.1)

        served(v2)
        new = client.score_batch(flagged[:20])
        assert {v.detector_version for v in new} == {v2}
        old_novel = sum(v.is_novel for v in verdicts[:20] if v.is_novel)
        print(
            f"flagged as novel among 20 flagged frames: champion {old_novel}, challenger {sum(v.is_novel for v in new)}"
        )
        assert _cli("rollback", reg_dir) == 0
        served(v1)
        assert client.score(flagged[0]).detector_version == v1
