"""One clock helper (novelty.clock): every time the package writes is ISO 8601 in UTC with ``Z``, formatted
there and nowhere else."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from novelty import clock

PACKAGE = Path(__file__).resolve().parents[2] / "novelty"


def test_iso_seconds_and_iso_write_z():
    assert clock.iso_seconds(0) == "1970-01-01T00:00:00Z"
    assert clock.iso_seconds(1.75) == "1970-01-01T00:00:01Z"
    assert clock.iso_seconds(1.75, "auto") == "1970-01-01T00:00:01.750000Z"
    for missing in (None, float("nan"), float("inf"), 1e300):
        assert clock.iso_seconds(missing) is None
    t = datetime(2026, 12, 7, 10, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert clock.iso(t) == "2026-12-07T15:00:00Z"
    assert clock.utc_now_iso().endswith("Z") and clock.parse_time(clock.utc_now_iso()) is not None


def test_no_module_formats_time_by_itself():
    """strftime, fromtimestamp, isoformat and datetime.now live in clock.py; the stdlib-only client sends the
    caller's own datetimes as they are."""
    pattern = re.compile(r"\.strftime\(|fromtimestamp\(|\.isoformat\(|datetime\.now\(|datetime\.utcnow\(")
    allowed = {"clock.py", "serve/client.py", "flags/base.py"}  # flags/base: microseconds ↔ datetime, no text
    found = [
        f"{p.relative_to(PACKAGE)}:{i}"
        for p in sorted(PACKAGE.rglob("*.py"))
        if str(p.relative_to(PACKAGE)) not in allowed
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line) and "local time, for a reader" not in line
    ]
    assert found == []
