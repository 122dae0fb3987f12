"""Helpers for the service tests and benchmarks: real images, a small detector, bad inputs, a real server.

- :func:`tiny_detector`: a real detector (``resnet10t`` with fixed random weights, kNN + a dry/wet head) fitted
  on real textile images in a few seconds — for fast tests that exercise the whole library path;
- :func:`street_jpegs`: frames of the street video (Debian's opencv-doc) encoded as JPEG;
- :func:`bomb_png`: a valid PNG of 12000 × 12000 pixels that compresses to ~150 KB;
- :class:`ServerProcess`: ``novelty serve`` in a subprocess on 127.0.0.1 at a free port.
"""

from __future__ import annotations

import io
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
WINDSHIELD = REPO / "checkpoints" / "windshield"


def tiny_detector(out: Path) -> Path:
    """Fit and save a small real detector at ``out`` (≈5 s): untrained ``resnet10t`` weights fixed by a seed
    (saved as a safetensors file beside it), kNN scorer, dry/wet head on textile nominal/global images."""
    import timm
    import torch
    from safetensors.torch import save_file

    import novelty
    from novelty.datasets import textile

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = out.parent / f"{out.name}-weights.safetensors"
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", pretrained=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    data = textile()
    images = data["nominal"][:40] + data["global"][:20]
    labels = ["dry"] * 40 + ["wet"] * 20
    det = novelty.NoveltyDetector(
        "resnet10t",
        weights=weights,
        scorers=("knn",),
        calibration_fraction=0.35,
        num_workers=0,
        head={"max_epochs": 5},
    )
    det.fit(images, labels=labels, progress=False)
    det.save(out)
    return out


def textile_images(kind: str = "nominal", n: int = 8, start: int = 40) -> list[Path]:
    from novelty.datasets import textile

    return [Path(p) for p in textile()[kind][start : start + n]]


def street_jpegs(
    n: int, size: tuple[int, int] = (320, 240), quality: int = 90, start: int = 0
) -> list[bytes]:
    """``n`` street frames (cycling through the 795 of the video) as JPEG bytes."""
    from novelty.datasets.windshield import street_frames

    frames = street_frames(size)
    out = []
    for i in range(start, start + n):
        buf = io.BytesIO()
        Image.fromarray(frames[i % len(frames)]).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(side: int = 12_000) -> bytes:
    """A complete, valid greyscale PNG of ``side × side`` black pixels: ~150 KB on the wire, 144 MB decoded."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
    )


def truncated_jpeg(jpeg: bytes) -> bytes:
    return jpeg[: len(jpeg) // 2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_token() -> str:
    return secrets.token_urlsafe(24)


class ServerProcess:
    """``novelty serve DETECTOR`` in a subprocess on 127.0.0.1; :meth:`start` waits until ``/readyz`` is 200.

    Tokens are passed through the environment; the server's output goes to ``log_path``.
    """

    def __init__(
        self,
        detector: Path,
        *,
        flag_store: str,
        token: str,
        admin_token: str | None = None,
        port: int | None = None,
        log_path: Path,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ):
        self.detector, self.flag_store, self.token, self.admin_token = (
            detector,
            flag_store,
            token,
            admin_token,
        )
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> ServerProcess:
        env = {**os.environ, **self.env, "NOVELTY_API_TOKENS": self.token, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
        if self.admin_token:
            env["NOVELTY_ADMIN_TOKENS"] = self.admin_token
        cmd = [
            sys.executable,
            "-c",
            "import sys; from novelty.cli import main; sys.exit(main())",
            "serve",
            str(self.detector),
            "--port",
            str(self.port),
            "--flag-store",
            self.flag_store,
            "--no-access-log",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self._log = log
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout_s} s:\n{self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        if hasattr(self, "_log") and not self._log.closed:
            self._log.close()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
