"""Saving and loading the same directory at the same time: every load gives a whole detector or a
NoveltyError, never a detector made of two artifacts (benchmarks/save_load_race.py, shortened)."""

from __future__ import annotations

import pytest

from benchmarks.save_load_race import race


@pytest.mark.slow
def test_loads_during_saves_give_whole_detectors_or_novelty_errors(tmp_path):
    res = race(seconds=8.0, workdir=tmp_path)
    counts = res["counts"]
    print(res)
    assert res["saves"]["saves"] >= 4, res
    assert counts["mixed"] == 0, res["mixed_examples"]
    assert res["anything_else"] == 0, counts
    assert counts["whole A"] + counts["whole B"] > 0, counts
