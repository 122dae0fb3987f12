"""A throwaway Label Studio server for the tests: started from its own venv ``.venv-ls`` (``make label-studio``).

``LabelStudioServer(data_dir, document_root).start()`` runs ``label-studio start`` on a free local port with its
data (SQLite database, uploads) under ``data_dir``, local-file serving enabled under ``document_root``, a user
and a legacy API token fixed up front; it waits until ``/health`` answers and :meth:`stop` ends the whole process
group. :meth:`api` calls the HTTP API with the token.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LS_VENV = ROOT / ".venv-ls"
LS_BIN = LS_VENV / "bin" / "label-studio"
USERNAME = "annotator@example.com"
PASSWORD = "novelty-test-password"
TOKEN = "0123456789abcdef0123456789abcdef01234567"


def installed() -> bool:
    return LS_BIN.is_file() and os.access(LS_BIN, os.X_OK)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LabelStudioServer:
    def __init__(self, data_dir: Path, document_root: Path, *, startup_timeout_s: float = 300.0) -> None:
        self.data_dir = Path(data_dir)
        self.document_root = Path(document_root)
        self.timeout = startup_timeout_s
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "server.log"

    def start(self) -> LabelStudioServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": f"{LS_VENV / 'bin'}:/usr/bin:/bin",
            "HOME": str(self.data_dir),
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "SENTRY_DSN": "",
            "FRONTEND_SENTRY_DSN": "",
            "COLLECT_ANALYTICS": "false",
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [
            str(LS_BIN),
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir / "data"),
            "--username",
            USERNAME,
            "--password",
            PASSWORD,
            "--user-token",
            TOKEN,
            "--enable-legacy-api-token",
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 (the server writes to it until stop)
        self.proc = subprocess.Popen(
            cmd, cwd=self.data_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"label-studio exited with {self.proc.returncode}:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/health", timeout=5) as r,
            ):
                if r.status == 200:
                    return self
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(
            f"label-studio did not answer /health within {self.timeout:g} s:\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)

    def api(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        """Call the API with the user's token; JSON in and out (``raw``: the response bytes)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                payload = r.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: HTTP {e.code}: {e.read()[:2000]!r}") from None
        if raw:
            return payload
        return json.loads(payload) if payload else None

    def get_bytes(self, path: str) -> tuple[int, bytes]:
        """GET with the token; (status, body) without raising on HTTP errors."""
        req = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Token {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
