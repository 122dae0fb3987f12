"""``python -m benchmarks.ood``: run the OOD benchmark and write a markdown table and a JSON file.

Exit status: 0 done; 1 a dataset or peer library is missing (the message says what to install);
2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from benchmarks.ood.peers import PEERS
from benchmarks.ood.runner import ScenarioResult, run_benchmark
from benchmarks.ood.scenarios import FAMILIES, SIZES, build_scenarios, scenario_names
from novelty.datasets import DatasetNotInstalledError
from novelty.errors import NoveltyError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ood",
        description="Run the out-of-distribution benchmark: novelty's scorers and the peers on the same "
        "embeddings of real offline datasets.",
    )
    p.add_argument("--out", default="benchmarks/results", help="folder for ood_benchmark.md / .json")
    p.add_argument("--size", choices=sorted(SIZES), default="full", help="full (the reported run) or small")
    p.add_argument("--scenario", action="append", choices=scenario_names(), help="repeat to pick several")
    p.add_argument("--family", action="append", choices=FAMILIES, help="run the scenarios of a family")
    p.add_argument("--peer", action="append", choices=sorted(PEERS), help="only these peers (repeatable)")
    p.add_argument("--no-peers", action="store_true", help="novelty's scorers only")
    p.add_argument("--require-peers", action="store_true", help="fail instead of skipping a missing peer")
    p.add_argument("--alpha", type=float, default=0.05, help="false-alarm rate to calibrate for")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default=None, help="timm model name (default: the default backbone)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0.0 < args.alpha < 1.0:
        print("error: --alpha must lie in (0, 1)", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
    )
    peers = [] if args.no_peers else args.peer
    t0 = time.perf_counter()

    def report(r: ScenarioResult) -> None:
        for s in r.novel_sets:
            best = {k: r.best(k, s) for k in ("novelty", "peer")}
            text = ", ".join(
                f"best {k} {m.name} {m.metrics[s]['auroc']:.3f}" for k, m in best.items() if m is not None
            )
            print(f"[{time.perf_counter() - t0:6.0f} s] {r.scenario} / {s}: AUROC {text}", flush=True)

    try:
        scenarios = build_scenarios(args.scenario, size=args.size, seed=args.seed, families=args.family)
        run = run_benchmark(
            scenarios,
            backbone=args.backbone,
            alpha=args.alpha,
            peers=peers,
            require_peers=args.require_peers,
            progress=False if args.quiet else None,
            on_result=report,
        )
    except DatasetNotInstalledError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except NoveltyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md, js = run.write(args.out)
    print(run.to_markdown())
    print(f"wrote {md} and {js} in {run.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
