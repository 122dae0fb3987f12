"""``novelty serve DETECTOR_DIR``: the scoring and flagging service (FastAPI on uvicorn).

Registered in :mod:`novelty.cli` like every command module: ``COMMANDS``, :func:`add_parsers` and :func:`run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from novelty.cli.common import int_arg, real_arg
from novelty.errors import InvalidInputError, NoveltyError
from novelty.serve.auth import ADMIN_ENV, API_ENV, read_tokens

__all__ = ["COMMANDS", "add_arguments", "add_parsers", "run"]

COMMANDS = ("serve",)

T = TypeVar("T")


# --- option values, checked while the arguments are parsed: before anything is loaded ----------------------
# (int_arg and real_arg: the argument types of every subcommand, over novelty.params' checks)
def _runtimes() -> list[str]:
    from novelty.runtimes import AUTO, RUNTIMES  # lazy: pulls in torch (no runtime's engine)

    return [*sorted(RUNTIMES), AUTO]


def _device(text: str) -> str:
    from novelty.embedder import parse_device  # lazy: pulls in torch, only when `novelty serve` is parsed

    try:
        parse_device(text)
    except InvalidInputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


_DAY = 86_400.0


def _ranged(parse: Callable[[str], T], allowed: str) -> Callable[[str], T]:
    """An integer type whose refusals name the whole allowed range, not only the bound that was passed (the
    help text shows the same words); the number types name their interval already."""

    def checked(text: str) -> T:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{e} (allowed: {allowed})") from None

    checked.__name__ = parse.__name__
    return checked


def _one_line_error(parser: argparse.ArgumentParser) -> Callable[[str], NoReturn]:
    """``parser.error`` that prints one line (``novelty serve: error: argument --port: …``) and exits 2,
    without the usage text, which would hide the line that matters."""

    def error(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    return error


DESCRIPTION = """Serve a detector over HTTP: POST /v1/score, /v1/score:batch, /v1/flag; GET /v1/flags,
/healthz, /readyz, /metrics; POST /v1/admin/reload. Clients authenticate with a bearer token
(--token-file or NOVELTY_API_TOKENS, comma-separated); the service refuses to start without one unless
--no-auth. Scores: higher = more novel; is_novel = p_value < alpha."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("detector", metavar="DETECTOR_DIR", help="a saved detector (novelty fit --out DIR)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument(
        "--port",
        type=_ranged(int_arg(1, 65535), "1 to 65535"),
        default=8000,
        help="port, 1 to 65535 (default: %(default)s)",
    )
    p.add_argument(
        "--token-file",
        action="append",
        default=[],
        metavar="FILE",
        help="scoring tokens, one per line (repeatable; also NOVELTY_API_TOKENS)",
    )
    p.add_argument(
        "--admin-token-file",
        action="append",
        default=[],
        metavar="FILE",
        help="admin tokens for POST /v1/admin/reload (also NOVELTY_ADMIN_TOKENS)",
    )
    p.add_argument(
        "--no-auth", action="store_true", help="serve without authentication (trusted networks only)"
    )
    p.add_argument(
        "--flag-store",
        default="novelty-flags",
        metavar="DIR_OR_URL",
        help="where flags go: a directory (SQLite + images) or a postgresql:// URL (default: %(default)s)",
    )
    p.add_argument(
        "--max-body-mb",
        type=real_arg(0.0, 65536.0, low_open=True),
        default=16.0,
        help="largest request body in MiB, > 0 and ≤ 65536 (default: %(default)s)",
    )
    p.add_argument(
        "--max-pixels",
        type=int_arg(1),
        default=40_000_000,
        help="largest image in pixels, ≥ 1 (default: %(default)s)",
    )
    p.add_argument(
        "--timeout",
        type=real_arg(0.0, _DAY, low_open=True),
        default=30.0,
        help="seconds to score a request, > 0 and ≤ 86400 (default: %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=real_arg(0.0, _DAY, low_open=True),
        default=15.0,
        help="seconds to receive a body, > 0 and ≤ 86400 (default: %(default)s)",
    )
    p.add_argument(
        "--max-batch",
        type=int_arg(1),
        default=32,
        help="images per forward pass, ≥ 1 (default: %(default)s)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=real_arg(0.0, 60_000.0),
        default=None,
        help="milliseconds a batch waits for images still decoding, 0 to 60000 (default: the runtime's, "
        "measured: 5; 20 for openvino-bf16)",
    )
    p.add_argument(
        "--max-queue",
        type=int_arg(1),
        default=512,
        help="images waiting before 503, ≥ 1 (default: %(default)s)",
    )
    p.add_argument(
        "--decode-threads",
        type=_ranged(int_arg(1, 1024), "1 to 1024"),
        default=2,
        help="decoding threads, 1 to 1024 (default: %(default)s)",
    )
    p.add_argument(
        "--watch-interval",
        type=real_arg(0.0, _DAY),
        default=2.0,
        help="seconds between checks of DETECTOR_DIR/MANIFEST.sha256 for a new detector, 0 to 86400; 0: off "
        "(default: %(default)s)",
    )
    p.add_argument("--device", type=_device, default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument(
        "--runtime",
        choices=_runtimes(),
        default=None,
        help="score with this runtime instead of the one the detector was calibrated with (refused where its "
        "embeddings differ beyond the tolerance; auto: the fastest measured here among those that may stand in; "
        "see README 'Runtimes'; optional engines: pip install 'novelty[NAME]')",
    )
    p.add_argument(
        "--torch-threads",
        type=_ranged(int_arg(0, 1024), "0 to 1024"),
        default=0,
        help="threads of the model's forward pass (process-wide), 0 to 1024; 0: torch's default, one per core "
        "(default)",
    )
    p.add_argument(
        "--adaptive-threads",
        action="store_true",
        help="use fewer compute threads while other processes keep cores busy and fewer are measured faster "
        "(scores may differ in their last bits; see README 'Runtimes')",
    )
    p.add_argument(
        "--max-connections",
        type=int_arg(1),
        default=1000,
        help="open connections before new ones get 503, ≥ 1 — a bound on clients that hold connections "
        "without finishing their headers (default: %(default)s)",
    )
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    # a bad value ends the command at once with one line naming the option and its range (exit 2)
    p.error = _one_line_error(p)  # type: ignore[method-assign,assignment]


def add_parsers(sub: Any, epilog: str, fmt: type[argparse.HelpFormatter]) -> None:
    """``novelty serve`` (its options: :func:`add_arguments`); no epilog, the service has its own exit codes."""
    add_arguments(
        sub.add_parser(
            "serve", help="serve a detector over HTTP: scoring, flags, metrics", description=DESCRIPTION
        )
    )


def run(args: argparse.Namespace) -> int:
    """Build the app from ``args`` and serve until SIGINT/SIGTERM. Exit codes: 0 · 1 failure · 2 usage."""
    try:
        import uvicorn

        from novelty.serve.app import ServeConfig, create_app  # lazy: fastapi is optional
    except ImportError as e:
        print(
            f"novelty serve: error: {e.name or e} is not installed: pip install 'novelty[serve]'",
            file=sys.stderr,
        )
        return 1
    served = logging.getLogger("novelty.serve")
    if served.getEffectiveLevel() > logging.INFO:
        served.setLevel(logging.INFO)  # without -v too: the detector served at start-up and at each reload

    try:
        api_tokens = read_tokens(args.token_file, API_ENV)
        admin_tokens = read_tokens(args.admin_token_file, ADMIN_ENV)
        config = ServeConfig(
            args.detector,
            flag_store=args.flag_store,
            api_tokens=api_tokens,
            admin_tokens=admin_tokens,
            auth=not args.no_auth,
            max_body_bytes=max(1, int(args.max_body_mb * 1024 * 1024)),
            max_pixels=args.max_pixels,
            request_timeout_s=args.timeout,
            body_timeout_s=args.body_timeout,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue,
            decode_threads=args.decode_threads,
            watch_interval_s=args.watch_interval,
            device=args.device,
            runtime=args.runtime,
            torch_threads=args.torch_threads or None,
            adaptive_threads=args.adaptive_threads,
        )
    except NoveltyError as e:
        print(f"novelty serve: error: {e}", file=sys.stderr)
        return 2
    if not admin_tokens and config.auth:
        logging.getLogger("novelty.serve").warning(
            "no admin token: POST /v1/admin/reload is closed (new detectors still load when "
            "MANIFEST.sha256 changes)"
        )
    if not config.auth:
        logging.getLogger("novelty.serve").warning("serving WITHOUT authentication (--no-auth)")
    app = create_app(config)
    try:  # fail fast, with the reason, before listening: a bad detector, an unreachable store
        app.state.service.open()
    except (NoveltyError, OSError) as e:
        print(f"novelty serve: error: {e}", file=sys.stderr)
        return 1
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            access_log=not args.no_access_log,
            log_level="info",
            timeout_keep_alive=30,
            limit_concurrency=args.max_connections,
            timeout_graceful_shutdown=30,
        )
    )
    try:
        server.run()
    except SystemExit as e:  # uvicorn exits on a failed start-up (e.g. the port is taken)
        return 1 if e.code else 0
    return 0 if server.started else 1
