"""Kill `novelty score` with SIGKILL at random moments, resume it, and compare with an uninterrupted run.

    python benchmarks/kill_resume.py [--kills 3] [--out-format parquet]

Uses all 2000 textile images (conformal-clip-data) and a detector fitted on 100 nominal ones. Prints the
rows present after each kill, and whether the final file equals the uninterrupted run's: same keys in the
same order, no duplicates, no gaps, identical scores.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import novelty
from novelty.batch.results import read_results
from novelty.datasets import textile


def count_done(out: Path) -> int:
    """Rows checkpointed so far: one JSON line per row in the part files of the work directory."""
    parts = Path(str(out) + ".parts")
    if not parts.is_dir():
        return 0
    done = [p for p in parts.iterdir() if re.fullmatch(r"part-\d{6,}\.jsonl", p.name)]
    return sum(p.read_bytes().count(b"\n") for p in done)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--out-format", default="parquet", choices=("parquet", "csv", "jsonl"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill-resume-"))
    data = textile()
    inputs = work / "inputs"
    inputs.mkdir()
    for kind, paths in data.items():
        for p in paths:
            (inputs / f"{kind}_{p.name}").symlink_to(p)
    n = sum(len(v) for v in data.values())
    det_dir = work / "det"
    novelty.NoveltyDetector().fit(data["nominal"][:100]).save(det_dir)
    base = [sys.executable, "-m", "novelty.cli", "score", str(det_dir), str(inputs), "--chunk-rows", "128"]
    ref = work / f"ref.{args.out_format}"
    t = time.perf_counter()
    subprocess.run([*base, "--out", str(ref)], check=True, capture_output=True)
    t_ref = time.perf_counter() - t
    print(f"{n} inputs; uninterrupted run: {t_ref:.1f} s")
    out = work / f"killed.{args.out_format}"
    for k in range(args.kills):
        delay = rng.uniform(0.2, 0.8) * t_ref / 2
        proc = subprocess.Popen(
            [*base, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print(f"kill {k + 1} after {delay:.1f} s: {count_done(out)} of {n} rows on disk")
    t = time.perf_counter()
    done = subprocess.run([*base, "--out", str(out)], capture_output=True, text=True)
    print(
        f"final resumed run: exit {done.returncode}, {time.perf_counter() - t:.1f} s; {done.stdout.strip()}"
    )
    a, b = read_results(ref), read_results(out)
    keys_a, keys_b = [r["key"] for r in a], [r["key"] for r in b]
    same_order = keys_a == keys_b
    dupes = len(keys_b) - len(set(keys_b))
    gaps = len(set(keys_a) - set(keys_b))

    def same(x: object, y: object) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-9 * max(1.0, abs(x))
        return x == y

    identical = same_order and all(same(ra[c], rb[c]) for ra, rb in zip(a, b, strict=True) for c in ra)
    print(
        f"rows: reference {len(a)}, resumed {len(b)}; duplicates {dupes}; gaps {gaps}; same order {same_order}"
    )
    print(f"resumed output equals the uninterrupted run: {identical}")
    return 0 if identical and len(b) == n else 1


if __name__ == "__main__":
    sys.exit(main())
