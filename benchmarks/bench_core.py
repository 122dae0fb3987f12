"""Core throughput benchmark: image embedding from files, and exact kNN queries.

What is measured, all in one process, each timing repeated ``--repeats`` times (variants interleaved, round
robin, so that drift in machine load hits them alike) and summarised by its median:

1. **Embedding, end to end from JPEG files** (images/s), on two real image sets:

   - *textile*: 250×250 JPEGs from ``conformal_clip_data`` (smaller than the 256 px resize step, so JPEG draft
     mode cannot help);
   - *large photos*: the photos of ``skimage.data`` upscaled to 1024 px on the long side, with small random
     crops / flips, saved as JPEG quality 90 into a temporary folder (draft mode decodes them at 1/2 scale).

   Methods: a *naive* baseline (a plain PIL loop: ``Image.open(p).convert("RGB")``, the embedder's own
   ``transform``, ``torch.stack`` per batch of ``batch_size``, a forward pass of the same ``embedder.model``
   under ``torch.inference_mode()``, L2 normalisation) against ``Embedder.embed(paths)`` with its default
   settings and with explicit ``num_workers`` values. Embeddings of each variant are compared with the
   baseline's (max abs difference, min / mean cosine similarity). A *model only* row (forward passes over an
   already preprocessed batch) gives the ceiling that no decoding pipeline can beat.

2. **kNN queries** (queries/s): ``N`` random unit vectors (float32, seed 0) and ``Q`` random unit queries;
   a naive numpy brute force (full squared-distance matrix by matmul per chunk of 500 queries, then
   ``argpartition`` + sort) against ``EmbeddingIndex(metric="cosine").search``. Ids must agree on ≥ 99.9 % of
   entries and distances to 1e-5.

Prints machine information and a markdown table; ``--json PATH`` also writes every raw timing. The CPU time
that *other* processes used during each run is read from ``/proc/stat`` and reported, because a 2-core
machine shared with anything else gives meaningless numbers.

    python benchmarks/bench_core.py                       # 256 textile images, 128 photos, 3 repeats
    python benchmarks/bench_core.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: benchmarks.machine

import novelty
from benchmarks.machine import cpu_model
from novelty import Embedder, EmbeddingIndex

#: skimage.data photos used for the large-photo set (those that need a download are skipped).
SKIMAGE_PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "cell",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "retina",
    "rocket",
    "stereo_motorcycle",
)


@dataclass
class Row:
    """One line of the result table."""

    benchmark: str
    workload: str
    method: str
    n: int
    unit: str
    runs_s: list[float]
    foreign_cores: list[float]  # per run: cores' worth of CPU that other processes used meanwhile
    ratio: float | None = None  # median throughput / the baseline's median throughput
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_s(self) -> float:
        return statistics.median(self.runs_s)

    @property
    def rate(self) -> float:
        return self.n / self.median_s

    @property
    def best_rate(self) -> float:
        return self.n / min(self.runs_s)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# machine
class CpuMonitor:
    """CPU seconds that *other* processes used while the benchmark ran (from /proc/stat, Linux only).

    The machine may be shared; a timing taken while something else was busy on 2 cores is not trustworthy,
    so the amount of foreign CPU use is reported next to the results.
    """

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = self._sample()

    @staticmethod
    def _own_cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, *rest = (int(v) for v in fields)
        busy = user + nice + system + irq + softirq + (rest[0] if rest else 0)  # + steal
        return busy / self.hz, self._own_cpu(), time.perf_counter()

    def foreign(self) -> dict[str, float] | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self.start, end, strict=True))
        other = max(0.0, busy - own)
        return {"other_cpu_s": other, "wall_s": wall, "other_cores_avg": other / wall if wall > 0 else 0.0}


def machine_info() -> dict[str, Any]:
    import faiss
    import PIL
    import timm
    from PIL import features

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "novelty": novelty.__version__,
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        # allocator and threading settings change CPU inference speed a lot; record them
        "env": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith(("MALLOC_", "OMP_", "MKL_", "GOMP_", "KMP_")) or k == "LD_PRELOAD"
        },
    }
    return info


# ----------------------------------------------------------------------------------------------------------
# data
def textile_paths(n: int, seed: int = 0) -> list[Path]:
    """``n`` textile JPEGs (250x250) from the nominal / local / global folders (repeated if n > 2000)."""
    import conformal_clip_data as c

    folders = (c.nominal_dir(), c.local_dir(), c.global_dir())
    files = sorted(f for d in folders for f in Path(d).iterdir() if f.suffix == ".jpg")
    if not files:
        raise SystemExit("conformal_clip_data ships no JPEGs here")
    rng = np.random.default_rng(seed)
    if n <= len(files):
        picks = np.sort(rng.choice(len(files), size=n, replace=False))
        return [files[i] for i in picks]
    return [files[i % len(files)] for i in range(n)]


def skimage_photos(min_side: int = 300) -> list[tuple[str, Image.Image]]:
    """The RGB / grey photos of ``skimage.data`` with both sides ≥ ``min_side``, as RGB PIL images."""
    import skimage.data

    out: list[tuple[str, Image.Image]] = []
    for name in SKIMAGE_PHOTOS:
        try:
            obj = getattr(skimage.data, name)()
        except Exception as e:  # some need a download (pooch); skip them offline
            log(f"  skip skimage.data.{name}: {type(e).__name__}")
            continue
        arrays = list(obj) if isinstance(obj, tuple) else [obj]
        for j, arr in enumerate(arrays):
            if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or min(arr.shape[:2]) < min_side:
                continue
            if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3):
                out.append((f"{name}{j if len(arrays) > 1 else ''}", Image.fromarray(arr).convert("RGB")))
    return out


def make_large_photos(out_dir: Path, n: int, long_side: int = 1024, seed: int = 0) -> list[Path]:
    """Write ``n`` JPEGs (quality 90, ``long_side`` px) of randomly cropped / flipped skimage photos."""
    bases = skimage_photos()
    if not bases:
        raise SystemExit("no skimage.data photo could be loaded")
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    for i in range(n):
        name, img = bases[i % len(bases)]
        w, h = img.size
        cw, ch = (round(s * rng.uniform(0.85, 1.0)) for s in (w, h))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = img.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        scale = long_side / max(cw, ch)
        crop = crop.resize((round(cw * scale), round(ch * scale)), Image.Resampling.LANCZOS)
        p = out_dir / f"{i:04d}_{name}.jpg"
        crop.save(p, format="JPEG", quality=90)
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------------------------------------
# embedding
def naive_embed(embedder: Embedder, paths: Sequence[Path], batch_size: int) -> np.ndarray:
    """The baseline: a plain PIL + timm loop in the calling process."""
    out = []
    model, transform = embedder.model, embedder.transform
    for s in range(0, len(paths), batch_size):
        tensors = []
        for p in paths[s : s + batch_size]:
            with Image.open(p) as im:
                tensors.append(transform(im.convert("RGB")))
        with torch.inference_mode():
            feats = torch.nn.functional.normalize(
                model(torch.stack(tensors).to(embedder.device)).float(), dim=1
            )
        out.append(feats.cpu().numpy())
    return np.concatenate(out).astype(np.float32, copy=False)


def embed_with_workers(embedder: Embedder, workers: int | None) -> Callable[[Sequence[Path]], np.ndarray]:
    def run(paths: Sequence[Path]) -> np.ndarray:
        saved = embedder.num_workers
        embedder.num_workers = workers
        try:
            return embedder.embed(list(paths), progress=False)
        finally:
            embedder.num_workers = saved

    return run


def default_workers(embedder: Embedder, n: int) -> int:
    """What ``num_workers=None`` resolves to inside ``Embedder.embed`` (mirrors its rule)."""
    return embedder.workers_for(n)


@dataclass(frozen=True)
class QuietPolicy:
    """How to keep other processes out of the timings on a shared machine.

    Before each run, wait (up to ``max_wait_s``) until other processes use less than ``threshold`` cores;
    a run during which they used more is repeated, at most ``retries`` times. ``threshold <= 0``: never wait.
    """

    threshold: float = 0.2
    retries: int = 2
    max_wait_s: float = 120.0

    def wait(self) -> float:
        """Block until the machine has been quiet for 2 s in a row; return the seconds waited."""
        if self.threshold <= 0:
            return 0.0
        t0 = time.perf_counter()
        quiet = 0
        while quiet < 2 and time.perf_counter() - t0 < self.max_wait_s:
            monitor = CpuMonitor()
            time.sleep(1.0)
            fc = monitor.foreign()
            quiet = quiet + 1 if fc is None or fc["other_cores_avg"] < self.threshold else 0
        return time.perf_counter() - t0


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, its wall time, and how many cores' worth of CPU other processes used meanwhile."""
    monitor = CpuMonitor()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    fc = monitor.foreign()
    return out, dt, (fc["other_cores_avg"] if fc else float("nan"))


def interleaved_timings(
    variants: dict[str, Callable[[], Any]], repeats: int, label: str, policy: QuietPolicy
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, Any]]:
    """Run every variant ``repeats`` times, round robin, each run in a quiet moment (see :class:`QuietPolicy`).

    Returns the wall times, the foreign CPU load during each kept run, and each variant's last output.
    """
    times: dict[str, list[float]] = {k: [] for k in variants}
    foreign: dict[str, list[float]] = {k: [] for k in variants}
    outputs: dict[str, Any] = {}
    for r in range(repeats):
        for name, fn in variants.items():
            for attempt in range(policy.retries + 1):
                waited = policy.wait()
                outputs[name], dt, other = timed(fn)
                log(
                    f"  [{label}] repeat {r + 1}/{repeats} {name}: {dt:.2f} s "
                    f"(other processes: {other:.2f} cores; waited {waited:.0f} s for quiet)"
                )
                if policy.threshold <= 0 or other < policy.threshold:
                    break
                if attempt < policy.retries:
                    log("    disturbed by other processes: run discarded, repeating")
            times[name].append(dt)
            foreign[name].append(other)
    return times, foreign, outputs


def compare_embeddings(ref: np.ndarray, other: np.ndarray) -> dict[str, float]:
    cos = np.sum(ref.astype(np.float64) * other.astype(np.float64), axis=1)  # both are unit rows
    return {
        "max_abs_diff": float(np.max(np.abs(ref - other))),
        "min_cosine": float(cos.min()),
        "mean_cosine": float(cos.mean()),
    }


def bench_embedding(
    embedder: Embedder,
    workload: str,
    paths: Sequence[Path],
    repeats: int,
    workers: Sequence[int],
    policy: QuietPolicy,
) -> list[Row]:
    n, bs = len(paths), embedder.batch_size
    for p in paths:  # warm the page cache so that no variant pays for the first read from disk
        p.read_bytes()
    dflt = default_workers(embedder, n)
    variants: dict[str, Callable[[], np.ndarray]] = {
        "naive PIL loop": lambda: naive_embed(embedder, paths, bs),
        f"Embedder.embed default (num_workers={dflt})": lambda: embed_with_workers(embedder, None)(paths),
    }
    for w in workers:
        if w != dflt:
            variants[f"Embedder.embed num_workers={w}"] = lambda w=w: embed_with_workers(embedder, w)(paths)
    times, foreign, outputs = interleaved_timings(variants, repeats, workload, policy)
    base_rate = n / statistics.median(times["naive PIL loop"])
    rows = []
    for name, ts in times.items():
        row = Row("embed", workload, name, n, "img/s", ts, foreign[name])
        if name != "naive PIL loop":
            row.ratio = row.rate / base_rate
            row.extra = compare_embeddings(outputs["naive PIL loop"], outputs[name])
            log(
                f"  [{workload}] {name} vs naive: max|Δ| = {row.extra['max_abs_diff']:.3g}, "
                f"cosine min {row.extra['min_cosine']:.6f} / mean {row.extra['mean_cosine']:.6f}"
            )
        rows.append(row)
    return rows


def bench_model_only(embedder: Embedder, batches: int, repeats: int, policy: QuietPolicy) -> Row:
    """Forward passes over one preprocessed batch: the ceiling for any decoding pipeline."""
    shape = (embedder.batch_size, *embedder.data_config["input_size"])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    embedder.embed_tensor(x)  # warm-up

    def forward() -> None:
        for _ in range(batches):
            embedder.embed_tensor(x)

    times, foreign, _ = interleaved_timings({"forward": forward}, repeats, "model only", policy)
    workload = "preprocessed {}x{} tensors".format(*shape[-2:])
    return Row(
        "embed",
        workload,
        "model forward only (ceiling)",
        batches * shape[0],
        "img/s",
        times["forward"],
        foreign["forward"],
    )


# ----------------------------------------------------------------------------------------------------------
# kNN
def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def naive_knn(xb: np.ndarray, q: np.ndarray, k: int, chunk: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN by brute force: full squared-distance matrix per query chunk, argpartition, sort."""
    xb_sq = np.einsum("ij,ij->i", xb, xb)
    D = np.empty((q.shape[0], k), dtype=np.float32)
    ids = np.empty((q.shape[0], k), dtype=np.int64)
    for s in range(0, q.shape[0], chunk):
        qc = q[s : s + chunk]
        d2 = np.einsum("ij,ij->i", qc, qc)[:, None] + xb_sq[None, :] - 2.0 * (qc @ xb.T)
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        pd = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(pd, axis=1)
        ids[s : s + chunk] = np.take_along_axis(part, order, axis=1)
        D[s : s + chunk] = np.sqrt(np.maximum(np.take_along_axis(pd, order, axis=1), 0.0))
    return D, ids


def bench_knn(
    n_index: int, n_queries: int, dim: int, k: int, repeats: int, policy: QuietPolicy
) -> tuple[list[Row], dict[str, Any]]:
    rng = np.random.default_rng(0)
    xb = unit_rows(rng, n_index, dim)
    q = unit_rows(rng, n_queries, dim)
    t0 = time.perf_counter()
    index = EmbeddingIndex(metric="cosine").add(xb)
    build_s = time.perf_counter() - t0
    workload = f"N={n_index:,} d={dim} k={k}"
    variants: dict[str, Callable[[], Any]] = {
        "naive numpy brute force": lambda: naive_knn(xb, q, k),
        "EmbeddingIndex.search (Flat)": lambda: index.search(q, k),
    }
    index.search(q[:8], k)  # warm-up (thread pools, first allocation)
    naive_knn(xb, q[:8], k)
    times, foreign, outputs = interleaved_timings(variants, repeats, "kNN", policy)
    (Dn, In), (Di, Ii) = outputs["naive numpy brute force"], outputs["EmbeddingIndex.search (Flat)"]
    checks = {
        "index_build_s": build_s,
        "id_agreement": float(np.mean(In == Ii)),
        "max_distance_diff": float(np.max(np.abs(Dn.astype(np.float64) - Di.astype(np.float64)))),
    }
    checks["ok"] = checks["id_agreement"] >= 0.999 and checks["max_distance_diff"] <= 1e-5
    base = n_queries / statistics.median(times["naive numpy brute force"])
    rows = []
    for name, ts in times.items():
        row = Row("kNN", workload, name, n_queries, "queries/s", ts, foreign[name])
        if name != "naive numpy brute force":
            row.ratio = row.rate / base
            row.extra = checks
        rows.append(row)
    return rows, checks


# ----------------------------------------------------------------------------------------------------------
def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| benchmark | workload | method | n | median s | median throughput | best | vs naive | other load |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "—"
        lines.append(
            f"| {r.benchmark} | {r.workload} | {r.method} | {r.n} | {r.median_s:.2f} | "
            f"{r.rate:,.1f} {r.unit} | {r.best_rate:,.1f} | {ratio} | {max(r.foreign_cores):.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-images", type=int, default=None, help="textile JPEGs (default 256; quick 32)")
    ap.add_argument("--n-large", type=int, default=None, help="1024 px photos (default 128; quick 16)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per variant (default 3; quick 1)")
    ap.add_argument("--workers", default="0,2", help="num_workers variants, comma separated")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--model-batches", type=int, default=None, help="batches for the model-only row (default 4)"
    )
    ap.add_argument("--n-index", type=int, default=None, help="indexed vectors for kNN (default 20000)")
    ap.add_argument("--n-queries", type=int, default=None, help="kNN queries (default 2000)")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--skip-embed", action="store_true", help="run only the kNN benchmark")
    ap.add_argument("--skip-knn", action="store_true", help="run only the embedding benchmark")
    ap.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.2,
        help="wait for / repeat runs while other processes use more cores than this (0: never; default 0.2)",
    )
    ap.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run (default 2)")
    ap.add_argument("--max-wait", type=float, default=120.0, help="longest wait for quiet, s (default 120)")
    ap.add_argument("--quick", action="store_true", help="small sizes and one repeat: a smoke test")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write all results as JSON")
    args = ap.parse_args(argv)
    defaults = {
        "n_images": (256, 32),
        "n_large": (128, 16),
        "repeats": (3, 1),
        "model_batches": (4, 1),
        "n_index": (20000, 2000),
        "n_queries": (2000, 200),
    }
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.repeats < 1:
        ap.error("--repeats must be ≥ 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    info = machine_info()
    print("## machine\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print()
    t_start = time.perf_counter()
    monitor = CpuMonitor()
    rows: list[Row] = []
    knn_checks: dict[str, Any] = {}
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    policy = QuietPolicy(args.quiet_threshold, args.retries, args.max_wait)
    if not args.skip_embed:
        embedder = Embedder(batch_size=args.batch_size)
        log(f"{embedder!r}; min_size={embedder.min_size}")
        rows.append(bench_model_only(embedder, args.model_batches, args.repeats, policy))
        if args.n_images > 0:
            rows += bench_embedding(
                embedder, "textile 250x250 JPEG", textile_paths(args.n_images), args.repeats, workers, policy
            )
        if args.n_large > 0:
            with tempfile.TemporaryDirectory(prefix="bench_core_") as tmp:
                t0 = time.perf_counter()
                paths = make_large_photos(Path(tmp), args.n_large)
                mb = sum(p.stat().st_size for p in paths) / 2**20
                with Image.open(paths[0]) as im:
                    size = im.size
                dt = time.perf_counter() - t0
                log(f"  wrote {len(paths)} large photos ({mb:.1f} MiB, e.g. {size}) in {dt:.1f} s")
                rows += bench_embedding(
                    embedder, "photos ~1024 px JPEG q90", paths, args.repeats, workers, policy
                )
    if not args.skip_knn:
        knn_rows, knn_checks = bench_knn(args.n_index, args.n_queries, args.dim, args.k, args.repeats, policy)
        rows += knn_rows
    info["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["foreign_cpu"] = monitor.foreign()
    total = time.perf_counter() - t_start

    print(f"## results (median of {args.repeats} run{'' if args.repeats == 1 else 's'})\n")
    print(markdown_table(rows))
    print(
        "\n*best*: throughput of the fastest run. *other load*: the most, over this row's runs, of the average "
        "number of cores that other processes kept busy during a run (from /proc/stat); runs above "
        "--quiet-threshold were discarded and repeated (up to --retries times)."
    )
    print("\n## checks\n")
    for r in rows:
        if r.benchmark == "embed" and r.extra:
            print(
                f"- {r.workload} / {r.method} vs naive: max |Δ| = {r.extra['max_abs_diff']:.3g}, "
                f"cosine min {r.extra['min_cosine']:.6f}, mean {r.extra['mean_cosine']:.6f}"
            )
    if knn_checks:
        print(
            f"- kNN: ids agree on {100 * knn_checks['id_agreement']:.3f} % of entries, max |Δdistance| = "
            f"{knn_checks['max_distance_diff']:.2e} → {'OK' if knn_checks['ok'] else 'MISMATCH'}; "
            f"EmbeddingIndex.add took {knn_checks['index_build_s']:.2f} s"
        )
    print(f"- load average at end: {info['loadavg_end']}; total benchmark time {total:.0f} s")
    if info["foreign_cpu"] is not None:
        fc = info["foreign_cpu"]
        print(
            f"- other processes used {fc['other_cpu_s']:.0f} CPU-s over the whole benchmark, waits and "
            f"discarded runs included (≈ {fc['other_cores_avg']:.2f} of {os.cpu_count()} cores on average)"
        )
    if args.json is not None:
        payload = {
            "machine": info,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "total_s": total,
            "rows": [{**asdict(r), "median_s": r.median_s, "rate": r.rate} for r in rows],
            "knn_checks": knn_checks,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        log(f"wrote {args.json}")
    return 0 if not knn_checks or knn_checks["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
