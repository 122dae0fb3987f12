"""Two writers at the same time.

Saving and loading the same directory at the same time: every load gives a whole detector or a
NoveltyError, never a detector made of two artifacts (benchmarks/save_load_race.py, shortened).

The lock of a dataset, of a registry and of a batch output: another process holding it makes a writer wait (a
dataset up to its timeout, a registry without limit) or refuses it at once (a batch output), each with its own
error; a process of an older release, which held the same file with a bare ``flock``, is kept out just as well."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks.save_load_race import race
from novelty.batch.errors import ResultsLockedError
from novelty.batch.results import PARTS_SUFFIX, ResultWriter, read_results
from novelty.errors import NoveltyError
from novelty.fileio import ExclusiveFileLock
from novelty.flywheel import dataset as dsmod
from novelty.flywheel.dataset import Dataset, DatasetLockedError, Entry
from novelty.flywheel.registry.store import LOCK, Change, Registry, RegistryError


@pytest.mark.slow
def test_loads_during_saves_give_whole_detectors_or_novelty_errors(tmp_path):
    res = race(seconds=8.0, workdir=tmp_path)
    counts = res["counts"]
    print(res)
    assert res["saves"]["saves"] >= 4, res
    assert counts["mixed"] == 0, res["mixed_examples"]
    assert res["anything_else"] == 0, counts
    assert counts["whole A"] + counts["whole B"] > 0, counts


# --- the lock of datasets, registries and batch outputs --------------------------------------------------
# another process that holds a lock file until its stdin closes: through filelock, or with a bare flock
HOLDER = """
import sys
if sys.argv[2] == "flock":
    import fcntl, os
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
else:
    import filelock
    lock = filelock.FileLock(sys.argv[1])  # kept: a lock object dropped lets go
    lock.acquire()
print("locked", flush=True)
sys.stdin.readline()
"""
HOW = ["filelock", pytest.param("flock", marks=pytest.mark.skipif(sys.platform == "win32", reason="Unix"))]


class Holder:
    """A second process holding the lock file ``path`` from construction until :meth:`stop` (or the ``with``)."""

    def __init__(self, path: Path, how: str = "filelock") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), how],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "locked", line

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # it reads the end of its input and exits, which frees the lock
        self.proc.wait(timeout=60)

    def stop_after(self, seconds: float) -> None:
        threading.Timer(seconds, self.stop).start()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)


def entry(i: int) -> Entry:
    return Entry(
        id=f"e{i}", sha256=f"{i:064x}", path=f"/nowhere/{i}.png", label="a", source="s", labeller="human:x"
    )


@pytest.mark.parametrize("how", HOW)
def test_a_dataset_write_waits_for_another_process_up_to_its_timeout(tmp_path, monkeypatch, how):
    ds = Dataset.create(tmp_path / "ds", ["a"])
    monkeypatch.setattr(dsmod, "LOCK_TIMEOUT_S", 0.5)
    with Holder(ds.path / dsmod.LOCK_FILE, how) as holder:
        t0 = time.monotonic()
        with pytest.raises(
            DatasetLockedError, match=r"another process has been writing this dataset for over 0\.5 s"
        ):
            ds.add([entry(1)], source="x")
        assert time.monotonic() - t0 >= 0.45  # it waited for its timeout, not less
        monkeypatch.setattr(dsmod, "LOCK_TIMEOUT_S", 60.0)
        holder.stop_after(1.0)
        t0 = time.monotonic()
        assert ds.add([entry(1)], source="x") == 1  # waits until the other process lets go
        assert time.monotonic() - t0 >= 0.9
    assert Dataset.open(ds.path).latest_version == 1
    assert sorted(os.listdir(ds.path)) == sorted([".lock", "dataset.json", "entries.jsonl"])


@pytest.mark.parametrize("how", HOW)
def test_a_registry_change_waits_for_another_process_without_limit(tmp_path, how):
    reg = Registry.create(tmp_path / "reg")
    done: list[Change] = []
    with Holder(reg.root / LOCK, how) as holder:
        worker = threading.Thread(target=lambda: done.append(reg.set_alias("challenger", None)))
        worker.start()
        worker.join(2.0)
        assert worker.is_alive() and not done  # still waiting, and no timeout
        holder.stop()
        worker.join(60)
    assert not worker.is_alive() and len(done) == 1 and not done[0].changed
    shutil.rmtree(reg.root)
    with pytest.raises(RegistryError, match="cannot lock the registry"):
        reg.set_alias("challenger", None)
    assert not reg.root.exists()  # the lock does not make the directory again


@pytest.mark.parametrize("how", HOW)
def test_a_batch_output_held_by_another_process_is_refused_at_once(tmp_path, how):
    out = tmp_path / "r.csv"
    parts = out.with_name(out.name + PARTS_SUFFIX)
    parts.mkdir()
    with Holder(parts / ".lock", how):
        t0 = time.monotonic()
        with pytest.raises(ResultsLockedError, match="is being written by another process"):
            ResultWriter(out)
        assert time.monotonic() - t0 < 5
    w = ResultWriter(out, chunk_rows=10)  # the other process is gone
    w.write([{"key": "a"}])
    w.finalize()
    assert read_results(out) == [{"key": "a"}]


class _LockError(NoveltyError):
    pass


class _BusyError(_LockError):
    pass


def test_the_lock_between_threads_and_a_directory_renamed_away_by_its_holder(tmp_path):
    work = tmp_path / "work"

    def lock(path: Path, timeout: float | None) -> ExclusiveFileLock:
        return ExclusiveFileLock(
            path, timeout=timeout, what="w", error=_LockError, busy_error=_BusyError, make_parent=True
        )

    first = lock(work / ".lock", 0).acquire()
    with pytest.raises(_BusyError, match=r"w is locked by another process \(waited 0\.2 s\)"):
        lock(work / ".lock", 0.2).acquire()  # another thread's lock (here: this one's) keeps it out
    got: list[ExclusiveFileLock] = []
    waiter = threading.Thread(target=lambda: got.append(lock(work / ".lock", 60).acquire()))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not got
    os.rename(work, tmp_path / "trash")  # the holder renames its directory away, then lets go
    first.release()
    waiter.join(60)
    [second] = got
    assert second.held and work.is_dir()
    with pytest.raises(_BusyError):
        lock(work / ".lock", 0).acquire()  # the waiter holds the lock of the new directory,
    lock(tmp_path / "trash" / ".lock", 0).acquire().release()  # not of the renamed one
    second.release()
    assert not second.held
    lock(work / ".lock", 0).acquire().release()
    with pytest.raises(_LockError, match="cannot lock w"):
        ExclusiveFileLock(tmp_path / "nowhere" / ".lock", timeout=None, what="w", error=_LockError).acquire()
    assert not (tmp_path / "nowhere").exists()
