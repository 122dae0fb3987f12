"""Tests that must run in a pytest process of their own (native libraries that leave the process unable to fork
or to run PyTorch safely afterwards): the parent test runs them in a child and checks it passed; in the parent
they skip."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def skip_unless_own_process(flag: str, parent: str) -> None:
    """Skip unless this process is the child started by ``parent`` (``flag`` set to ``1``)."""
    if os.environ.get(flag) != "1":
        pytest.skip(f"runs in a process of its own ({parent})")


def run_in_own_process(
    path: str, flag: str, *args: str, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    """``pytest -q path *args`` in a child process with ``flag=1``; its completed process."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", path, *args],
        env={**os.environ, flag: "1"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
