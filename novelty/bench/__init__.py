"""Benchmark suite: named OOD scenarios on real offline data, standard metrics, peers side by side.

    python -m novelty.bench                       # all scenarios, full size → benchmarks/results/
    python -m novelty.bench --size small --scenario textile

    from novelty.bench import build_scenarios, run_benchmark
    run = run_benchmark(build_scenarios(size="small"))
    print(run.to_markdown())

See :mod:`novelty.bench.scenarios` (what is compared), :mod:`novelty.bench.peers` (the peers and their
settings) and :mod:`novelty.bench.runner` (how it is measured).
"""

from novelty.bench.peers import PEERS, PeerNotInstalledError, run_peer
from novelty.bench.runner import (
    OUR_METHODS,
    BenchmarkRun,
    EmbeddingCache,
    ScenarioResult,
    run_benchmark,
    run_scenario,
)
from novelty.bench.scenarios import FAMILIES, SIZES, Scenario, build_scenarios, scenario_names

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
