"""Nothing lost: 8 clients send 2000 flags while `novelty serve` is killed with SIGKILL twice and restarted.

    python benchmarks/serve_kill.py [--flags 2000] [--clients 8] [--kills 2] [--backend sqlite postgres]

For each backend: a server (shipped windshield detector) on 127.0.0.1 with the flag store in a temporary
SQLite directory or a throwaway PostgreSQL server (tests/postgres_server.py). Clients (`novelty.Client`,
retrying connection errors and 503 with backoff) flag 2000 distinct street-frame JPEGs; after 30 % and 65 %
of the acknowledgements the server gets `kill -9` and is started again on the same port. Afterwards the store
is read directly: every flag a client got a 2xx for must be there exactly once (count, ids, content hashes
and the stored bytes compared), and nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from postgres_server import postgres_server, why_no_postgres
from serve_support import WINDSHIELD, ServerProcess, new_token

import novelty
from novelty.flags import open_flag_store


def distinct_jpegs(n: int) -> list[bytes]:
    """``n`` different JPEGs: the 795 street frames (320×240) at qualities 90, 89, 88, …"""
    from PIL import Image

    from novelty.datasets.windshield import street_frames

    frames = street_frames((320, 240))
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(frames[i % len(frames)]).save(buf, format="JPEG", quality=90 - i // len(frames))
        out.append(buf.getvalue())
    assert len({hashlib.sha256(b).digest() for b in out}) == n
    return out


def run(backend: str, images: list[bytes], n_clients: int, kills: int, work: Path) -> dict:
    token = new_token()
    with ExitStack() as stack:
        if backend == "postgres":
            location = stack.enter_context(postgres_server())
        else:
            location = str(work / f"flags-{backend}")
        srv = ServerProcess(
            WINDSHIELD, flag_store=location, token=token, log_path=work / f"server-{backend}.log"
        )
        t0 = time.perf_counter()
        srv.start()
        restarts = [round(time.perf_counter() - t0, 1)]
        acks: list[tuple[int, str, str, bool]] = []
        failures: list[str] = []
        lock = threading.Lock()
        sources = [f"car-{i % 17}" for i in range(len(images))]

        def client(part: int) -> None:
            c = novelty.Client(srv.url, token, retries=200, backoff_s=0.05, max_backoff_s=1.0, timeout_s=60)
            for i in range(part, len(images), n_clients):
                try:
                    r = c.flag(
                        images[i], prediction="wet" if i % 2 else "dry", source=sources[i], metadata={"i": i}
                    )
                except Exception as e:  # counted: a flag never acknowledged
                    with lock:
                        failures.append(f"{i}: {type(e).__name__}: {e}")
                    continue
                with lock:
                    acks.append((i, r.id, r.sha256, r.created))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        kill_at = [int(len(images) * f) for f in (0.3, 0.65, 0.8, 0.9)[:kills]]
        acked_at_kill = []
        for target in kill_at:
            while len(acks) < target and any(t.is_alive() for t in threads):
                time.sleep(0.005)
            acked_at_kill.append(len(acks))
            srv.kill9()
            t1 = time.perf_counter()
            srv.start()
            restarts.append(round(time.perf_counter() - t1, 1))
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        srv.stop()

        store = open_flag_store(location)
        try:
            stored = store.list(limit=10_000)
            count = store.count()
            by_id = {f.id: f for f in stored}
            acked_ids = {a[1] for a in acks}
            expected = {(hashlib.sha256(images[i]).hexdigest(), sources[i]) for i, *_ in acks}
            bytes_ok = all(hashlib.sha256(store.image(f.id)).hexdigest() == f.sha256 for f in stored)
            meta_ok = all(by_id[a[1]].metadata.get("i") == a[0] for a in acks if a[1] in by_id)
        finally:
            store.close()
        return {
            "backend": backend,
            "flags_sent": len(images),
            "acknowledged_2xx": len(acks),
            "acknowledged_as_already_stored": sum(1 for a in acks if not a[3]),
            "never_acknowledged": len(failures),
            "failure_examples": failures[:3],
            "kills": len(kill_at),
            "acks_when_killed": acked_at_kill,
            "start_and_restart_s": restarts,
            "seconds": round(wall, 1),
            "stored_rows": count,
            "distinct_ids": len(by_id),
            "every_acked_flag_stored_once": acked_ids == set(by_id) and count == len(by_id) == len(acked_ids),
            "content_hashes_and_sources_match": {(f.sha256, f.source) for f in stored} == expected,
            "stored_bytes_match_hashes": bytes_ok,
            "metadata_matches": meta_ok,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flags", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--kills", type=int, default=2, choices=(1, 2, 3, 4))
    ap.add_argument("--backend", nargs="+", default=["sqlite", "postgres"], choices=("sqlite", "postgres"))
    ap.add_argument("--out", default="benchmarks/results/serve_kill.json")
    args = ap.parse_args()
    images = distinct_jpegs(args.flags)
    work = Path(tempfile.mkdtemp(prefix="serve-kill-"))
    results = []
    for backend in args.backend:
        if backend == "postgres" and why_no_postgres():
            print(f"postgres: skipped ({why_no_postgres()})")
            continue
        res = run(backend, images, args.clients, args.kills, work)
        print(json.dumps(res), flush=True)
        results.append(res)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps(
            {
                "command": "python " + " ".join(sys.argv),
                "date": time.strftime("%Y-%m-%d"),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    ok = all(
        r["every_acked_flag_stored_once"]
        and r["content_hashes_and_sources_match"]
        and r["stored_bytes_match_hashes"]
        and r["metadata_matches"]
        and r["never_acknowledged"] == 0
        for r in results
    )
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    print("nothing lost" if ok else f"MISMATCH (server logs and stores kept in {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
