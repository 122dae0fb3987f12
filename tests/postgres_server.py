"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temporary directory,
listening on 127.0.0.1 at a free port, removed afterwards.

Debian's ``postgresql`` package provides the binaries (``make postgres`` installs it); ``initdb`` refuses to
run as root, so as root the server runs as the ``postgres`` system user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["find_postgres_bin", "postgres_server", "why_no_postgres"]


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: Debian's newest version, else the one on PATH."""
    for d in sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    ):
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(os.path.join(d, "pg_ctl"), os.X_OK):
            return Path(d)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    return None


def why_no_postgres() -> str | None:
    """``None`` when a server can be started here, else the reason (for ``pytest.skip``)."""
    if find_postgres_bin() is None:
        return "PostgreSQL binaries (initdb, pg_ctl) are missing: as root, `make postgres` installs Debian's postgresql"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' system user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to start PostgreSQL as the 'postgres' user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield its URL (``postgresql://novelty@127.0.0.1:PORT/postgres``); stop and remove it."""
    reason = why_no_postgres()
    if reason:
        raise RuntimeError(reason)
    bindir = find_postgres_bin()
    assert bindir is not None
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="novelty-pg-"))
    if os.geteuid() == 0:
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, env=env, capture_output=True, timeout=120)

    started = False
    try:
        try:
            run(
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "novelty",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
            run(
                str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start"
            )
            started = True
        except subprocess.CalledProcessError as e:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"PostgreSQL did not start: {e.stderr.decode(errors='replace')}\n{tail}"
            ) from e
        yield f"postgresql://novelty@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                env=env,
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(root, ignore_errors=True)
