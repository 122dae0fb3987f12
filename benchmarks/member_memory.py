"""Peak memory of reading one large zip member through the batch layer (input listing + ``read_bytes``).

    python benchmarks/member_memory.py --mib 255 [--limit-mib 256] [--decode] [--repo PATH]

Writes (once) a zip with one deflated member of ``--mib`` MiB (a JPEG signature, then zeros: small on disk),
lists it with ``expand_inputs(max_member_bytes=...)``, reads it, optionally hands it to ``load_image``, and
prints the outcome and the process's peak RSS (``resource.getrusage``). The package is imported without
``novelty/__init__`` (no torch), so the peak is the reading's own. ``--repo`` measures another checkout
(``--limit-mib 0``: call ``expand_inputs`` without the argument, as releases without it need).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import types
import zipfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, required=True, help="size of the member, MiB")
    ap.add_argument("--limit-mib", type=int, default=256, help="max_member_bytes, MiB (0: leave it out)")
    ap.add_argument("--decode", action="store_true", help="also decode the member with load_image")
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    args = ap.parse_args()
    pkg = types.ModuleType("novelty")
    pkg.__path__ = [str(args.repo / "novelty")]
    sys.modules["novelty"] = pkg
    from novelty.batch.sources import expand_inputs
    from novelty.images import load_image

    path = Path(tempfile.gettempdir()) / f"novelty-member-{args.mib}MiB.zip"
    if not path.exists():
        block = b"\xff\xd8\xff" + b"\0" * ((1 << 20) - 3)
        with (
            zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf,
            zf.open("big.jpg", "w", force_zip64=True) as f,
        ):
            for _ in range(args.mib):
                f.write(block)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    kwargs = {"max_member_bytes": args.limit_mib << 20} if args.limit_mib else {}
    (item,) = expand_inputs([os.fspath(path)], **kwargs)
    outcome = ""
    try:
        data = item.read_bytes()
        outcome = f"read {len(data):,} bytes"
        del data
        if args.decode:
            load_image(item)
    except Exception as e:  # the outcome is what we report
        outcome = f"{outcome}, then " if outcome else ""
        outcome += f"{type(e).__name__}: {str(e)[-70:]}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"member {args.mib} MiB, limit {args.limit_mib or 'default'} MiB: {outcome}; "
        f"peak RSS {peak / 1024:.0f} MiB (before reading {before / 1024:.0f} MiB), {time.perf_counter() - t:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
