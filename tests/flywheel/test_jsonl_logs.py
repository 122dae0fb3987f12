"""The append-only JSON-lines logs (the registry's history, the flywheel's turns) share one torn-line policy
(:func:`novelty.fileio.append_jsonl` / :func:`~novelty.fileio.read_jsonl`): a last line without its newline, left
by a crash mid-write, is skipped by reads and cut off by the next append, so it never merges with a new line; a
damaged complete line is an error that names it."""

from __future__ import annotations

import json

import pytest

from novelty.fileio import JsonlLineError, append_jsonl, read_jsonl
from novelty.flywheel.config import FlywheelConfig
from novelty.flywheel.registry.errors import RegistryError
from novelty.flywheel.registry.history import append_event, read_events
from novelty.flywheel.turn_state import LOG_FILE, Turn, _log_turn


def test_a_torn_last_line_is_skipped_then_cut_off(tmp_path):
    p = tmp_path / "log.jsonl"
    assert read_jsonl(p) == []
    append_jsonl(p, {"a": 1})
    with open(p, "ab") as fh:
        fh.write(b'{"a": 2, "cut sh')  # a crash mid-write
    assert read_jsonl(p) == [(1, {"a": 1})]
    append_jsonl(p, {"a": 3})
    assert p.read_bytes() == b'{"a": 1}\n{"a": 3}\n'
    assert read_jsonl(p) == [(1, {"a": 1}), (2, {"a": 3})]
    # a torn line that happens to parse is still torn: it may be a prefix of what was meant
    with open(p, "ab") as fh:
        fh.write(b'{"a": 4}')
    assert [d for _, d in read_jsonl(p)] == [{"a": 1}, {"a": 3}]


def test_a_damaged_complete_line_is_an_error_naming_it(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_bytes(b'{"a": 1}\n\n[1, 2]\n{"a": 2}\n')
    with pytest.raises(JsonlLineError, match="line 3: a JSON list") as e:
        read_jsonl(p)
    assert e.value.line == 3
    p.write_bytes(b'{"a": 1}\nnot json\n')
    with pytest.raises(JsonlLineError, match="line 2: not JSON"):
        read_jsonl(p)
    with pytest.raises(ValueError):
        append_jsonl(p, {"x": float("nan")})  # strict JSON unless asked
    append_jsonl(tmp_path / "nan.jsonl", {"x": float("nan")}, allow_nan=True)
    assert (tmp_path / "nan.jsonl").read_text() == '{"x": NaN}\n'


def test_the_registry_history_follows_the_policy(tmp_path):
    h = tmp_path / "history.jsonl"
    append_event(h, "registered", {"version": 1})
    with open(h, "ab") as fh:
        fh.write(b'{"event": "promo')
    assert [e.event for e in read_events(h)] == ["registered"]
    append_event(h, "promoted", {"version": 1})
    assert [e.event for e in read_events(h)] == ["registered", "promoted"]
    h.write_bytes(b'{"event": "registered"}\n{"no event": 1}\n')
    with pytest.raises(RegistryError, match="line 2: not a history event"):
        read_events(h)


def test_the_turn_log_never_merges_a_new_line_into_a_torn_one(tmp_path):
    config = FlywheelConfig(
        path=tmp_path / "flywheel.toml",
        registry=tmp_path / "registry",
        dataset=tmp_path / "dataset",
        test=tmp_path / "test",
        workdir=tmp_path / "turns",
    )
    config.workdir.mkdir()
    log = config.workdir / LOG_FILE
    _log_turn(config, Turn(number=1, dir=config.workdir / "0001", stage="done"))
    with open(log, "ab") as fh:
        fh.write(b'{"turn": 2, "fini')  # a crash while turn 2 was logged
    _log_turn(config, Turn(number=2, dir=config.workdir / "0002", stage="done"))
    _log_turn(config, Turn(number=2, dir=config.workdir / "0002", stage="done"))  # logged once
    lines = log.read_text().splitlines()
    assert [json.loads(x)["turn"] for x in lines] == [1, 2]
