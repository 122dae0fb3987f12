"""Power and false alarms of the drift tests on real embeddings: how often each test fires on windows of
10…1000 images that did not shift (null) and on windows that did, beside the drift tests of TorchDrift and
Evidently on the very same windows.

    python -m benchmarks.drift_power                          # → benchmarks/results/drift_power.{md,json}
    python -m benchmarks.drift_power --sizes 10,30 --null-windows 50 --shift-windows 20   # a quick look

Settings (embeddings from the OOD benchmark's cache, ``benchmarks/ood``):

- ``fmnist`` (i.i.d. images): the detector is fitted on 10,000 Fashion-MNIST training images (30 % held out
  to calibrate); null windows are drawn from the 2,000 Fashion-MNIST test images, the semantic shift mixes 10 %
  MNIST digits into them.
- ``street`` (video frames, *not* i.i.d.): the detector is fitted on the street scenario's fitting blocks
  (grouped calibration); null windows are drawn from the held-out test blocks (195 frames: windows larger
  than that draw with replacement), shifted windows are those test frames under one condition at severity 1,
  or a 10 % mix of tunnel frames into clean ones.

Each window runs novelty's five tests against the detector's reference (its fitting embeddings, a sample of
``--max-reference``; the p-value tests use the detector's conformal p-values and its calibration size) and the
peers against the same reference sample: TorchDrift's ``KernelMMDDriftDetector`` (its permutation p-value) and
Evidently's embedding drift methods ``model()`` (the default: a classifier's ROC AUC above 0.55) and ``mmd()``
(MMD² above 0.015) with their default thresholds. A test "fires" at p < 0.05 (peers: their own drift flag).
Permutations: ``--permutations`` for MMD, half as many for the classifier (each refits five models), twice as
many for the histogram, all with the sequential stop after 10 exceedances. The reference sample is
``--max-reference`` (500) fitting embeddings. Expensive tests run on fewer windows (:func:`windows_for`: the
classifier on 100 null windows up to n = 100; MMD and the classifier on ``--expensive-windows`` null windows
and half the shift windows from n = 300; the peers on ``--peer-windows``, half as many from n = 300); the
tables give every count. Each setting and size writes its row as soon as it is done
(``drift_power.<scenario>.partial.json``), so two processes can run the scenarios side by side
(``--scenarios fmnist`` and ``--scenarios street``) and ``--merge`` joins their rows into the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("benchmarks.drift_power")

OURS = ("pvalue-binomial", "pvalue-ks", "mmd", "classifier", "histogram")
PEERS = ("torchdrift-mmd", "evidently-model", "evidently-mmd")
LEVEL = 0.05


# --- data -------------------------------------------------------------------------------------------------
class Setting:
    def __init__(
        self, scenario: str, name: str, null: bool, draw: Callable[[np.random.Generator, int], np.ndarray]
    ):
        self.scenario, self.name, self.null, self.draw = scenario, name, null, draw


def _pick(pool: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(pool, size=n, replace=n > pool)


def load(cache: Any) -> tuple[dict[str, Any], list[Setting]]:
    """Detectors, their references and pools (embeddings + p-values), and the settings to draw windows from."""
    from benchmarks.ood.scenarios import build_scenarios
    from novelty.detector import NoveltyDetector

    refs: dict[str, Any] = {}
    settings: list[Setting] = []

    f = build_scenarios(["fmnist-ood"], size="full")[0]
    x_fit = cache.get(f.fit.pool, f.fit.index)
    det = NoveltyDetector(calibration_fraction=f.calibration_fraction, seed=0).fit_embeddings(x_fit)
    pools = {
        "clean": cache.get(f.test_in.pool, f.test_in.index),
        "mnist": cache.get(f.test_out["mnist"].pool, f.test_out["mnist"].index),
    }
    refs["fmnist"] = _pack(det, pools)
    fm = refs["fmnist"]["pools"]

    def fm_null(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.stack([np.zeros(n, int), _pick(len(fm["clean"][0]), n, rng)], axis=1)

    def fm_mix(rng: np.random.Generator, n: int) -> np.ndarray:
        k = max(1, round(0.1 * n))
        a = np.stack([np.zeros(n - k, int), _pick(len(fm["clean"][0]), n - k, rng)], axis=1)
        b = np.stack([np.ones(k, int), _pick(len(fm["mnist"][0]), k, rng)], axis=1)
        return np.concatenate([a, b])

    refs["fmnist"]["order"] = ["clean", "mnist"]
    settings += [
        Setting("fmnist", "clean (null, i.i.d.)", True, fm_null),
        Setting("fmnist", "10 % MNIST (semantic)", False, fm_mix),
    ]

    s = build_scenarios(["street"], size="full")[0]
    x_fit = cache.get(s.fit.pool, s.fit.index)
    det = NoveltyDetector(calibration_fraction=s.calibration_fraction, seed=0).fit_embeddings(
        x_fit, groups=list(s.fit.groups)
    )
    conditions = ["tunnel", "ice", "fog", "snow", "wet", "glare"]
    pools = {"clean": cache.get(s.test_in.pool, s.test_in.index)}
    for c in conditions:
        part = s.test_out[f"{c}-s1"]
        pools[c] = cache.get(part.pool, part.index)
    refs["street"] = _pack(det, pools)
    refs["street"]["order"] = ["clean", *conditions]
    st = refs["street"]["pools"]
    n_clean = len(st["clean"][0])

    def st_pool(j: int) -> Callable[[np.random.Generator, int], np.ndarray]:
        def draw(rng: np.random.Generator, n: int) -> np.ndarray:
            return np.stack([np.full(n, j), _pick(n_clean, n, rng)], axis=1)

        return draw

    def st_mix(rng: np.random.Generator, n: int) -> np.ndarray:
        k = max(1, round(0.1 * n))
        a = np.stack([np.zeros(n - k, int), _pick(n_clean, n - k, rng)], axis=1)
        b = np.stack([np.ones(k, int), _pick(n_clean, k, rng)], axis=1)  # pool 1 = tunnel
        return np.concatenate([a, b])

    settings.append(Setting("street", "clean (null, video)", True, st_pool(0)))
    settings += [Setting("street", f"{c} s1", False, st_pool(j + 1)) for j, c in enumerate(conditions)]
    settings.append(Setting("street", "10 % tunnel", False, st_mix))
    return refs, settings


def _pack(det: Any, pools: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "detector": det,
        "pools": {k: (x, det.score_embeddings(x).p_value) for k, x in pools.items()},
    }


# --- peers ------------------------------------------------------------------------------------------------
def peer_runners(
    ref_sample: np.ndarray, n_perm: int
) -> dict[str, Callable[[np.ndarray], tuple[float, bool]]]:
    """Each installed peer as ``window → (score, fires)``; a peer that is not installed is left out."""
    out: dict[str, Callable[[np.ndarray], tuple[float, bool]]] = {}
    try:
        import torch
        from torchdrift.detectors import KernelMMDDriftDetector

        td = KernelMMDDriftDetector(return_p_value=True, n_perm=n_perm)
        td.fit(torch.from_numpy(ref_sample))

        def torchdrift(win: np.ndarray) -> tuple[float, bool]:
            torch.manual_seed(0)
            p = float(td(torch.from_numpy(np.ascontiguousarray(win))))
            return p, p < LEVEL

        out["torchdrift-mmd"] = torchdrift
    except ImportError as e:
        log.warning("TorchDrift not installed (%s): pip install torchdrift", e)
    try:
        os.environ.setdefault("DO_NOT_TRACK", "1")
        import pandas as pd
        import pandas.core.dtypes.common as pdc

        if not hasattr(pdc, "infer_dtype_from_object"):  # evidently 0.7 imports a helper pandas 3 removed
            pdc.infer_dtype_from_object = lambda dtype: dtype  # type: ignore[attr-defined]
        from evidently.legacy.metrics.data_drift.embedding_drift_methods import mmd, model

        ref_df = pd.DataFrame(ref_sample)

        def evidently(method: Any) -> Callable[[np.ndarray], tuple[float, bool]]:
            def run(win: np.ndarray) -> tuple[float, bool]:
                try:
                    score, fires, _ = method(pd.DataFrame(win), ref_df.copy())
                except ValueError:  # e.g. a split without both classes on a tiny window
                    return math.nan, False
                return float(score), bool(fires)

            return run

        out["evidently-model"] = evidently(model())
        out["evidently-mmd"] = evidently(mmd())
    except ImportError as e:
        log.warning("Evidently not usable (%s): pip install evidently", e)
    return out


def windows_for(test: str, n: int, null: bool, args: argparse.Namespace) -> int:
    """How many windows a test gets in one cell: every window for the cheap tests (p-values, histogram); for
    MMD every window up to n = 100 and the classifier every shift window and 100 null windows there; from
    n = 300 both get ``--expensive-windows`` null windows and half the shift windows; the peers get
    ``--peer-windows`` up to n = 100, then half as many."""
    base = args.null_windows if null else args.shift_windows
    if test in ("pvalue-binomial", "pvalue-ks", "histogram"):
        return base
    if test in ("mmd", "classifier"):
        if n <= 100:
            return base if test == "mmd" or not null else min(base, 2 * args.expensive_windows)
        return args.expensive_windows if null else max(1, base // 2)
    return args.peer_windows if n <= 100 else max(1, args.peer_windows // 2)


# --- the run ----------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.ood.runner import EmbeddingCache, machine_description
    from novelty.drift import DriftReference
    from novelty.embedder import Embedder

    t0 = time.perf_counter()
    cache = EmbeddingCache(Embedder(), progress=False)
    refs, settings = load(cache)
    if args.scenarios:
        settings = [s for s in settings if s.scenario in args.scenarios]
    results: list[dict[str, Any]] = []
    for scen in dict.fromkeys(s.scenario for s in settings):
        info = refs[scen]
        det = info["detector"]
        ref = DriftReference.from_detector(
            det,
            max_reference=args.max_reference,
            permutations={
                "mmd": args.permutations,
                "classifier": args.permutations // 2,
                "histogram": 2 * args.permutations,
            },
            stop_after=10,
        )
        _ = ref.clusters  # fitted once, outside the timing of the windows
        peers = peer_runners(ref._sample, args.permutations) if not args.no_peers else {}
        pools = [info["pools"][k] for k in info["order"]]
        for setting in [s for s in settings if s.scenario == scen]:
            for n in args.sizes:
                budget = {t: windows_for(t, n, setting.null, args) for t in (*OURS, *peers)}
                n_windows = max(budget.values())
                fires: dict[str, list[bool]] = {t: [] for t in (*OURS, *peers)}
                seconds: dict[str, float] = dict.fromkeys(fires, 0.0)
                rng = np.random.default_rng([args.seed, n, len(results)])
                for w in range(n_windows):
                    pick = setting.draw(rng, n)
                    emb = np.concatenate([pools[j][0][i : i + 1] for j, i in pick])
                    pv = np.array([pools[j][1][i] for j, i in pick])
                    for t in OURS:
                        if w >= budget[t]:
                            continue
                        ts = time.perf_counter()
                        r = ref.test(
                            emb if t not in ("pvalue-binomial", "pvalue-ks") else None,
                            pv if t in ("pvalue-binomial", "pvalue-ks") else None,
                            tests=[t],
                            seed=w,
                        )[t]
                        seconds[t] += time.perf_counter() - ts
                        fires[t].append(r.p_value < LEVEL)
                    for name, fn in peers.items():
                        if w >= budget[name]:
                            continue
                        ts = time.perf_counter()
                        fires[name].append(fn(emb)[1])
                        seconds[name] += time.perf_counter() - ts
                row = {
                    "scenario": scen,
                    "setting": setting.name,
                    "null": setting.null,
                    "n": n,
                    "rates": {t: (float(np.mean(v)) if v else None) for t, v in fires.items()},
                    "windows": {t: len(v) for t, v in fires.items()},
                    "seconds_per_window": {
                        t: (seconds[t] / len(fires[t]) if fires[t] else None) for t in fires
                    },
                }
                results.append(row)
                log.info(
                    "%s · %s · n=%d: %s",
                    scen,
                    setting.name,
                    n,
                    {k: (round(v, 3) if v is not None else None) for k, v in row["rates"].items()},
                )
                if args.out:
                    _write(args, results, t0, refs, partial=True)
    return {
        "results": results,
        "config": {
            "sizes": args.sizes,
            "null_windows": args.null_windows,
            "shift_windows": args.shift_windows,
            "expensive_windows": args.expensive_windows,
            "peer_windows": args.peer_windows,
            "permutations": args.permutations,
            "max_reference": args.max_reference,
            "level": LEVEL,
            "reference_sizes": {k: int(v["detector"].index_.ntotal) for k, v in refs.items()},
            "calibration_sizes": {k: int(v["detector"].calibrator_.n) for k, v in refs.items()},
            "seed": args.seed,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_description(),
            "seconds": round(time.perf_counter() - t0, 1),
        },
    }


def markdown(payload: dict[str, Any]) -> str:
    res, cfg = payload["results"], payload["config"]
    cols = [t for t in (*OURS, *PEERS) if any(r["windows"].get(t) for r in res)]
    lines = [
        f"Share of windows that fire at p < {cfg['level']} (peers: their own drift flag); windows per cell in "
        "brackets where fewer than the row's.",
        "",
        "| scenario | windows of | n | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for r in res:
        most = max(r["windows"].values())
        cells = []
        for t in cols:
            v, k = r["rates"].get(t), r["windows"].get(t, 0)
            cells.append("—" if v is None else f"{v:.2f}" + (f" ({k})" if k != most else ""))
        kind = f"**{r['setting']}**" if r["null"] else r["setting"]
        lines.append(f"| {r['scenario']} | {kind} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write(
    args: argparse.Namespace, results: list[dict[str, Any]], t0: float, refs: dict[str, Any], partial: bool
) -> None:
    from novelty.fileio import atomic_write_text

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "results": results,
        "config": {"partial": partial, "seconds": round(time.perf_counter() - t0, 1)},
    }
    tag = "-".join(args.scenarios) if args.scenarios else "all"
    atomic_write_text(out / f"drift_power.{tag}.partial.json", json.dumps(payload, indent=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10, 30, 100, 300, 1000])
    p.add_argument("--null-windows", type=int, default=200)
    p.add_argument("--shift-windows", type=int, default=20)
    p.add_argument(
        "--expensive-windows",
        type=int,
        default=50,
        help="null windows for MMD and the classifier from n = 300 (the classifier: twice as many below)",
    )
    p.add_argument(
        "--peer-windows", type=int, default=10, help="windows per cell for the peers (half at n = 1000)"
    )
    p.add_argument("--permutations", type=int, default=100)
    p.add_argument("--max-reference", type=int, default=500)
    p.add_argument("--scenarios", type=lambda s: s.split(","), default=None)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument(
        "--merge", nargs="+", metavar="JSON", help="join the rows of finished runs into the tables"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from novelty.fileio import atomic_write_text

    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        payload = {"results": [r for part in parts for r in part["results"]], "config": parts[0]["config"]}
        payload["config"]["merged_from"] = [str(f) for f in args.merge]
        payload["config"]["seconds"] = [part["config"].get("seconds") for part in parts]
    else:
        payload = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "" if args.merge or not args.scenarios else "." + "-".join(args.scenarios)
    atomic_write_text(out / f"drift_power{tag}.json", json.dumps(payload, indent=1))
    atomic_write_text(out / f"drift_power{tag}.md", markdown(payload))
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
