"""Label Studio's REST API over HTTP: :class:`LabelStudio`, a server and an API key; the errors every call
turns into; where the key comes from (:func:`read_api_key`). What is done with it (projects, storages, tasks,
annotations): :mod:`novelty.flywheel.labels.labelstudio_api`.

    client = LabelStudio("http://localhost:8080", read_api_key())    # $LABEL_STUDIO_API_KEY, or a file
    client.request("GET", "/api/projects", query={"title": "windshield"})

The API key: a personal access token (a JWT; exchanged at ``/api/token/refresh/`` for an access token sent as
``Authorization: Bearer``, refreshed when it expires) or a legacy token (sent as ``Authorization: Token``; the
server accepts those only when its organization allows them, ``label-studio start --enable-legacy-api-token``).
It comes from the environment (``LABEL_STUDIO_API_KEY``) or a file, never from a command line, and no message
or log line contains it. Every error is a :class:`LabelStudioError` that names the server and says what to do:
:class:`LabelStudioUnreachableError` (with the command that starts a server this package can export to),
:class:`LabelStudioAuthError` (401: which kind of token was refused and how to allow it; 403).

HTTP goes through the standard library (``urllib.request``): the base install depends on no HTTP client (httpx
comes only with the ``serve`` extra, for FastAPI's test client), and a dozen JSON requests do not need one.
Redirects are not followed: the key would travel with them to wherever they point.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import read_regular_file

__all__ = [
    "API_KEY_ENV",
    "LabelStudio",
    "LabelStudioAuthError",
    "LabelStudioError",
    "LabelStudioUnreachableError",
    "check_url",
    "read_api_key",
]

API_KEY_ENV = "LABEL_STUDIO_API_KEY"
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_LEGACY_HELP = (
    "a legacy token (Account & Settings → Legacy Token) works only when the server allows legacy tokens: start it "
    "with `label-studio start --enable-legacy-api-token` (with `--user-token TOKEN` to fix the token up front), "
    "or allow them under Organization → API Tokens Settings; or use a personal access token "
    "(Account & Settings → Personal Access Token)"
)
_PERSONAL_HELP = (
    "it may be expired or revoked, belong to another server, or personal access tokens may be disabled "
    "(Organization → API Tokens Settings); create a new one under Account & Settings → Personal Access Token, "
    "or use a legacy token on a server started with `label-studio start --enable-legacy-api-token`"
)


class LabelStudioError(NoveltyError):
    """Label Studio refused a request or answered something unexpected (the message names the server and what
    to do)."""


class LabelStudioUnreachableError(LabelStudioError):
    """No answer from the server's URL (not running, wrong host or port, a timeout)."""


class LabelStudioAuthError(LabelStudioError):
    """No API key, or the server refuses it (401) or forbids the request to its user (403)."""


def check_url(url: Any, what: str = "the Label Studio URL") -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; :class:`InvalidInputError` otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError(f"{what} must be a URL such as http://localhost:8080, got {url!r}")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InvalidInputError(f"{what} must be an http(s) URL such as http://localhost:8080, got {url!r}")
    if parts.username or parts.password:
        raise InvalidInputError(
            f"{what} must not carry credentials; give the API key through the environment"
        )
    return url.strip().rstrip("/")


def read_api_key(api_key_file: str | os.PathLike[str] | None = None, env: str = API_KEY_ENV) -> str:
    """The API key: the first line of ``api_key_file`` when given, else the environment variable ``env``.
    :class:`LabelStudioAuthError` says where to put one when there is none."""
    if api_key_file is not None:
        path = Path(os.path.expanduser(os.fspath(api_key_file)))
        try:
            text = read_regular_file(path, max_bytes=1 << 16).decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise LabelStudioAuthError(f"cannot read the Label Studio API key file {path} ({e})") from None
        key = text.strip().splitlines()[0].strip() if text.strip() else ""
        if not key:
            raise LabelStudioAuthError(f"the Label Studio API key file {path} is empty")
        return key
    key = os.environ.get(env, "").strip()
    if not key:
        raise LabelStudioAuthError(
            f"no Label Studio API key: set the environment variable {env} or give a file holding it "
            "(--api-key-file PATH; flywheel config: [label_studio] api_key_file); the key is a personal access "
            "token (Account & Settings → Personal Access Token) or a legacy token on a server started with "
            "`label-studio start --enable-legacy-api-token`"
        )
    return key


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx comes back as an HTTPError: the key never follows a redirect


class LabelStudio:
    """A Label Studio server and an API key (see the module docstring). ``document_root``, when known, goes into
    the message that says how to start the server."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        document_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.url = check_url(url)
        if not isinstance(api_key, str) or not api_key.strip():
            raise LabelStudioAuthError("the Label Studio API key is empty")
        self._key = api_key.strip()
        self.personal = bool(_JWT.match(self._key))  # a personal access token, else a legacy token
        self.timeout = float(timeout)
        self.document_root = None if document_root is None else Path(document_root)
        self._access: str | None = None
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:  # never the key
        kind = "personal access token" if self.personal else "legacy token"
        return f"LabelStudio({self.url!r}, {kind})"

    # --- transport ------------------------------------------------------------------------------------------
    def _send(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> tuple[int, bytes, Mapping[str, str]]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=dict(headers))
        try:
            with self._opener.open(req, timeout=self.timeout) as r:
                return int(r.status), r.read(), dict(r.headers.items())
        except urllib.error.HTTPError as e:
            try:
                body = e.read()
            except (OSError, ValueError, AttributeError):
                body = b""
            finally:
                e.close()
            return int(e.code), body, dict(e.headers.items()) if e.headers else {}
        except (urllib.error.URLError, OSError, ValueError) as e:  # refused, no such host, timeout, bad reply
            reason = getattr(e, "reason", e)
            raise LabelStudioUnreachableError(
                f"cannot reach Label Studio at {self.url} ({reason}): is it running there? Start it with "
                f"`{self.start_command()}`"
            ) from None

    def start_command(self) -> str:
        """How to start a server this package can export to, at this URL's port."""
        port = urllib.parse.urlsplit(self.url).port or 8080
        root = self.document_root if self.document_root is not None else "DIR"
        return (
            f"LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} "
            f"label-studio start --port {port}"
        )

    def _authorization(self, refresh: bool = False) -> str:
        if not self.personal:
            return f"Token {self._key}"
        if self._access is None or refresh:
            status, payload, _ = self._send(
                "POST",
                "/api/token/refresh/",
                json.dumps({"refresh": self._key}).encode(),
                {"Content-Type": "application/json", "Accept": "application/json"},
            )
            answer = _json_body(payload) if status == 200 else None
            access = answer.get("access") if isinstance(answer, dict) else None
            if not isinstance(access, str) or not access:
                raise LabelStudioAuthError(
                    f"Label Studio at {self.url} refused the personal access token (HTTP {status} from "
                    f"/api/token/refresh/{_error_detail(payload)}): {_PERSONAL_HELP}"
                )
            self._access = access
        return f"Bearer {self._access}"

    def request(
        self, method: str, path: str, body: Any = None, *, query: Mapping[str, Any] | None = None
    ) -> Any:
        """Call the API (``path`` like ``/api/projects``): JSON in and out; every error a
        :class:`LabelStudioError` naming the server, the request and what to do."""
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        data = None if body is None else json.dumps(body).encode()
        status, payload = self._call(method, path, data)
        if status >= 400 or 300 <= status < 400:
            raise self._error(method, path, status, payload)
        return _json_body(payload) if payload.strip() else None

    def get_bytes(self, path: str) -> tuple[int, bytes]:
        """GET with the key (a local file Label Studio serves); ``(status, body)`` without raising on 404."""
        status, payload = self._call("GET", path, None)
        if status in (401, 403):
            raise self._error("GET", path, status, payload)
        return status, payload

    def _call(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        headers = {"Accept": "application/json", "Authorization": self._authorization()}
        if data is not None:
            headers["Content-Type"] = "application/json"
        status, payload, _ = self._send(method, path, data, headers)
        if status == 401 and self.personal:  # the access token expired: one fresh one
            headers["Authorization"] = self._authorization(refresh=True)
            status, payload, _ = self._send(method, path, data, headers)
        return status, payload

    def _error(self, method: str, path: str, status: int, payload: bytes) -> LabelStudioError:
        where = f"Label Studio at {self.url}"
        detail = _error_detail(payload)
        bare = path.split("?")[0]
        if status == 401:
            if self.personal:
                return LabelStudioAuthError(
                    f"{where} refused the personal access token (HTTP 401 on {method} {bare}{detail}): "
                    f"{_PERSONAL_HELP}"
                )
            return LabelStudioAuthError(
                f"{where} refused the API key as a legacy token (HTTP 401 on {method} {bare}{detail}): "
                f"{_LEGACY_HELP}"
            )
        if status == 403:
            return LabelStudioAuthError(
                f"{where} forbids {method} {bare} to the API key's user (HTTP 403{detail}): use the key of a user "
                "of the organization that owns the project, with the right to manage projects"
            )
        if 300 <= status < 400:
            return LabelStudioError(
                f"{where} redirects {method} {bare} (HTTP {status}): give the URL it redirects to instead "
                "(the API key is never sent after a redirect)"
            )
        return LabelStudioError(f"{where}: {method} {bare} failed with HTTP {status}{detail}")


def _json_body(payload: bytes) -> Any:
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _error_detail(payload: bytes, limit: int = 600) -> str:
    """``": <what the server said>"`` from a JSON error body (``detail``, ``validation_errors``), else ``""``."""
    obj = _json_body(payload)
    if not isinstance(obj, dict):
        return ""
    parts: list[str] = []
    if isinstance(obj.get("detail"), str) and obj["detail"] != "Validation error":
        parts.append(obj["detail"])
    errors = obj.get("validation_errors")
    if isinstance(errors, dict):
        for key, value in errors.items():
            msgs = value if isinstance(value, list) else [value]
            text = "; ".join(str(m) for m in msgs)
            parts.append(text if key == "non_field_errors" else f"{key}: {text}")
    if not parts and isinstance(obj.get("detail"), str):
        parts.append(obj["detail"])
    text = " — ".join(parts)
    return f": {text[:limit]}" if text else ""
