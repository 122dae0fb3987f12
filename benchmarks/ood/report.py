"""The benchmark run as markdown tables (what ``benchmarks/RESULTS.md`` quotes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.ood.runner import BenchmarkRun, ScenarioResult

__all__ = ["markdown"]


def _f(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _methods(run: BenchmarkRun, kind: str) -> list[str]:
    names: list[str] = []
    for r in run.results:
        names += [n for n, m in r.methods.items() if m.kind == kind and n not in names]
    return names


def _rows(run: BenchmarkRun) -> list[tuple[ScenarioResult, str]]:
    return [(r, s) for r in run.results for s in r.novel_sets]


def markdown(run: BenchmarkRun) -> str:
    ours, peers = _methods(run, "novelty"), _methods(run, "peer")
    cfg = run.config
    alpha = cfg["alpha"]
    lines = [
        "# Out-of-distribution benchmark",
        "",
        f"Backbone `{cfg['backbone']}` (weights sha256 `{cfg['weights_fingerprint'][:12]}…`), "
        f"sizes {', '.join(cfg['sizes'])}, seeds {cfg['seeds']}, alpha = {alpha}. "
        f"{cfg['date']}; {cfg['machine']['cpu']}, {cfg['machine']['cpus_usable']} usable CPUs, "
        f"torch {cfg['machine']['torch']}. Total {run.seconds:.0f} s "
        f"({cfg['images_embedded_this_run']} images embedded in this run, the rest from the cache).",
        "",
        "Every method is fitted on the same embeddings (the fitting part of each scenario, without the "
        "calibration images) and scored on the same held-out images. Higher scores = more novel.",
        "",
        "## AUROC",
        "",
        "| scenario | novel set | " + " | ".join(ours + peers) + " | best novelty − best peer |",
        "|---|---|" + "---:|" * (len(ours) + len(peers) + 1),
    ]
    for r, s in _rows(run):
        vals = {n: m.metrics[s]["auroc"] for n, m in r.methods.items()}
        top = max(vals.values())
        cells = []
        for n in ours + peers:
            v = vals.get(n)
            cells.append("–" if v is None else (f"**{v:.3f}**" if v == top else f"{v:.3f}"))
        bo, bp = r.best("novelty", s), r.best("peer", s)
        diff = "–" if bo is None or bp is None else f"{vals[bo.name] - vals[bp.name]:+.3f}"
        lines.append(f"| {r.scenario} | {s} | " + " | ".join(cells) + f" | {diff} |")

    lines += [
        "",
        "## Best of novelty vs best peer, all metrics",
        "",
        "AUPR-in takes the in-distribution images as positives, AUPR-out the novel ones; FPR@95 is the share "
        "of in-distribution images flagged when 95 % of the novel ones are caught (lower is better).",
        "",
        "| scenario | novel set | novelty method | AUROC | AUPR-in | AUPR-out | FPR@95 "
        "| peer | AUROC | AUPR-in | AUPR-out | FPR@95 |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r, s in _rows(run):
        row = [r.scenario, s]
        for kind in ("novelty", "peer"):
            m = r.best(kind, s)
            if m is None:
                row += ["–"] * 5
            else:
                d = m.metrics[s]
                row += [m.name, _f(d["auroc"]), _f(d["aupr_in"]), _f(d["aupr_out"]), _f(d["fpr95"])]
        lines.append("| " + " | ".join(row) + " |")

    native_peers = [
        p
        for p in peers
        if any(p in r.methods and r.methods[p].native_false_alarm is not None for r in run.results)
    ]
    lines += [
        "",
        f"## False alarms on held-out in-distribution images (alpha = {alpha})",
        "",
        "novelty's columns: share of the held-out in-distribution test images with p-value < alpha (conformal "
        "p-values from the calibration images). `combined, re-split`: the same for the combined score over "
        "random re-divisions of calibration ∪ test images into parts of the same sizes (whole blocks for "
        "video): mean [5 %–95 % quantiles]. `peers, calibrated`: the same conformal calibration applied to "
        "each peer's scores (lowest–highest). `native`: the peer library's own default threshold.",
        "",
        "| scenario | calibration / test images | "
        + " | ".join(ours)
        + " | combined, re-split | peers, calibrated | "
        + " | ".join(f"{p} native" for p in native_peers)
        + " |",
        "|---|---:|" + "---:|" * (len(ours) + 2 + len(native_peers)),
    ]
    for r in run.results:
        cal = [m.false_alarm for m in r.methods.values() if m.kind == "peer"]
        peer_cal = f"{min(cal):.3f}–{max(cal):.3f}" if cal else "–"
        cells = [_f(r.methods[n].false_alarm) if n in r.methods else "–" for n in ours]
        nat = [_f(r.methods[p].native_false_alarm) if p in r.methods else "–" for p in native_peers]
        rs = r.methods["combined"].false_alarm_resplit if "combined" in r.methods else {}
        resplit = f"{rs['mean']:.3f} [{rs['q05']:.3f}–{rs['q95']:.3f}]" if rs else "–"
        lines.append(
            f"| {r.scenario} | {r.sizes['calibration']} / {r.sizes['test_in']} | "
            + " | ".join(cells)
            + f" | {resplit} | {peer_cal} | "
            + " | ".join(nat)
            + " |"
        )

    lines += [
        "",
        "## Sizes and seconds",
        "",
        "| scenario | fit | calibration | test in | novel sets | embedding s | "
        + " | ".join(["novelty (all scorers)", *peers])
        + " |",
        "|---|---:|---:|---:|---|---:|" + "---:|" * (1 + len(peers)),
    ]
    for r in run.results:
        novel = ", ".join(f"{s} {r.sizes[s]}" for s in r.novel_sets)
        secs = [_f(r.methods[ours[0]].seconds, 1) if ours and ours[0] in r.methods else "–"]
        secs += [_f(r.methods[p].seconds, 1) if p in r.methods else "–" for p in peers]
        lines.append(
            f"| {r.scenario} | {r.sizes['fit']} | {r.sizes['calibration']} | {r.sizes['test_in']} | {novel} "
            f"| {r.embed_seconds:.1f} | " + " | ".join(secs) + " |"
        )
    skipped = {p: why for r in run.results for p, why in r.skipped.items()}
    if skipped:
        lines += ["", "Peers not run: " + "; ".join(f"{p} ({why})" for p, why in skipped.items())]
    return "\n".join(lines) + "\n"
