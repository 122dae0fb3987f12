"""Compare two runs of the OOD benchmark value by value, timings left out: what a change that must not move any
number (a refactor) shows.

    python -m benchmarks.ood.diff BEFORE/ood_benchmark.json AFTER/ood_benchmark.json [--tolerance 1e-9]

Prints how many values were compared, every value that differs beyond the tolerance (numbers) or at all (text),
and exits 1 when any does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

#: keys whose values are wall-clock facts of a run, not results
TIMING_KEYS = ("seconds", "date", "time", "rss", "elapsed", "throughput", "per_s", "img_s")


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a/b[0]": leaf}`` for every leaf of nested dicts and lists."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}/{k}"))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def differences(before: Any, after: Any, tolerance: float = 0.0) -> tuple[int, list[tuple[str, Any, Any]]]:
    """(values compared, [(key, before, after)] that differ), timing keys left out."""
    a, b = flatten(before), flatten(after)
    keys = sorted(k for k in set(a) | set(b) if not any(t in k.lower() for t in TIMING_KEYS))
    out = []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if x == y or (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tolerance:
                continue
        elif x == y:
            continue
        out.append((k, x, y))
    return len(keys), out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ood.diff", description=__doc__.split("\n\n")[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="largest absolute difference of a number that counts as equal",
    )
    a = p.parse_args(argv)
    n, diff = differences(json.loads(a.before.read_text()), json.loads(a.after.read_text()), a.tolerance)
    print(f"{n} values compared (timings left out), {len(diff)} differ")
    for k, x, y in diff:
        print(f"  {k}: {x!r} → {y!r}")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
