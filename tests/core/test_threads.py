"""The thread policy (``Embedder(threads="auto")``, :mod:`novelty.threads`): every thread on an idle machine,
fewer when another process takes cores and fewer are faster, back to all when it leaves; the load measured."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import novelty
from novelty.errors import InvalidInputError
from novelty.machine import OtherLoad, machine_busy_seconds
from novelty.threads import PROBE_MOST, AdaptiveThreads, check_threads, thread_choices


def run(policy: AdaptiveThreads, batches: int, speed: dict[int, float], others: float | None) -> list[int]:
    """Drive ``policy`` for ``batches`` batches of 32 images whose model time follows ``speed`` (img/s per
    thread count) while other processes keep ``others`` cores busy; the counts it picked."""
    picked = []
    for _ in range(batches):
        n = policy.pick()
        picked.append(n)
        policy.record(n, 32, 32 / speed[n], others=others)
    return picked


def test_the_counts_tried_are_all_half_and_one():
    assert thread_choices(2) == (2, 1)
    assert thread_choices(16) == (16, 8, 1)
    assert thread_choices(1) == (1,)
    for bad in ("fast", 0, -1, 1.5, True):
        with pytest.raises(InvalidInputError):
            check_threads(bad)
    assert check_threads("auto") == "auto" and check_threads(None) is None and check_threads(3) == 3


def test_an_idle_machine_uses_every_thread_and_probes_nothing():
    p = AdaptiveThreads(2)
    # even were one thread faster: with nothing else running, nothing is probed (an idle machine pays nothing)
    assert set(run(p, 200, {2: 100.0, 1: 150.0}, others=0.05)) == {2}
    assert p.probes == 0 and not p.contended


def test_a_busy_core_moves_to_fewer_threads_when_they_are_faster_and_back_when_it_is_free():
    p = AdaptiveThreads(2)
    run(p, 10, {2: 100.0, 1: 60.0}, others=0.0)
    picked = run(p, 200, {2: 28.0, 1: 40.0}, others=1.0)  # the measured 2-core case: 2 threads collapse
    assert p.current == 1
    assert picked.index(1) <= 2, picked[:10]  # probed at once
    assert picked[10:].count(2) <= 200 // PROBE_MOST + 4  # then rarely: the probes back off
    picked = run(p, 30, {2: 100.0, 1: 60.0}, others=0.0)
    assert p.current == 2 and picked[-10:] == [2] * 10


def test_under_load_every_thread_stays_when_it_is_still_faster():
    p = AdaptiveThreads(2)
    picked = run(p, 100, {2: 70.0, 1: 45.0}, others=1.0)
    assert p.current == 2 and picked[-20:].count(2) >= 19


def test_a_warm_up_batch_is_not_measured():
    p = AdaptiveThreads(2)
    n = p.pick()
    p.record(n, 32, 100.0, others=1.0)  # a first batch 100 s long (compilation): ignored
    run(p, 40, {2: 100.0, 1: 50.0}, others=1.0)
    assert p.current == 2


def test_without_a_load_reading_it_probes_on_its_schedule_and_follows_a_slowdown():
    p = AdaptiveThreads(2)
    run(p, 30, {2: 100.0, 1: 60.0}, others=None)
    assert p.current == 2 and p.probes >= 1 and p.contended
    run(p, 40, {2: 30.0, 1: 45.0}, others=None)  # a process started: 2 threads slowed to 0.3×
    assert p.current == 1


def test_other_load_is_the_machine_s_busy_time_less_this_process_s(monkeypatch):
    import novelty.machine as m

    clock = {"busy": 100.0, "own": 5.0, "wall": 10.0}
    monkeypatch.setattr(m, "machine_busy_seconds", lambda: clock["busy"])
    monkeypatch.setattr(m.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(m.time, "perf_counter", lambda: clock["wall"])
    load = OtherLoad()
    load.start()
    clock.update(busy=100.0 + 2.0 * 0.5 + 0.5, own=5.0 + 2.0 * 0.5, wall=10.5)  # 2 own cores + 1 other, 0.5 s
    assert load.stop() == pytest.approx(1.0)
    clock.update(busy=clock["busy"] + 0.2, own=clock["own"] + 0.3, wall=11.0)
    load.start()
    clock.update(wall=11.5)
    assert load.stop() == 0.0  # tick rounding never reads below zero
    monkeypatch.setattr(m, "machine_busy_seconds", lambda: None)
    load.start()
    assert load.stop() is None


def test_a_busy_process_beside_this_one_is_seen():
    if machine_busy_seconds() is None:
        pytest.skip("no /proc/stat on this system")
    load = OtherLoad()
    load.start()
    time.sleep(0.3)
    before = load.stop()
    if before is None or before > 0.3:
        pytest.skip(f"other processes already keep {before} cores busy: no quiet baseline")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        load.start()
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end:  # this process's own work (one core) does not count as others'
            pass
        during = load.stop()
    finally:
        busy.kill()
        busy.wait()
    assert during is not None and during >= 0.5, (before, during)


def test_auto_threads_embed_the_same_and_give_the_thread_count_back(tmp_path):
    from skimage import data

    imgs = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()] * 4
    fixed = novelty.Embedder(device="cpu", batch_size=4)
    auto = novelty.Embedder(device="cpu", threads="auto", batch_size=4)
    assert fixed.threads is None and fixed.threads_policy() is None
    policy = auto.threads_policy()
    assert policy is not None and policy.most == torch.get_num_threads()
    policy.load.stop = lambda: 1.5  # type: ignore[method-assign]  # as if a process took the cores
    before = torch.get_num_threads()
    a = auto.embed(imgs)
    assert torch.get_num_threads() == before
    if before > 1:
        assert policy.probes >= 1 and len(policy.state()["img_s"]) >= 1  # type: ignore[arg-type]
    np.testing.assert_allclose(a, fixed.embed(imgs), rtol=0, atol=1e-5)
    assert auto.threads_policy(fresh=True) is not policy
