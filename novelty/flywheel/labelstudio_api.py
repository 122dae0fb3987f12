"""Label Studio through its REST API: an export pushed into a project, the finished annotations pulled back.

    client = LabelStudio("http://localhost:8080", read_api_key(api_key_file=None))  # $LABEL_STUDIO_API_KEY
    pushed = push_export(client, "export/", "windshield")    # project, storages, tasks; idempotent
    pulled = pull_labels(client, "windshield", selection)     # the tasks of this selection, as exported

:func:`push_export` takes what ``novelty export --format label-studio`` wrote (``tasks.json``,
``label_config.xml``, ``export.json``) and brings a project up to date: it creates the project named ``project``
with the labelling config (or adds the classes it lacks to an existing one, never removing any), a "Local files"
import storage over the folders of the images (:func:`~novelty.flywheel.labelstudio.storage_paths`; created, never
synced), and imports the tasks with their pre-annotations. Tasks already in the project (the same ``sha256`` or
``novelty_id`` in their data) are left as they are, with their annotations: pushing twice adds nothing. Before
importing, it fetches one image through the server, so a server whose document root differs from the export's
is found before any task points at a missing file.

:func:`pull_labels` reads the project's JSON export (``GET /api/projects/<id>/export?exportType=JSON``) and keeps
the tasks of the selection (by ``novelty_id``, else ``sha256``); written to a file, they go through the one
reader of Label Studio's JSON (:func:`novelty.flywheel.labelstudio.read_export`, via
:func:`novelty.flywheel.labelimport.import_labels`). It counts labelled, skipped and unlabelled tasks.

The API key: a personal access token (a JWT; exchanged at ``/api/token/refresh/`` for an access token sent as
``Authorization: Bearer``, refreshed when it expires) or a legacy token (sent as ``Authorization: Token``; the
server accepts those only when its organization allows them, ``label-studio start --enable-legacy-api-token``).
It comes from the environment (``LABEL_STUDIO_API_KEY``) or a file, never from a command line, and no message
or log line contains it.

HTTP goes through the standard library (``urllib.request``): the base install depends on no HTTP client (httpx
comes only with the ``serve`` extra, for FastAPI's test client), and a dozen JSON requests do not need one.
Redirects are not followed: the key would travel with them to wherever they point.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novelty.errors import InvalidInputError, NoveltyError
from novelty.fileio import atomic_write_text, read_regular_file, sha256_bytes
from novelty.flywheel import labelstudio

__all__ = [
    "API_KEY_ENV",
    "LabelStudio",
    "LabelStudioAuthError",
    "LabelStudioError",
    "LabelStudioSettings",
    "LabelStudioUnreachableError",
    "Pulled",
    "PushResult",
    "check_url",
    "export_items",
    "find_project",
    "pull_labels",
    "push_export",
    "read_api_key",
]

log = logging.getLogger(__name__)

API_KEY_ENV = "LABEL_STUDIO_API_KEY"
#: tasks per import request
IMPORT_CHUNK = 250
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_SERVER_ROOT = re.compile(r'LOCAL_FILES_DOCUMENT_ROOT="([^"]*)"')
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
            answer = _json(payload) if status == 200 else None
            access = answer.get("access") if isinstance(answer, dict) else None
            if not isinstance(access, str) or not access:
                raise LabelStudioAuthError(
                    f"Label Studio at {self.url} refused the personal access token (HTTP {status} from "
                    f"/api/token/refresh/{_detail(payload)}): {_PERSONAL_HELP}"
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
        return _json(payload) if payload.strip() else None

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
        detail = _detail(payload)
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


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None


def _detail(payload: bytes, limit: int = 600) -> str:
    """``": <what the server said>"`` from a JSON error body (``detail``, ``validation_errors``), else ``""``."""
    obj = _json(payload)
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


# --- projects -------------------------------------------------------------------------------------------------
def find_project(client: LabelStudio, title: str) -> dict[str, Any] | None:
    """The project named exactly ``title`` (``None`` when there is none); :class:`LabelStudioError` when two or
    more have that name."""
    found: list[dict[str, Any]] = []
    page, size = 1, 100
    while True:
        res = client.request("GET", "/api/projects", query={"title": title, "page": page, "page_size": size})
        results = res.get("results") if isinstance(res, dict) else res
        if not isinstance(results, list):
            raise LabelStudioError(f"Label Studio at {client.url}: /api/projects did not answer with a list")
        found += [p for p in results if isinstance(p, dict) and p.get("title") == title]
        if not (isinstance(res, dict) and res.get("next")) or len(results) < size:
            break
        page += 1
    if len(found) > 1:
        ids = ", ".join(str(p.get("id")) for p in found)
        raise LabelStudioError(
            f"{len(found)} projects at {client.url} are named {title!r} (ids {ids}): rename all but one in "
            "Label Studio, or give a name only one project has"
        )
    return found[0] if found else None


def _project_tasks(client: LabelStudio, project_id: int) -> list[dict[str, Any]]:
    """Every task of the project with its annotations (Label Studio's JSON export)."""
    res = client.request(
        "GET",
        f"/api/projects/{project_id}/export",
        query={"exportType": "JSON", "download_all_tasks": "true"},
    )
    if not isinstance(res, list):
        raise LabelStudioError(
            f"Label Studio at {client.url}: the JSON export of project {project_id} is not a list of tasks"
        )
    return [t for t in res if isinstance(t, dict)]


def _task_keys(task: Mapping[str, Any]) -> tuple[str | None, str | None]:
    data = task.get("data")
    if not isinstance(data, dict):
        return None, None
    nid, sha = data.get("novelty_id"), data.get("sha256")
    return (nid if isinstance(nid, str) else None, sha if isinstance(sha, str) else None)


@dataclass(frozen=True)
class PushResult:
    """What :func:`push_export` did to the project."""

    project_id: int
    project_url: str
    created: bool  # the project was created now
    config_updated: bool  # classes were added to its labelling config
    storages_created: tuple[str, ...]  # the "Local files" storage paths added
    n_new: int  # tasks imported now
    n_present: int  # tasks of the export the project had already (left as they were)

    def summary(self, title: str) -> str:
        what = "created" if self.created else "updated" if self.n_new or self.config_updated else "unchanged"
        text = (
            f"Label Studio project {title!r} {what} ({self.project_url}): {self.n_new} task(s) imported, "
            f"{self.n_present} already there"
        )
        if self.storages_created:
            text += f"; local-files storage {', '.join(self.storages_created)}"
        if self.config_updated:
            text += "; classes added to its labelling config"
        return text


def _read_export_dir(export_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    try:
        manifest = json.loads((export_dir / "export.json").read_text(encoding="utf-8"))
        tasks = json.loads((export_dir / "tasks.json").read_text(encoding="utf-8"))
        config = (export_dir / "label_config.xml").read_text(encoding="utf-8")
    except (OSError, ValueError) as e:
        raise InvalidInputError(
            f"{export_dir}: not a Label Studio export of novelty (export.json, tasks.json, label_config.xml: {e})"
        ) from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("tool") != "label-studio"
        or not isinstance(tasks, list)
    ):
        raise InvalidInputError(
            f"{export_dir}: not a Label Studio export (export.json tool is not label-studio)"
        )
    return manifest, tasks, config


def _config_for(client: LabelStudio, project: Mapping[str, Any], ours: str, title: str) -> str | None:
    """The labelling config to give an existing project: ``None`` when it has every class of ours; else its
    classes followed by the missing ones (none removed, so no annotation loses its class)."""
    theirs = labelstudio.config_classes(str(project.get("label_config") or ""))
    wanted = labelstudio.config_classes(ours) or []
    if theirs is None:
        raise LabelStudioError(
            f"the project {title!r} at {client.url} has a labelling config without the choices "
            f"{labelstudio.FROM_NAME!r} over the image {labelstudio.TO_NAME!r} that the tasks need: give another "
            "project name, or replace its config with the exported label_config.xml"
        )
    missing = [c for c in wanted if c not in theirs]
    return labelstudio.label_config([*theirs, *missing]) if missing else None


def _ensure_storages(
    client: LabelStudio, project_id: int, paths: Sequence[Path], root: Path
) -> tuple[str, ...]:
    existing = client.request("GET", "/api/storages/localfiles", query={"project": project_id}) or []
    have = [Path(str(s.get("path"))) for s in existing if isinstance(s, dict) and s.get("path")]
    created: list[str] = []
    for p in paths:
        if any(p == h or h in p.parents for h in have):
            continue
        try:
            client.request(
                "POST",
                "/api/storages/localfiles",
                {
                    "project": project_id,
                    "path": str(p),
                    "title": f"novelty {p.name}"[:256],
                    "use_blob_urls": False,
                    "regex_filter": "",
                    "recursive_scan": True,
                },
            )
        except LabelStudioAuthError:
            raise
        except LabelStudioError as e:
            raise _storage_error(client, p, root, str(e)) from None
        have.append(p)
        created.append(str(p))
    return tuple(created)


def _storage_error(client: LabelStudio, path: Path, root: Path, message: str) -> LabelStudioError:
    served = _SERVER_ROOT.search(message)
    start = f"restart it with `{client.start_command()}`"
    if served and "must be a subdirectory" in message:
        return LabelStudioError(
            f"Label Studio at {client.url} serves local files from {served.group(1)} (its "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT), and the images lie outside it, under {path}: the export's "
            f"document root is {root}; {start}"
        )
    if served and "cannot be the same" in message:
        return LabelStudioError(
            f"Label Studio at {client.url} serves local files from {served.group(1)}, which is the images' folder "
            f"{path} itself (it needs a root above the storage folder): the export's document root is {root}; "
            f"{start}"
        )
    if "LOCAL_FILES_SERVING_ENABLED" in message:
        return LabelStudioError(f"Label Studio at {client.url} does not serve local files: {start}")
    if "does not exist" in message:
        return LabelStudioError(
            f"Label Studio at {client.url} cannot see the folder {path} (does it run on another machine or in a "
            f"container? it must see the images at the same paths): {message}"
        )
    return LabelStudioError(f"{message} (creating the local-files storage {path})")


def _check_served(client: LabelStudio, task: Mapping[str, Any], root: Path) -> None:
    """Fetch one task's image through the server: it must be the file the task names (same sha256)."""
    data = task.get("data") or {}
    url, sha = data.get(labelstudio.TO_NAME), data.get("sha256")
    if not isinstance(url, str):
        return
    status, body = client.get_bytes(url)
    if status == 200 and (not isinstance(sha, str) or sha256_bytes(body) == sha):
        return
    path = (task.get("meta") or {}).get("path") or urllib.parse.unquote(url)
    raise LabelStudioError(
        f"Label Studio at {client.url} does not serve {path} at {url} (HTTP {status}"
        + (", other bytes" if status == 200 else "")
        + f"): its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT is not the export's document root {root}; restart it "
        f"with `{client.start_command()}`, or export with the document root it has (--document-root; flywheel "
        "config: [label_studio] document_root). No task was imported."
    )


def push_export(client: LabelStudio, export_dir: str | os.PathLike[str], project: str) -> PushResult:
    """Create or update the project ``project`` from a Label Studio export folder (see the module docstring)."""
    d = Path(export_dir)
    manifest, tasks, config = _read_export_dir(d)
    root = Path(str(manifest.get("document_root") or ""))
    if client.document_root is None:
        client.document_root = root
    paths = [str((t.get("meta") or {}).get("path")) for t in tasks if (t.get("meta") or {}).get("path")]
    storages = labelstudio.storage_paths(paths, root)
    found = find_project(client, project)
    created = config_updated = False
    if found is None:
        found = client.request("POST", "/api/projects", {"title": project, "label_config": config})
        created = True
        log.info("created the Label Studio project %r (id %s)", project, found.get("id"))
    else:
        new_config = _config_for(client, found, config, project)
        if new_config is not None:
            client.request("PATCH", f"/api/projects/{found['id']}", {"label_config": new_config})
            config_updated = True
    pid = int(found["id"])
    present_ids: set[str] = set()
    present_shas: set[str] = set()
    for t in [] if created else _project_tasks(client, pid):
        nid, sha = _task_keys(t)
        present_ids.update([nid] if nid else [])
        present_shas.update([sha] if sha else [])
    new = [t for t in tasks if _task_keys(t)[0] not in present_ids and _task_keys(t)[1] not in present_shas]
    try:
        made = _ensure_storages(client, pid, storages, root)
        if new:
            _check_served(client, new[0], root)
    except LabelStudioError:
        if created:  # the project made a moment ago holds nothing yet: leave no half-made project behind
            try:
                client.request("DELETE", f"/api/projects/{pid}")
            except LabelStudioError as e:
                log.warning("could not remove the empty project %s again: %s", pid, e)
        raise
    for start in range(0, len(new), IMPORT_CHUNK):
        client.request("POST", f"/api/projects/{pid}/import", new[start : start + IMPORT_CHUNK])
    return PushResult(
        project_id=pid,
        project_url=f"{client.url}/projects/{pid}",
        created=created,
        config_updated=config_updated,
        storages_created=made,
        n_new=len(new),
        n_present=len(tasks) - len(new),
    )


# --- pulling the annotations ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pulled:
    """The tasks of a project that belong to the items asked for, and how far they are."""

    project_id: int
    tasks: list[dict[str, Any]] = field(repr=False)
    labelled: int
    skipped: int
    unlabelled: int
    missing: tuple[str, ...]  # item ids with no task in the project
    others: int  # tasks of the project that belong to none of the items (left out)

    @property
    def n(self) -> int:
        return len(self.tasks)

    @property
    def finished(self) -> bool:
        """Every item has a task, and every task is labelled or skipped."""
        return not self.missing and self.unlabelled == 0

    def summary(self, title: str) -> str:
        text = (
            f"Label Studio project {title!r}: {self.n} task(s) of the selection, {self.labelled} labelled, "
            f"{self.skipped} skipped, {self.unlabelled} unlabelled"
        )
        if self.missing:
            text += (
                f"; {len(self.missing)} item(s) without a task in the project, e.g. {list(self.missing[:3])}"
            )
        if self.others:
            text += f"; {self.others} task(s) of other selections left out"
        return text

    def to_json_text(self) -> str:
        """The kept tasks as a Label Studio JSON export (what :func:`~novelty.flywheel.labelstudio.read_export`
        reads)."""
        return json.dumps(self.tasks, indent=1, ensure_ascii=False) + "\n"


def pull_labels(client: LabelStudio, project: str, items: Iterable[Any]) -> Pulled:
    """The tasks of ``project`` that belong to ``items`` (objects with ``id`` and ``sha256``: a selection's items,
    or the tasks of an export), matched by ``novelty_id``, else by ``sha256`` (the task then carries the item's
    id, so the import matches it), with their annotations; see :class:`Pulled`."""
    found = find_project(client, project)
    if found is None:
        raise LabelStudioError(
            f"no project named {project!r} at {client.url}: export to it first "
            f"(novelty export SELECTION --to-label-studio {client.url} --project {project!r})"
        )
    pid = int(found["id"])
    wanted = list(items)
    by_id = {it.id: it for it in wanted}
    by_sha = {it.sha256: it for it in wanted}
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    others = 0
    for t in _project_tasks(client, pid):
        nid, sha = _task_keys(t)
        item = by_id.get(nid) if nid else None
        if item is None and sha:
            item = by_sha.get(sha)
        if item is None:
            others += 1
            continue
        if item.id in seen:  # a second task of one image (made by hand): the first counts
            continue
        seen.add(item.id)
        if nid != item.id:
            t = {**t, "data": {**t["data"], "novelty_id": item.id}}
        kept.append(t)
    states = [labelstudio.task_state(t) for t in kept]
    return Pulled(
        project_id=pid,
        tasks=kept,
        labelled=states.count("labelled"),
        skipped=states.count("skipped"),
        unlabelled=states.count("unlabelled"),
        missing=tuple(it.id for it in wanted if it.id not in seen),
        others=others,
    )


@dataclass(frozen=True)
class _Key:
    id: str
    sha256: str


def export_items(export_dir: str | os.PathLike[str]) -> list[Any]:
    """The items an export sent to Label Studio (``id``, ``sha256`` of each task of its ``tasks.json``)."""
    _, tasks, _ = _read_export_dir(Path(export_dir))
    out = []
    for t in tasks:
        nid, sha = _task_keys(t)
        if nid and sha:
            out.append(_Key(nid, sha))
    return out


# --- the flywheel's settings ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelStudioSettings:
    """A flywheel's ``[label_studio]`` section: the server, the project (``{turn}`` in the name: the turn's
    number, one project per turn), where the API key is, and the one document root every exported image lies
    under (the server's ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``)."""

    url: str
    project: str
    document_root: Path
    api_key_file: Path | None = None
    api_key_env: str = API_KEY_ENV

    KEYS = ("url", "project", "document_root", "api_key_file", "api_key_env")

    def project_name(self, turn: int) -> str:
        return self.project.replace("{turn}", f"{turn:04d}")

    def connect(self) -> LabelStudio:
        return LabelStudio(
            self.url, read_api_key(self.api_key_file, self.api_key_env), document_root=self.document_root
        )

    def push(self, export_dir: str | os.PathLike[str], turn: int) -> PushResult:
        """A turn's export into its project (:func:`push_export`)."""
        return push_export(self.connect(), export_dir, self.project_name(turn))

    def pull(self, export_dir: str | os.PathLike[str], turn: int, labels: str | os.PathLike[str]) -> Pulled:
        """The annotations of a turn's exported tasks; written to ``labels`` (a Label Studio JSON export) only
        when every task is labelled or skipped (:attr:`Pulled.finished`), so the turn waits until then."""
        pulled = pull_labels(self.connect(), self.project_name(turn), export_items(export_dir))
        if pulled.finished:
            Path(labels).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(labels, pulled.to_json_text())
        return pulled

    @classmethod
    def from_table(cls, table: Mapping[str, Any], base: Path) -> LabelStudioSettings:
        """From the parsed section; paths relative to ``base`` (the config's folder). :class:`InvalidInputError`
        names the key that is missing or wrong."""
        missing = [k for k in ("url", "project", "document_root") if not table.get(k)]
        if missing:
            raise InvalidInputError(
                f"[label_studio] needs {', '.join(missing)} (url of the server, the project's name, and the "
                "document root the server serves local files from)"
            )
        for key in cls.KEYS:
            if key in table and not isinstance(table[key], str):
                raise InvalidInputError(f"[label_studio] {key} must be a string, got {table[key]!r}")
        if "api_key_file" in table and "api_key_env" in table:
            raise InvalidInputError("[label_studio] give api_key_file or api_key_env, not both")

        def path(value: str) -> Path:
            q = Path(os.path.expanduser(value))
            return Path(os.path.abspath(q if q.is_absolute() else base / q))

        project = table["project"].strip()
        if len(project.replace("{turn}", "0000")) < 3:
            raise InvalidInputError(
                f"[label_studio] project must have at least 3 characters, got {project!r}"
            )
        return cls(
            url=check_url(table["url"], "[label_studio] url"),
            project=project,
            document_root=path(table["document_root"]),
            api_key_file=path(table["api_key_file"]) if table.get("api_key_file") else None,
            api_key_env=table.get("api_key_env") or API_KEY_ENV,
        )
