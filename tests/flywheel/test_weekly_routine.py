"""The flywheel as an unattended weekly routine (benchmarks/weekly.py) at a reduced size: two weeks, one turn
each, production images flagged through the running service, `novelty flywheel run` as cron runs it, labels
given through a real Label Studio server's API by an oracle.

The four goals: no turn stalls, no label is bought twice, no automatic label reaches the test set or the new
slice, and every line `novelty flywheel status` prints is true to the files; and the service serves the
champion after every turn."""

from __future__ import annotations

import json
import re

import pytest

lss = pytest.importorskip("label_studio_server")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not lss.installed(), reason="Label Studio is not installed in .venv-ls (make label-studio)"
    ),
]


def test_weekly_routine_meets_its_goals(tmp_path, capsys):
    pytest.importorskip("fastapi")
    from benchmarks.weekly import SMALL, markdown, run_routine

    res = run_routine(SMALL, tmp_path / "routine")
    report = markdown(res)
    with capsys.disabled():
        print("\n" + report)
    g = res["goals"]
    assert g["turns_played"] == SMALL.turns == 2, report
    assert g["stalled_turns"] == 0, json.dumps([t["checks"]["stalled"] for t in res["turns"]], indent=1)
    assert g["labels_bought_twice"] == 0, json.dumps(
        [t["checks"]["bought_twice"] for t in res["turns"]]
        + [res["labels_asked_twice_of_the_oracle"], res["project_tasks_twice"]]
    )
    assert g["auto_labels_in_test_or_new_slice"] == 0, report
    # the flags' groups reach the new slice, which then holds no frame that a training image shows too
    ns = res["new_slice"]
    assert ns["with_group"] == ns["n"] and ns["frame_also_in_training"] == 0, ns
    assert g["status_lines_checked"] >= 4 * SMALL.turns
    assert g["status_lines_false"] == 0, json.dumps(
        [t["checks"]["status_false"] for t in res["turns"]], indent=1
    )
    assert g["service_served_every_champion"], report
    assert g["met"]
    # every turn bought labels from the oracle, through Label Studio, and the later turn none of the earlier's
    for t in res["turns"]:
        assert t["labels_bought"] == t["oracle_labels"] > 0, t
        assert t["stage"] in ("promoted", "rejected"), t
        assert set(t["evaluation"]["accuracy"]) == {"clean", "tunnel", "ice", "fog", "snow"}
    assert res["turns"][1]["already_labelled_left_out"] > 0  # the re-sent and earlier flagged images

    # the check itself catches a status line that is not true: a label more, another stage
    from benchmarks.weekly import _STATUS, Checker, LabelStudioAPI, Oracle, novelty_here

    work = tmp_path / "routine"
    checker = Checker(
        work,
        Oracle(LabelStudioAPI("http://127.0.0.1:9", ""), {}),
        {t["turn"]: t["champion_before"] for t in res["turns"]},
    )
    code, text = novelty_here(
        ["flywheel", "status", "--config", work / "flywheel.toml"], work / "commands.log"
    )
    assert code == 0
    n, false = checker.status_lines(text, checker.oracle.api)
    assert n == SMALL.turns + 1 and not false, (text, false)
    lines = text.splitlines()
    k, m = next((k, m) for k, line in enumerate(lines) if (m := _STATUS.match(line)))
    row = lines[k]
    one_more = row[: m.start("human")] + f"{int(m['human']) + 1:>{len(m['human'])}}" + row[m.end("human") :]
    _, false = checker.status_lines(one_more, checker.oracle.api)
    assert any("human" in f for f in false), false
    other = "promoted" if m["stage"] != "promoted" else "rejected"
    _, false = checker.status_lines(re.sub(m["stage"], other, lines[k], count=1), checker.oracle.api)
    assert any("stage" in f for f in false), false
