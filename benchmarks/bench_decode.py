"""JPEG decoding + preprocessing to the backbone's input tensor in ONE thread: today's reader against other
decoders, on the street JPEGs and on photos of other sizes, with the pixels and embeddings each one gives.

    OMP_NUM_THREADS=1 python -m benchmarks.bench_decode [--n 1000] [--rounds 5] [--json out.json]

Image sets:
- ``street``: the 768×576 street JPEGs (q90) of ``benchmarks/bench_batch.py`` (the windshield scenario's frames);
- ``opencv-doc``: every JPEG in Debian's ``opencv-doc`` ``examples/data`` as it ships (194–1282 px; greyscale and
  progressive files among them);
- ``large``: ``skimage.data`` photos written as 2048 px JPEGs (q90) by ``bench_core.make_large_photos``.

Candidates; each ends in the same ``(n, 3, 224, 224)`` float tensor, built in batches of 32:
- ``pil-draft`` (today): ``novelty.load_image(min_size=...)`` (PIL with JPEG draft mode) + the Embedder's
  preprocessing (resize + crop in one PIL call, normalised per batch);
- ``pil-full``: a full-size decode + the timm transform (the reference of the pixel columns);
- ``simplejpeg``: libjpeg-turbo via ``simplejpeg.decode_jpeg`` at PIL's draft scale (``min_height`` /
  ``min_width`` set to the size draft mode decodes at) + the same preprocessing; ``simplejpeg-n/8``: at the
  smallest of libjpeg-turbo's n/8 scales whose sides cover the resize target; ``simplejpeg-fast``: draft scale
  with ``fastdct`` and ``fastupsample``;
- ``pyturbojpeg``: needs the system ``libturbojpeg``: skipped (with the reason) when absent;
- ``pyvips``: ``jpegload_buffer(shrink=...)`` at the draft scale + the same preprocessing; ``pyvips-thumbnail``:
  libvips's own shrink-on-load + resize (``thumbnail_buffer``), then the centre crop;
- ``opencv``: ``cv2.imread`` with ``IMREAD_REDUCED_COLOR_2/4/8`` at the draft scale + the same preprocessing;
  ``opencv-resize``: the same decode, then ``cv2.resize`` (``INTER_AREA``) and the centre crop;
- Pillow-SIMD is not measured: it installs as ``PIL`` and so cannot sit beside Pillow in one environment.

Speed: img/s of each candidate over a whole set, rounds alternating (the order rotates each round), the median
of the rounds; the ratio is against today's median in the same run. Pixels: the final normalised tensor against
the timm transform of a full PIL decode (max and mean absolute difference over every image), and against today's
tensor. Embeddings: the cosine of the backbone's embedding to today's on ``--cosine-n`` images of each set.
Stages: on 200 street JPEGs, the same alternating rounds time today's decode alone, simplejpeg's decode alone
and the preprocessing alone (ms per image), to show where today's time goes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

import novelty
from benchmarks.machine import cpu_flags, cpu_model
from novelty.images import load_image

BATCH = 32
#: CPU flags worth naming for decoding and inference speed
FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


@dataclass
class Candidate:
    name: str
    what: str
    per_image: Callable[[Path], Any]
    batch: Callable[[list[Any]], torch.Tensor]
    rates: dict[str, list[float]] = field(default_factory=dict)


def cpu_info() -> dict[str, Any]:
    flags = set(cpu_flags(simd_only=False))
    return {
        "model": cpu_model(),
        "cpus": os.cpu_count(),
        "flags": {f: f in flags for f in FLAGS},
        "all_flags": sorted(flags),
    }


def draft_scale(size: tuple[int, int], min_size: int) -> int:
    """The DCT scale denominator PIL's ``draft`` picks for ``min_size`` (``JpegImageFile.draft``)."""
    scale = min(size[0] // min_size, size[1] // min_size)
    return next((s for s in (8, 4, 2) if scale >= s), 1)


def jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        return img.size


def image_sets(n: int, n_large: int, work: Path) -> dict[str, list[Path]]:
    from benchmarks.bench_batch import make_photos
    from benchmarks.bench_core import make_large_photos
    from novelty.datasets.windshield import OPENCV_DOC_DIR

    sets = {"street": make_photos(n)}
    doc = Path(os.environ.get("NOVELTY_OPENCV_DOC") or OPENCV_DOC_DIR) / "examples" / "data"
    sets["opencv-doc"] = sorted(doc.glob("*.jpg"))
    large = work / "large"
    large.mkdir()
    sets["large"] = make_large_photos(large, n_large, long_side=2048)
    return {k: v for k, v in sets.items() if v}


def candidates(emb: novelty.Embedder) -> tuple[list[Candidate], dict[str, str]]:
    """The decoders installed here, each ending in the model's input tensor; and the reasons of those skipped."""
    pre = emb.preprocess
    ms = emb.min_size
    assert ms is not None and pre.fast is not None
    size = pre.fast["size"]
    ch, cw = pre.fast["crop"]
    skipped: dict[str, str] = {}

    def stack(items: list[Any]) -> torch.Tensor:
        return torch.stack(items)

    def resize_target(w: int, h: int) -> tuple[int, int, int, int]:
        """timm's resize of the short side to ``size`` and the centre crop's corner (as the Preprocessor)."""
        short, long_ = (w, h) if w <= h else (h, w)
        new_long = int(size * long_ / short)
        new_w, new_h = (size, new_long) if w <= h else (new_long, size)
        return new_w, new_h, int(round((new_h - ch) / 2.0)), int(round((new_w - cw) / 2.0))

    out = [
        Candidate(
            "pil-draft",
            "today: PIL with JPEG draft mode + the fused preprocessing",
            lambda p: pre(load_image(p, min_size=ms)),
            pre.batch,
        ),
        Candidate(
            "pil-full",
            "PIL full-size decode + timm transform (the reference)",
            lambda p: emb.transform(load_image(p)),
            stack,
        ),
    ]
    try:
        import simplejpeg

        def sj(p: Path, *, fast: bool = False, n8: bool = False) -> Any:
            data = p.read_bytes()
            if n8:
                mh = mw = ms
            else:
                h, w = simplejpeg.decode_jpeg_header(data)[:2]
                s = draft_scale((w, h), ms)
                mh, mw = -(-h // s), -(-w // s)
            arr = simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_height=mh, min_width=mw, fastdct=fast, fastupsample=fast
            )
            return pre(Image.fromarray(arr))

        out += [
            Candidate(
                "simplejpeg",
                f"simplejpeg {simplejpeg.__version__} at the draft scale + the fused preprocessing",
                sj,
                pre.batch,
            ),
            Candidate(
                "simplejpeg-n/8",
                "simplejpeg at the smallest n/8 scale covering the resize target + the fused preprocessing",
                lambda p: sj(p, n8=True),
                pre.batch,
            ),
            Candidate(
                "simplejpeg-fast",
                "simplejpeg at the draft scale, fastdct + fastupsample, + the fused preprocessing",
                lambda p: sj(p, fast=True),
                pre.batch,
            ),
        ]
    except ImportError as e:
        skipped["simplejpeg"] = f"not installed ({e})"
    try:
        from turbojpeg import TurboJPEG

        tj = TurboJPEG()

        def pyturbojpeg(p: Path) -> Any:
            data = p.read_bytes()
            w, h = jpeg_size(data)
            s = draft_scale((w, h), ms)
            arr = tj.decode(data, pixel_format=0, scaling_factor=(1, s))  # TJPF_RGB
            return pre(Image.fromarray(arr))

        out.append(Candidate("pyturbojpeg", "PyTurboJPEG at the draft scale", pyturbojpeg, pre.batch))
    except ImportError as e:
        skipped["pyturbojpeg"] = f"not installed ({e})"
    except (OSError, RuntimeError) as e:  # the package without the system library
        skipped["pyturbojpeg"] = f"the system libturbojpeg is missing: {str(e).splitlines()[0]}"
    try:
        os.environ.setdefault("VIPS_CONCURRENCY", "1")
        import pyvips

        pyvips.cache_set_max(0)
        pyvips.concurrency_set(1)
        vips_version = ".".join(str(pyvips.version(i)) for i in range(3))

        def vips_rgb(img: Any) -> np.ndarray:
            arr = img.numpy()
            if arr.ndim == 2:
                arr = arr[:, :, None]
            return np.ascontiguousarray(np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[:, :, :3])

        def vips_load(p: Path) -> Any:
            data = p.read_bytes()
            w, h = jpeg_size(data)
            img = pyvips.Image.jpegload_buffer(data, shrink=draft_scale((w, h), ms), access="sequential")
            return pre(Image.fromarray(vips_rgb(img)))

        def vips_thumb(p: Path) -> Any:
            data = p.read_bytes()
            w, h = jpeg_size(data)
            new_w, new_h, top, left = resize_target(w, h)
            img = pyvips.Image.thumbnail_buffer(data, new_w, height=new_h, size="force")
            return vips_rgb(img.crop(left, top, cw, ch))

        out += [
            Candidate(
                "pyvips",
                f"pyvips (libvips {vips_version}) jpegload shrink at the draft scale",
                vips_load,
                pre.batch,
            ),
            Candidate(
                "pyvips-thumbnail",
                "pyvips thumbnail_buffer: its own shrink-on-load + resize, then the crop",
                vips_thumb,
                pre.batch,
            ),
        ]
    except ImportError as e:
        skipped["pyvips"] = f"not installed ({e})"
    except OSError as e:
        skipped["pyvips"] = f"libvips is missing: {str(e).splitlines()[0]}"
    try:
        import cv2

        cv2.setNumThreads(1)
        reduced = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
        reduced[8] = cv2.IMREAD_REDUCED_COLOR_8

        def cv_load(p: Path) -> np.ndarray:
            with Image.open(p) as img:  # the header only, for the scale
                s = draft_scale(img.size, ms)
            bgr = cv2.imread(str(p), reduced[s])
            if bgr is None:
                raise OSError(f"OpenCV cannot read {p}")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

        def cv_resize(p: Path) -> np.ndarray:
            arr = cv_load(p)
            h, w = arr.shape[:2]
            new_w, new_h, top, left = resize_target(w, h)
            interp = cv2.INTER_AREA if new_w <= w else cv2.INTER_CUBIC
            small = cv2.resize(arr, (new_w, new_h), interpolation=interp)
            return np.ascontiguousarray(small[top : top + ch, left : left + cw])

        out += [
            Candidate(
                "opencv",
                f"OpenCV {cv2.__version__} imread IMREAD_REDUCED_COLOR_2/4/8 at the draft scale",
                lambda p: pre(Image.fromarray(cv_load(p))),
                pre.batch,
            ),
            Candidate(
                "opencv-resize", "OpenCV reduced imread + cv2.resize INTER_AREA + crop", cv_resize, pre.batch
            ),
        ]
    except ImportError as e:
        skipped["opencv"] = f"not installed ({e})"
    skipped["pillow-simd"] = (
        "installs as PIL, replacing Pillow: it cannot sit beside Pillow in one environment"
    )
    return out, skipped


def run(c: Candidate, paths: list[Path]) -> None:
    items: list[Any] = []
    for p in paths:
        items.append(c.per_image(p))
        if len(items) == BATCH:
            c.batch(items)
            items = []
    if items:
        c.batch(items)


def measure_speed(cands: list[Candidate], sets: dict[str, list[Path]], rounds: int, min_images: int) -> None:
    for set_name, paths in sets.items():
        work = paths * max(1, -(-min_images // len(paths)))  # small sets are gone through several times
        for c in cands:  # warm-up: file cache, lazy imports, allocator
            run(c, paths[:BATCH])
            c.rates[set_name] = []
        for r in range(rounds):
            order = cands[r % len(cands) :] + cands[: r % len(cands)]
            for c in order:
                t = time.perf_counter()
                run(c, work)
                c.rates[set_name].append(len(work) / (time.perf_counter() - t))
            print(
                f"{set_name} round {r + 1}: "
                + ", ".join(f"{c.name} {c.rates[set_name][-1]:.0f}" for c in cands),
                flush=True,
            )


def tensors(c: Candidate, paths: list[Path]) -> torch.Tensor:
    return c.batch([c.per_image(p) for p in paths])


def stage_candidates(emb: novelty.Embedder, paths: list[Path]) -> list[Candidate]:
    """Where today's time goes: each decoder's decode alone, and the preprocessing alone (on frames decoded
    beforehand by today's reader)."""
    pre, ms = emb.preprocess, emb.min_size
    assert ms is not None

    def nothing(items: list[Any]) -> torch.Tensor:
        return torch.empty(0)

    decoded = {p: load_image(p, min_size=ms) for p in paths}
    out = [
        Candidate("decode: PIL draft (load_image)", "", lambda p: load_image(p, min_size=ms), nothing),
        Candidate("preprocess alone (resize + crop, normalise)", "", lambda p: pre(decoded[p]), pre.batch),
    ]
    try:
        import simplejpeg

        def sj(p: Path) -> Any:
            data = p.read_bytes()
            h, w = simplejpeg.decode_jpeg_header(data)[:2]
            s = draft_scale((w, h), ms)
            return Image.fromarray(
                simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=-(-h // s), min_width=-(-w // s))
            )

        out.append(Candidate("decode: simplejpeg at the draft scale + fromarray", "", sj, nothing))
    except ImportError:
        pass
    return out


def measure_agreement(
    cands: list[Candidate], sets: dict[str, list[Path]], emb: novelty.Embedder, cosine_n: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Per set and candidate: max / mean |Δ| of the input tensor against the full decode + timm transform and
    against today's, and the min / mean embedding cosine to today's on ``cosine_n`` images spread over the set."""
    by_name = {c.name: c for c in cands}
    today, full = by_name["pil-draft"], by_name["pil-full"]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for set_name, paths in sets.items():
        acc = {c.name: {"max_full": 0.0, "sum_full": 0.0, "max_today": 0.0, "sum_today": 0.0} for c in cands}
        count = 0
        for s in range(0, len(paths), BATCH):
            chunk = paths[s : s + BATCH]
            ref, now = tensors(full, chunk), tensors(today, chunk)
            count += ref.numel()
            for c in cands:
                x = now if c is today else ref if c is full else tensors(c, chunk)
                d_full, d_today = (x - ref).abs(), (x - now).abs()
                a = acc[c.name]
                a["max_full"] = max(a["max_full"], float(d_full.max()))
                a["sum_full"] += float(d_full.double().sum())
                a["max_today"] = max(a["max_today"], float(d_today.max()))
                a["sum_today"] += float(d_today.double().sum())
        pick = [paths[i] for i in np.linspace(0, len(paths) - 1, min(cosine_n, len(paths))).astype(int)]
        ref_emb = emb.embed_tensor(tensors(today, pick))
        res: dict[str, dict[str, float]] = {}
        for c in cands:
            cos = (emb.embed_tensor(tensors(c, pick)) * ref_emb).sum(axis=1)
            a = acc[c.name]
            res[c.name] = {
                "max_abs_vs_full": a["max_full"],
                "mean_abs_vs_full": a["sum_full"] / count,
                "max_abs_vs_today": a["max_today"],
                "mean_abs_vs_today": a["sum_today"] / count,
                "cosine_min": float(cos.min()),
                "cosine_mean": float(cos.mean()),
                "cosine_n": len(pick),
            }
        out[set_name] = res
    return out


def set_description(paths: list[Path]) -> dict[str, Any]:
    sizes, modes, progressive = [], set(), 0
    for p in paths:
        with Image.open(p) as img:
            sizes.append(img.size)
            modes.add(img.mode)
            progressive += bool(img.info.get("progressive"))
    px = [w * h for w, h in sizes]
    return {
        "n": len(paths),
        "smallest": list(sizes[int(np.argmin(px))]),
        "largest": list(sizes[int(np.argmax(px))]),
        "modes": sorted(modes),
        "progressive": progressive,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="street JPEGs")
    ap.add_argument("--n-large", type=int, default=64, help="2048 px photos")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-images", type=int, default=400, help="a smaller set is gone through several times")
    ap.add_argument("--cosine-n", type=int, default=50)
    ap.add_argument("--json", type=Path, default=Path(__file__).with_name("results") / "decode.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    import PIL
    import PIL.features

    emb = novelty.Embedder(device="cpu", threads=1)
    cands, skipped = candidates(emb)
    versions = {
        "Pillow": PIL.__version__,
        "Pillow libjpeg-turbo": PIL.features.version("libjpeg_turbo"),
        "torch": torch.__version__,
    }
    report: dict[str, Any] = {
        "command": "OMP_NUM_THREADS=1 python -m benchmarks.bench_decode "
        f"--n {args.n} --n-large {args.n_large} --rounds {args.rounds}",
        "cpu": cpu_info(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "versions": versions,
        "candidates": {c.name: c.what for c in cands},
        "skipped": skipped,
    }
    print(
        json.dumps({k: report[k] for k in ("cpu", "torch_threads", "OMP_NUM_THREADS")} | {"skipped": skipped})
    )
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        sets = image_sets(args.n, args.n_large, Path(tmp))
        report["sets"] = {k: set_description(v) for k, v in sets.items()}
        print(json.dumps(report["sets"]), flush=True)
        with torch.inference_mode():
            measure_speed(cands, sets, args.rounds, args.min_images)
            agreement = measure_agreement(cands, sets, emb, args.cosine_n)
            street = sets.get("street", next(iter(sets.values())))[:200]
            stages = stage_candidates(emb, street)
            measure_speed(stages, {"stages": street}, args.rounds, args.min_images)
    std = float(emb.preprocess.fast["std"][0]) if emb.preprocess.fast is not None else 1.0
    results: dict[str, Any] = {}
    for set_name in sets:
        base = statistics.median(next(c for c in cands if c.name == "pil-draft").rates[set_name])
        rows = {}
        for c in cands:
            med = statistics.median(c.rates[set_name])
            rows[c.name] = {
                "img_s_median": med,
                "img_s_rounds": c.rates[set_name],
                "vs_today": med / base,
                **agreement[set_name][c.name],
            }
        results[set_name] = rows
    report["results"] = results
    report["stages_ms_per_image"] = {  # on the first 200 images of the street set, same rounds
        c.name: 1e3 / statistics.median(c.rates["stages"]) for c in stages
    }
    report["levels_per_unit"] = 255.0 * std  # |Δ| of the normalised tensor × this = 8-bit levels
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")

    lv = report["levels_per_unit"]
    print()
    print(
        f"| set | decoder | img/s (median of {args.rounds}) | vs today | vs full decode: max / mean abs "
        "(8-bit levels) | vs today: max / mean abs | cosine to today, min / mean |"
    )
    print("|---|---|---:|---:|---|---|---|")
    for set_name, rows in results.items():
        for name, r in rows.items():
            print(
                f"| {set_name} | {name} | {r['img_s_median']:.0f} | {r['vs_today']:.2f} | "
                f"{r['max_abs_vs_full']:.4f} / {r['mean_abs_vs_full']:.5f} "
                f"({r['max_abs_vs_full'] * lv:.1f} / {r['mean_abs_vs_full'] * lv:.2f}) | "
                f"{r['max_abs_vs_today']:.4f} / {r['mean_abs_vs_today']:.5f} | "
                f"{r['cosine_min']:.5f} / {r['cosine_mean']:.6f} |"
            )
    print(
        "\nms per image, one thread: "
        + ", ".join(f"{k} {v:.2f}" for k, v in report["stages_ms_per_image"].items())
    )
    print(f"\nskipped: {json.dumps(skipped)}\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
