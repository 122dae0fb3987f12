"""Load test of `novelty serve`: 1 client one image at a time vs 8 concurrent clients, same server, same run.

    python benchmarks/bench_serve.py [--images 2000] [--clients 8] [--rounds 4] [--runtime torch --runtime openvino]
        [--out benchmarks/results/serve_load.json]

The server runs the shipped windshield detector (checkpoints/windshield) in a subprocess on 127.0.0.1; the
images are frames of the street video (Debian's opencv-doc, 768×576) encoded as JPEG, cycling through its
795 frames. Each client is a thread with its own keep-alive connection (`novelty.Client`); clients and
server share this machine's cores. Both modes score all the images, alternating in ``--rounds`` slices (1
client, then 8, then 1, …) so that drifting machine load hits both alike. Prints and writes: errors,
p50/p90/p99 latency, images/s, the ratio 8 clients / 1 client (overall and per round), and the server's mean
forward-pass batch size (from /metrics) and its CPU time per image (from /proc: what batching saves, however
busy the machine is with other work).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: benchmarks.machine

from serve_support import WINDSHIELD, ServerProcess, new_token

import novelty
from benchmarks.machine import cpu_flags


def video_jpegs(n_frames: int, quality: int = 90) -> list[bytes]:
    """The street video's frames at their own size (768×576) as JPEG bytes (read with OpenCV)."""
    import cv2

    from novelty.datasets.windshield import find_video

    cap = cv2.VideoCapture(str(find_video()))
    out: list[bytes] = []
    while len(out) < n_frames:
        ok, frame = cap.read()
        if not ok:
            break
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append(buf.tobytes())
    cap.release()
    return out


def run_clients(url: str, token: str, images: list[bytes], n_clients: int) -> dict:
    """``n_clients`` threads take images from a shared counter until all are scored."""
    latencies: list[float] = []
    errors: list[str] = []
    novel = 0
    lock = threading.Lock()
    next_index = 0

    def worker() -> None:
        nonlocal next_index, novel
        client = novelty.Client(url, token, retries=0, timeout_s=120)
        while True:
            with lock:
                i = next_index
                next_index += 1
            if i >= len(images):
                return
            t0 = time.perf_counter()
            try:
                v = client.score(images[i])
            except Exception as e:  # counted and reported, never hidden
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)
                novel += bool(v.is_novel)

    threads = [threading.Thread(target=worker) for _ in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - t0, "latencies": latencies, "errors": errors, "novel": novel}


def summarise(n_clients: int, runs: list[dict], passes: float, imgs: float) -> dict:
    lat = np.array([x for r in runs for x in r["latencies"]]) * 1000
    seconds = sum(r["seconds"] for r in runs)
    errors = [e for r in runs for e in r["errors"]]
    return {
        "clients": n_clients,
        "images": len(lat) + len(errors),
        "ok": len(lat),
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": round(seconds, 1),
        "images_per_s": round(len(lat) / seconds, 1),
        "latency_ms": {
            q: round(float(np.percentile(lat, p)), 1) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))
        }
        if len(lat)
        else {},
        "novel_share": round(sum(r["novel"] for r in runs) / max(1, len(lat)), 3),
        "mean_batch": round(imgs / max(1.0, passes), 2),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_stats(url: str) -> tuple[float, float]:
    """(forward passes, images) from the server's novelty_batch_size histogram."""
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    count = float(re.search(r"^novelty_batch_size_count (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    total = float(re.search(r"^novelty_batch_size_sum (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return count, total


def serving_copy(detector: Path, runtime: str, frames: list[bytes], work: Path) -> tuple[Path, int]:
    """The detector to serve on ``runtime``: the shipped one where its recorded runtime's embeddings stand in
    for ``runtime``'s; otherwise a copy recalibrated with ``runtime`` on every fourth frame (as a user must do
    before serving with it: ``load(dir, runtime=..., recalibrate=images)``). Returns (directory, images used)."""
    from novelty.runtimes import runtimes_agree

    recorded = json.loads((detector / "manifest.json").read_text()).get("runtime", {}).get("name", "torch")
    if runtime == "auto" or runtimes_agree(recorded, runtime):
        return detector, 0
    folder = work / "recalibration"
    folder.mkdir()
    paths = []
    for i, frame in enumerate(frames[::4]):
        (folder / f"f{i:04d}.jpg").write_bytes(frame)
        paths.append(str(folder / f"f{i:04d}.jpg"))
    det = novelty.load(detector, runtime=runtime, recalibrate=paths)
    out = work / f"detector-{runtime}"
    det.save(out)
    return out, len(paths)


def measure(args: argparse.Namespace, frames: list[bytes], runtime: str) -> dict:
    """One server on ``runtime``: 1 client and ``--clients`` clients alternating over ``--rounds`` slices."""
    images = [frames[i % len(frames)] for i in range(args.images)]
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    token = new_token()
    detector, recalibrated = serving_copy(WINDSHIELD, runtime, frames, work)
    srv = ServerProcess(
        detector,
        flag_store=str(work / "flags"),
        token=token,
        log_path=work / "server.log",
        extra_args=[
            "--max-batch",
            str(args.max_batch),
            *(["--max-wait-ms", str(args.max_wait_ms)] if args.max_wait_ms is not None else []),
            *(["--runtime", runtime] if runtime != "torch" else []),
        ],
    )
    t0 = time.perf_counter()
    srv.start()
    startup = time.perf_counter() - t0
    runs: dict[int, list[dict]] = {1: [], args.clients: []}
    passes = {1: [0.0, 0.0], args.clients: [0.0, 0.0]}
    cpu = {1: 0.0, args.clients: 0.0}
    slices = np.array_split(np.arange(len(images)), args.rounds)
    try:
        ready = json.loads(urllib.request.urlopen(srv.url + "/readyz", timeout=10).read())
        wait_ms = ready["batcher"]["max_wait_ms"]  # the server's own choice unless --max-wait-ms was given
        run_clients(srv.url, token, frames[:16], 1)  # warm the connection path
        for r, idx in enumerate(slices):
            for n in (1, args.clients):
                before, cpu0 = batch_stats(srv.url), cpu_seconds(srv.proc.pid)  # type: ignore[union-attr]
                res = run_clients(srv.url, token, [images[i] for i in idx], n)
                after = batch_stats(srv.url)
                cpu[n] += cpu_seconds(srv.proc.pid) - cpu0  # type: ignore[union-attr]
                passes[n][0] += after[0] - before[0]
                passes[n][1] += after[1] - before[1]
                runs[n].append(res)
                print(
                    f"{runtime} round {r + 1}: {n} client(s), {len(idx)} images, {len(idx) / res['seconds']:.1f} img/s",
                    flush=True,
                )
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = {f"{n}_clients": summarise(n, runs[n], *passes[n]) for n in runs}
    for n in runs:  # the server's CPU time per image: what batching saves, whatever else runs on the machine
        results[f"{n}_clients"]["server_cpu_ms_per_image"] = round(1000 * cpu[n] / len(images), 1)

    def rate(run: dict) -> float:
        return len(run["latencies"]) / run["seconds"]

    one, many = results["1_clients"], results[f"{args.clients}_clients"]
    return {
        "runtime": runtime,
        "recalibrated_on_frames": recalibrated,  # 0: served as shipped
        "max_wait_ms": wait_ms,
        "server_startup_s": round(startup, 1),
        "results": results,
        "speedup": round(many["images_per_s"] / one["images_per_s"], 2),
        "speedup_per_round": [
            round(rate(b) / rate(a), 2) for a, b in zip(runs[1], runs[args.clients], strict=True)
        ],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument(
        "--max-wait-ms", type=float, default=None, help="default: the server's (the runtime's own)"
    )
    ap.add_argument(
        "--runtime",
        action="append",
        default=None,
        help="serve with this runtime (repeat to measure several, one server after the other; default torch)",
    )
    ap.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = ap.parse_args()

    frames = video_jpegs(795)
    measured = [measure(args, frames, rt) for rt in (args.runtime or ["torch"])]
    summary = {
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "cpu_flags": cpu_flags(),
        "detector": str(WINDSHIELD.relative_to(WINDSHIELD.parent.parent)),
        "image": f"street video frames 768x576, JPEG q90, ~{np.mean([len(f) for f in frames]) / 1024:.0f} KB",
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "rounds": args.rounds,
        # one runtime: its numbers at the top, as before; several: one entry each
        **(measured[0] if len(measured) == 1 else {"runtimes": measured}),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(
        "\n| runtime | clients | images | errors | p50 ms | p90 ms | p99 ms | images/s | mean batch | server CPU ms/image |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for m in measured:
        for r in m["results"].values():
            lat = r["latency_ms"]
            print(
                f"| {m['runtime']} | {r['clients']} | {r['images']} | {r['errors']} | {lat.get('p50')} | "
                f"{lat.get('p90')} | {lat.get('p99')} | {r['images_per_s']} | {r['mean_batch']} | "
                f"{r['server_cpu_ms_per_image']} |"
            )
    for m in measured:
        print(
            f"{m['runtime']}: {args.clients} clients / 1 client {m['speedup']}x (per round: {m['speedup_per_round']})"
        )
    if len(measured) > 1:
        base = measured[0]["results"]
        for m in measured[1:]:
            ratios = {k: round(m["results"][k]["images_per_s"] / base[k]["images_per_s"], 2) for k in base}
            print(f"{m['runtime']} / {measured[0]['runtime']} images/s: {ratios}")
    errors = sum(r["errors"] for m in measured for r in m["results"].values())
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
