"""Patch-level scoring on the textile scenario: AUROC on local and global defects, false alarms, speed, memory,
a figure of anomaly maps, and anomalib's PatchCore fed the same offline backbone weights.

    python -m benchmarks.bench_patch --json out/patch.json --figure docs/anomaly_maps.png
    python -m benchmarks.bench_patch --coreset-fraction 0.01 --layers 2,3 --image-size 256 --json out/p.json
    .venv-anomalib/bin/python -m benchmarks.bench_patch --peer anomalib --json out/patch_anomalib.json

Protocol (the OOD benchmark's textile scenario): ``textile_splits()`` — 700 nominal images to fit, of which the
detector holds out 30 % (210) to calibrate, so the scorers are fitted on 490; 300 held-out nominal images, 500
with local defects, 500 with global defects. AUROC: held-out nominal vs each defect set, on the raw scores
(higher = more novel). False alarms: the share of the 300 held-out nominal images with p-value < alpha.
Speed: ``score_batch`` from the JPEG files (decode, both backbone passes, kNN), after one warm-up batch,
on this machine's threads (run it under the shared benchmark lock).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ALPHA = 0.05


def _auroc(nominal: np.ndarray, novel: np.ndarray) -> float:
    from novelty.metrics import auroc

    return float(auroc(nominal, novel))


def _sets() -> tuple[list[Path], dict[str, list[Path]]]:
    from novelty.datasets import textile_splits

    sp = textile_splits()
    return sp.train, {"nominal": sp.test_nominal, "local": sp.local, "global": sp.global_}


# --- novelty's scorers ------------------------------------------------------------------------------------
def run_novelty(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    import novelty
    from novelty.scorers import PatchKNNScorer

    train, sets = _sets()
    emb = novelty.Embedder(device="cpu")
    patch_params = {
        "layers": [int(v) for v in args.layers.split(",")],
        "image_size": args.image_size,
        "pad": args.pad,
        "position_scale": not args.no_position_scale,
        "coreset_fraction": args.coreset_fraction,
        "projection_dim": args.projection_dim,
        "aggregate": args.aggregate,
    }
    kinds = {
        "knn": ("knn",),
        "patch-knn": {"patch-knn": patch_params},
        "knn+patch-knn": {"knn": None, "patch-knn": patch_params},
    }
    dets = {
        k: novelty.NoveltyDetector(scorers=v, calibration_fraction=0.3, embedder=emb)
        for k, v in kinds.items()
    }
    t0 = time.perf_counter()
    x_train = emb.embed(train)
    t_embed = time.perf_counter() - t0
    pres = dets["patch-knn"].patch_features(train)
    t_patch = time.perf_counter() - t0 - t_embed
    fit_seconds = {}
    for name, det in dets.items():
        t = time.perf_counter()
        det.fit_embeddings(x_train, patches=pres.features if det.needs_patches else None)
        fit_seconds[name] = time.perf_counter() - t
    del pres
    scores: dict[str, dict[str, np.ndarray]] = {k: {} for k in dets}
    flagged: dict[str, float] = {}
    for set_name, paths in sets.items():
        x = emb.embed(paths)
        p = dets["patch-knn"].patch_features(paths).features
        for name, det in dets.items():
            v = det.score_embeddings(x, patches=p if det.needs_patches else None)
            scores[name][set_name] = v.score
            if set_name == "nominal":
                flagged[name] = float(np.mean(v.is_novel))
    result: dict[str, Any] = {
        "params": patch_params,
        "auroc": {
            name: {s: _auroc(sc["nominal"], sc[s]) for s in ("local", "global")}
            for name, sc in scores.items()
            if sc
        },
        "false_alarms_at_alpha": flagged,
        "alpha": ALPHA,
        "n": {"fit": int(round(0.7 * len(train))), "calibration": len(train) - int(round(0.7 * len(train)))}
        | {k: len(v) for k, v in sets.items()},
        "fit_seconds": {
            "embed": t_embed,
            "patch_features": t_patch,
            **{f"scorers {k}": v for k, v in fit_seconds.items()},
        },
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
    }
    pk = next(s for s in dets["patch-knn"].scorers_ if isinstance(s, PatchKNNScorer))
    result["memory_bank"] = {
        "features": int(pk.bank_.shape[0]),
        "dim": int(pk.bank_.shape[1]),
        "of_patches": int(pk.n_patches_),
        "grid": list(pk.grid_),
        "bytes": pk.memory_bytes_,
    }
    # speed: score_batch from files, one warm-up batch first
    speed_paths = sets["nominal"][:256]
    speed = {}
    for name in ("knn", "patch-knn"):
        dets[name].score_batch(speed_paths[:32])
        t = time.perf_counter()
        dets[name].score_batch(speed_paths)
        speed[name] = len(speed_paths) / (time.perf_counter() - t)
    t = time.perf_counter()
    dets["patch-knn"].score_batch(speed_paths, anomaly_maps=True)
    speed["patch-knn with maps"] = len(speed_paths) / (time.perf_counter() - t)
    result["images_per_second"] = speed
    if args.figure:
        figure(dets["patch-knn"], sets, Path(args.figure))
        result["figure"] = args.figure
    return result


def figure(det: Any, sets: dict[str, list[Path]], out: Path) -> None:
    """Anomaly maps of the first local-defect images (in file order, not chosen), a global one and a nominal one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    picks = [("local", p) for p in sets["local"][:6]] + [
        ("global", sets["global"][0]),
        ("nominal", sets["nominal"][0]),
    ]
    v = det.score_batch([p for _, p in picks], anomaly_maps=True)
    maps = v.anomaly_maps
    vmax = float(np.nanmax(maps))
    fig, axes = plt.subplots(2, len(picks), figsize=(2.2 * len(picks), 4.6))
    for j, (kind, path) in enumerate(picks):
        img = Image.open(path).convert("RGB")
        m = np.asarray(Image.fromarray(maps[j]).resize(img.size, Image.Resampling.BILINEAR))
        axes[0, j].imshow(img)
        axes[0, j].set_title(f"{kind} {path.stem[-4:]}", fontsize=8)
        axes[1, j].imshow(img)
        axes[1, j].imshow(m, cmap="inferno", alpha=0.55, vmin=0.0, vmax=vmax)
        axes[1, j].set_title(f"p={v.p_value[j]:.3f}", fontsize=8)
        for a in axes[:, j]:
            a.axis("off")
    fig.suptitle("patch-knn anomaly maps on textile (top: image, bottom: map, one colour scale)", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


# --- anomalib's PatchCore, same weights ---------------------------------------------------------------------
def run_anomalib(args: argparse.Namespace) -> dict[str, Any]:
    """anomalib's ``PatchcoreModel`` (its torch module; the Lightning wrapper adds nothing to fitting a memory
    bank) with the backbone built without download (``pre_trained=False``) and novelty's offline weights loaded
    into it by name; the same preprocessing as novelty's patch pass (whole image resized, the backbone's own
    mean/std), the same layers, its own coreset ratio, k-center and re-weighting."""
    import anomalib
    import torch
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    from novelty.embedder import Embedder
    from novelty.patches import PatchExtractor

    train, sets = _sets()
    emb = Embedder(device="cpu")  # novelty's offline weights and data config
    layers = [int(v) for v in args.layers.split(",")]
    names = [emb.model.feature_info[i]["module"] for i in layers]
    model = PatchcoreModel(layers=names, backbone=emb.backbone_name, pre_trained=False, num_neighbors=9)
    fx = model.feature_extractor.feature_extractor
    missing, _ = fx.load_state_dict(emb.model.state_dict(), strict=False)  # the classifier head is unused
    if missing:
        raise SystemExit(f"anomalib's feature extractor lacks weights for {missing[:5]}")
    prep = PatchExtractor(emb, layers, args.image_size)  # only its image → tensor step and normalisation

    def batches(paths: list[Path]) -> Any:
        from novelty.images import load_image

        for s in range(0, len(paths), 32):
            t = torch.stack([prep.to_tensor(load_image(p)) for p in paths[s : s + 32]])
            yield (t - prep.mean) / prep.std

    from novelty.calibration import calibration_split

    fit_idx, _ = calibration_split(len(train), 0.3, seed=0)  # the images novelty's detector fits on
    fit_paths = [train[i] for i in fit_idx]
    t0 = time.perf_counter()
    model.train()
    with torch.no_grad():
        for b in batches(fit_paths):
            model(b)
    t_feat = time.perf_counter() - t0
    n_patches = sum(int(e.shape[0]) for e in model.embedding_store)
    # anomalib's k-center projects the bank with SparseRandomProjection(eps=0.9) to the Johnson-Lindenstrauss
    # dimension of n_patches (~390 for 8 M) and subtracts each centre from the whole projection: two float32
    # copies of n × dims. Refuse rather than let the kernel's OOM killer pick a process.
    dims = int(4 * np.log(n_patches) / (0.9**2 / 2 - 0.9**3 / 3))
    need = 2 * 4 * n_patches * dims
    avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if need > 0.8 * avail:
        raise SystemExit(
            f"anomalib's coreset would need ~{need / 2**30:.1f} GiB ({n_patches} patches projected to {dims} "
            f"dimensions, twice) and {avail / 2**30:.1f} GiB are free: not run"
        )
    model.subsample_embedding(args.coreset_fraction)
    t_fit = time.perf_counter() - t0
    model.eval()
    scores = {}
    with torch.no_grad():
        for set_name, paths in sets.items():
            scores[set_name] = np.concatenate(
                [model(b).pred_score.reshape(-1).numpy() for b in batches(paths)]
            )
        speed_paths = sets["nominal"][:256]
        t = time.perf_counter()
        for b in batches(speed_paths):
            model(b)
        ips = len(speed_paths) / (time.perf_counter() - t)
    return {
        "peer": f"anomalib {anomalib.__version__} PatchcoreModel",
        "backbone": emb.backbone_name,
        "weights_fingerprint": emb.fingerprint,
        "layers": names,
        "coreset_ratio": args.coreset_fraction,
        "image_size": args.image_size,
        "n_fit": len(fit_paths),
        "auroc": {s: _auroc(scores["nominal"], scores[s]) for s in ("local", "global")},
        "memory_bank": {
            "features": int(model.memory_bank.shape[0]),
            "dim": int(model.memory_bank.shape[1]),
            "bytes": int(model.memory_bank.numel() * model.memory_bank.element_size()),
        },
        "fit_seconds": {"features": t_feat, "total": t_fit},
        "images_per_second": ips,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peer", choices=("anomalib",), default=None, help="run a peer instead of novelty")
    p.add_argument("--layers", default="1", help="backbone stages (feature_info indices), default 1")
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--pad", type=int, default=16)
    p.add_argument("--no-position-scale", action="store_true")
    p.add_argument("--coreset-fraction", type=float, default=0.0025)
    p.add_argument("--projection-dim", type=int, default=128)
    p.add_argument("--aggregate", default="max", choices=("max", "reweight"))
    p.add_argument("--figure", default=None, help="write the anomaly-map figure here (PNG)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    res = run_anomalib(args) if args.peer == "anomalib" else run_novelty(args)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
