"""On the command line a Python warning is one plain line on stderr, ``warning: MESSAGE``; with ``-v`` it keeps
Python's form (file and line); a program using the library keeps Python's warnings."""

from __future__ import annotations

import warnings

import pytest

from novelty.calibration import check_alpha
from novelty.cli import EXIT_OK, main
from novelty.cli import score as score_cli


@pytest.fixture
def warning_command(monkeypatch, tmp_path):
    """``novelty report …`` whose work raises a real warning of the library (too few calibration scores)."""

    def report(args):
        check_alpha(0.05, 3)
        return EXIT_OK

    monkeypatch.setattr(score_cli, "_cmd_report", report)
    return ["report", str(tmp_path / "r.parquet"), "--out", str(tmp_path / "r.html")]


def test_a_warning_is_one_plain_line_on_stderr(warning_command, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        before = warnings.showwarning
        assert main(warning_command) == EXIT_OK
        assert warnings.showwarning is before  # library users keep Python's warnings
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [
        "warning: with 3 calibration scores the smallest possible p-value is 0.25 ≥ alpha=0.05: nothing can ever "
        "be flagged. Use at least 20 calibration images."
    ]


def test_verbose_keeps_the_file_and_line_of_a_warning(warning_command, capsys):
    """With -v the warning goes to Python's handler as it is (here pytest's), with its file and line."""
    with pytest.warns(UserWarning, match="with 3 calibration scores") as seen:
        assert main(["-v", *warning_command]) == EXIT_OK
    assert seen[0].filename.endswith(".py") and seen[0].lineno > 0
    assert "warning:" not in capsys.readouterr().err


def test_a_warning_outside_the_command_line_is_pythons(capsys):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        check_alpha(0.05, 3)
    assert len(seen) == 1 and seen[0].category is UserWarning
    assert "warning:" not in capsys.readouterr().err
