"""Benchmark suite: named OOD scenarios on real offline data, standard metrics, peers side by side.

    python -m benchmarks.ood                       # all scenarios, full size → benchmarks/results/
    python -m benchmarks.ood --size small --scenario textile

    from benchmarks.ood import build_scenarios, run_benchmark
    run = run_benchmark(build_scenarios(size="small"))
    print(run.to_markdown())

See :mod:`benchmarks.ood.scenarios` (what is compared), :mod:`benchmarks.ood.peers` (the peers and their
settings) and :mod:`benchmarks.ood.runner` (how it is measured).
"""

from benchmarks.ood.peers import PEERS, PeerNotInstalledError, run_peer
from benchmarks.ood.runner import (
    OUR_METHODS,
    BenchmarkRun,
    EmbeddingCache,
    ScenarioResult,
    run_benchmark,
    run_scenario,
)
from benchmarks.ood.scenarios import FAMILIES, SIZES, Scenario, build_scenarios, scenario_names

__all__ = [
    "FAMILIES",
    "OUR_METHODS",
    "PEERS",
    "SIZES",
    "BenchmarkRun",
    "EmbeddingCache",
    "PeerNotInstalledError",
    "Scenario",
    "ScenarioResult",
    "build_scenarios",
    "run_benchmark",
    "run_peer",
    "run_scenario",
    "scenario_names",
]
